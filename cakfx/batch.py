"""The batch engine: folders in, a mirrored folder of processed audio out.

Guarantees (DESIGN §9): inputs are never written; outputs are written
atomically; existing outputs are skipped unless ``overwrite`` (so a rerun
resumes); one bad file, whatever went wrong (undecodable, an OS error such as
a name too long or a full disk, an effect raising, NaN in the output), is
reported by path and reason and the rest carry on. Every file is read in
blocks, rendered by ``cakfx.streaming.render_stream`` and written in blocks;
files longer than ``HOLD_SAMPLES`` stream, so memory does not grow with the
file's length.

The three steps are separate functions so another executor can reuse them:
``plan`` (what to do), ``process_file`` (one file) and ``BatchReport`` (what
happened).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf

from cakfx.audio import (
    FLOAT_SUBTYPES,
    FORMATS,
    TMP_SUFFIX,
    AudioInfo,
    BlockReader,
    BlockWriter,
    display_path,
    is_audio_path,
    scan_folder,
)
from cakfx.errors import CakfxError, describe_exception
from cakfx.paths import atomic_write_bytes

#: formats whose header frame count is exact (MP3/OGG headers are estimates)
EXACT_HEADER_FORMATS = {"WAV", "AIFF", "FLAC", "W64", "RF64", "CAF", "AU"}
#: files of at most this many samples (all channels; 2**21 is 23.8 s of 44.1 kHz stereo, 8 MiB
#: as float32) are rendered by one offline call: every model runs once instead of once more per
#: measuring pass, and no stage pays per-block costs. Longer files stream in bounded memory.
HOLD_SAMPLES = 2**21
#: files of at most this many samples (all channels; 1.5 s of 44.1 kHz stereo) run torch ops on one
#: thread: their tensors are too small to split, and with a core busy every op's OpenMP barrier
#: waits for a descheduled thread
SERIAL_SAMPLES = 2**17
#: statuses that do not make the run fail
BENIGN = {"ok", "exists", "not-audio", "planned"}


@dataclass
class FileResult:
    """What happened to one input. Paths are printable text (``display_path``)."""

    input: str
    output: str | None
    status: str  # ok | exists | failed | skipped | not-audio | planned
    reason: str = ""
    duration: float | None = None  # audio seconds
    seconds: float = 0.0  # processing time
    sample_rate: int | None = None
    channels: int | None = None
    format: str | None = None
    subtype: str | None = None
    peak_dbfs: float | None = None  # sample peak of the output, before any clipping
    true_peak_dbfs: float | None = None
    clipped_samples: int | None = None  # samples clipped at full scale in an integer/lossy output
    warnings: list[str] = field(default_factory=list)
    worker: str | None = None  # which Ray worker processed it (--executor ray)


@dataclass
class BatchReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    stale_removed: int = 0  # temporary files of killed runs cleaned from the output folder
    jobs: int = 1  # files processed at once

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def clipped(self) -> list[FileResult]:
        return [f for f in self.files if f.clipped_samples]

    @property
    def ok(self) -> bool:
        """True when nothing failed and nothing was skipped for a reason other than
        "not audio" (the exit status of ``cakfx process``)."""
        return all(f.status in BENIGN for f in self.files)

    def to_dict(self, **extra: Any) -> dict:
        statuses = ("ok", "exists", "failed", "skipped", "not-audio", "planned")
        counts = {s: self.count(s) for s in statuses}
        counts["clipped"] = len(self.clipped)
        counts["warnings"] = sum(1 for f in self.files if f.warnings)
        return {
            **extra,
            "seconds": round(self.seconds, 3),
            "counts": counts,
            "stale_temp_files_removed": self.stale_removed,
            "files": [asdict(f) for f in self.files],
        }

    def summary(self) -> str:
        """One line for the console."""
        n = self.count
        parts = [
            f"{n('ok')} processed",
            f"{n('exists')} already done" if n("exists") else "",
            f"{n('not-audio')} not audio (skipped)" if n("not-audio") else "",
            f"{n('skipped')} skipped (unreadable or not a regular file)" if n("skipped") else "",
            f"{self.failed} failed" if self.failed else "",
            f"{n('planned')} planned" if n("planned") else "",
        ]
        line = ", ".join(p for p in parts if p) + f" in {self.seconds:.1f}s"
        peaks = [f.peak_dbfs for f in self.files if f.peak_dbfs is not None]
        true_peaks = [f.true_peak_dbfs for f in self.files if f.true_peak_dbfs is not None]
        if peaks:
            line += f"; outputs peak {max(peaks):+.1f} dBFS, true peak {max(true_peaks):+.1f} dBTP"
            clipped = sum(f.clipped_samples or 0 for f in self.clipped)
            n_files = len(self.clipped)
            line += f", {clipped} samples clipped in {n_files} file(s)" if clipped else ", none clipped"
        return line


def output_format(info: AudioInfo, out_format: str) -> tuple[str, str, str | None]:
    """(soundfile format, subtype, new extension or None) for ``--format``."""
    if out_format == "same":
        return info.format, info.subtype, None
    ext, fmt, default_subtype = FORMATS[out_format]
    subtype = info.subtype if sf.check_format(fmt, info.subtype) else default_subtype
    return fmt, subtype, ext


def process_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    chain: Any,
    out_format: str = "same",
    buffer_size: int = 8192,
) -> FileResult:
    """Stream one file through ``chain`` into ``out_path``, keeping its rate, channels,
    length, container and sample format (or converting the container with
    ``out_format``).

    The output is written atomically; a chain that produces NaN or infinite samples
    fails the file and nothing is written. Integer and lossy outputs that clip are
    reported in the result (``clipped_samples``, ``peak_dbfs``, ``warnings``).
    Raises ``CakfxError`` naming the file.

    >>> import numpy as np, pedalboard, tempfile, os
    >>> from cakfx.audio import write_audio
    >>> folder = tempfile.mkdtemp()
    >>> write_audio(os.path.join(folder, "in.wav"), np.zeros((1, 4410), np.float32), 44100, subtype="PCM_16")
    >>> result = process_file(os.path.join(folder, "in.wav"), os.path.join(folder, "out.wav"),
    ...                       pedalboard.Gain(gain_db=-6))
    >>> result.status, result.subtype, result.duration
    ('ok', 'PCM_16', 0.1)
    """
    in_path, out_path = Path(in_path), Path(out_path)
    where = display_path(in_path)
    start = time.perf_counter()
    try:  # the same file by device and inode (a link to the input too): two stats, no path resolving
        same = out_path.exists() and os.path.samefile(out_path, in_path)
    except OSError:  # the input is missing or unreadable: the reader says so below
        same = False
    if same:
        raise CakfxError(f"{where}: output would overwrite the input")
    reader = BlockReader(in_path)
    try:
        info = reader.info
        if info.frames == 0 and info.format not in ("MP3", "MPEG", "OGG"):
            raise CakfxError(f"{where}: no audio frames")
        warnings = []
        declared = reader.declared_frames()
        if declared is not None and declared != info.frames:
            warnings.append(f"truncated: the header says {declared} frames, the file holds {info.frames}")
        fmt, subtype, _ = output_format(info, out_format)
        writer = BlockWriter(out_path, info.sample_rate, info.channels, fmt, subtype)
    except BaseException:
        reader.close()
        raise
    try:
        _render(chain, reader, info.sample_rate, writer, buffer_size)
        if reader.frames == 0:
            raise CakfxError(f"{where}: no audio frames")
        if writer.frames != reader.frames:
            raise CakfxError(
                f"{where}: the chain returned {writer.frames} samples for {reader.frames} (nothing written)"
            )
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    finally:
        reader.close()  # where no pass read the file
    if fmt in EXACT_HEADER_FORMATS and declared is None and info.frames and reader.frames != info.frames:
        warnings.append(f"decoded {reader.frames} frames, the header says {info.frames}")
    meter = writer.meter
    peak, true_peak = _db_or_none(meter.sample_peak_db), _db_or_none(meter.true_peak_db)
    clipped = meter.clipped if subtype not in FLOAT_SUBTYPES else 0
    if clipped:
        warnings.append(f"clipped: {clipped} samples, peak {peak:+.1f} dBFS")
    return FileResult(
        display_path(in_path),
        display_path(out_path),
        "ok",
        "",
        round(reader.frames / info.sample_rate, 6),
        round(time.perf_counter() - start, 4),
        info.sample_rate,
        info.channels,
        fmt,
        subtype,
        peak,
        true_peak,
        clipped,
        warnings,
    )


def _db_or_none(db: float) -> float | None:
    """dB rounded for the report; None for digital silence (-inf is not JSON)."""
    return round(float(db), 2) if np.isfinite(db) else None


def _render(chain, reader: BlockReader, sample_rate: int, writer: BlockWriter, buffer_size: int) -> None:
    from cakfx.streaming import render_stream

    try:
        samples = reader.info.frames * reader.info.channels
        hold = HOLD_SAMPLES if samples <= HOLD_SAMPLES else 0
        with _torch_on_one_thread() if samples <= SERIAL_SAMPLES else contextlib.nullcontext():
            render_stream(chain, reader, sample_rate, writer.write, buffer_size=buffer_size, hold=hold)
    except CakfxError:
        raise
    except Exception as exc:  # an effect failing on one file must not end the batch
        where = display_path(reader.path)
        raise CakfxError(f"{where}: processing failed ({describe_exception(exc)})") from exc


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def plan(
    inputs,
    out_dir,
    out_format: str = "same",
    problems: list[tuple[Path, str]] | None = None,
) -> list[tuple[Path, Path | None]]:
    """(input, output) pairs; output is None for files that are not audio.

    What cannot be taken (unreadable folders, special files, broken links) is appended
    to ``problems`` as ``(path, reason)`` when a list is given.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    pairs: list[tuple[Path, Path | None]] = []
    for raw in inputs:
        src = Path(raw).expanduser()
        if not src.exists():
            if src.is_symlink():
                raise CakfxError(f"input is a broken symbolic link: {display_path(src)}")
            raise CakfxError(f"input not found: {display_path(src)}")
        src = src.resolve()
        if src.is_dir():
            if _inside(out_dir, src):
                raise CakfxError(
                    f"output folder {display_path(out_dir)} is inside the input folder "
                    f"{display_path(src)}; choose another"
                )
            files, found_problems = scan_folder(src)
            if problems is not None:
                problems.extend(found_problems)
            base = src
        elif not src.is_file():  # a FIFO or device named on the command line would block the read
            if problems is not None:
                problems.append((src, "not a regular file"))
            continue
        else:
            files, base = [src], src.parent
        for f in files:
            if not is_audio_path(f):
                pairs.append((f, None))
                continue
            rel = f.relative_to(base)
            if src.is_dir():
                rel = Path(src.name) / rel if len(inputs) > 1 else rel
            target = out_dir / rel
            if out_format != "same":
                target = target.with_suffix(FORMATS[out_format][0])
            pairs.append((f, target))
    return pairs


def check_output_dir(out_dir) -> Path:
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CakfxError(
            f"cannot create output folder {display_path(out_dir)}: {describe_exception(exc)}"
        ) from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK | os.X_OK):
        raise CakfxError(f"output folder {display_path(out_dir)} is not writable")
    return out_dir


def check_report_path(path) -> Path:
    """Refuse a ``--report`` path that cannot be written, before any file is processed."""
    path = Path(path).expanduser()
    where = display_path(path)
    if path.is_dir():
        raise CakfxError(f"--report {where} is a folder; give a file name such as report.json")
    parent = path.parent
    probe = parent
    while not probe.exists():  # the nearest existing folder must let us create the rest
        probe = probe.parent
    if not probe.is_dir():
        raise CakfxError(f"--report {where}: {display_path(probe)} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CakfxError(f"--report {where}: not writable")
    if len(os.fsencode(path.name)) > 255:
        raise CakfxError(f"--report {where}: file name too long")
    return path


def write_report(path, report: BatchReport, **extra: Any) -> Path:
    """Write the JSON report atomically (plain ASCII JSON, so odd file names survive)."""
    path = Path(path).expanduser()
    data = json.dumps(report.to_dict(**extra), indent=2, default=str)
    try:
        return atomic_write_bytes(path, data.encode("ascii"))
    except OSError as exc:
        raise CakfxError(f"cannot write report {display_path(path)}: {describe_exception(exc)}") from None


@contextlib.contextmanager
def output_lock(out_dir: Path):
    """Hold an advisory lock (``flock``) on the folder ``out_dir`` itself while a run
    writes into it, so two runs cannot mix their outputs; nothing is left behind."""
    import fcntl

    try:
        fd = os.open(out_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise CakfxError(
            f"cannot lock output folder {display_path(out_dir)}: {describe_exception(exc)}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise CakfxError(
                    f"output folder {display_path(out_dir)} is in use by another cakfx process; "
                    "wait for it to finish or choose another folder"
                ) from None
            raise
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temp_files(out_dir: Path) -> int:
    """Delete ``*.cakfx-tmp`` files left by killed runs (only call while holding the lock)."""
    removed = 0
    for root, _dirs, names in os.walk(out_dir):
        for name in names:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    return removed


def run_batch(
    inputs,
    out_dir,
    chain_factory: Callable[[], Any],
    out_format: str = "same",
    overwrite: bool = False,
    dry_run: bool = False,
    jobs: int | None = 1,
    progress: bool = True,
    on_result: Callable[[FileResult], None] | None = None,
    buffer_size: int = 8192,
    executor: Any = None,
) -> BatchReport:
    """Process every audio file under ``inputs`` into ``out_dir``.

    ``chain_factory()`` builds a chain; with ``jobs > 1`` each worker thread
    builds its own (effects keep state such as reverb tails) and runs its files
    single-threaded, the largest files first. ``jobs=None``: ``default_jobs`` (one file per
    core). The batch always finishes: every failure is a ``failed`` entry with its reason. An ``executor``
    (:mod:`cakfx.executors`) processes the planned files instead; ``chain_factory`` is unused.
    """
    if out_format != "same" and out_format not in FORMATS:
        raise CakfxError(f"unknown format {out_format!r} (choose same, {', '.join(FORMATS)})")
    start = time.perf_counter()
    problems: list[tuple[Path, str]] = []
    pairs = plan(inputs, out_dir, out_format, problems)
    report = BatchReport()

    def run(dry: bool) -> BatchReport:
        return _run(pairs, problems, report, chain_factory, out_format, overwrite, dry, jobs, progress,
                    on_result, buffer_size, start, executor)

    if dry_run:
        return run(True)
    out_dir = check_output_dir(out_dir)
    with output_lock(out_dir):
        report.stale_removed = remove_stale_temp_files(out_dir)
        return run(False)


def _run(
    pairs,
    problems,
    report,
    chain_factory,
    out_format,
    overwrite,
    dry_run,
    jobs,
    progress,
    on_result,
    buffer_size,
    start,
    executor=None,
) -> BatchReport:
    from tqdm import tqdm

    todo: list[tuple[Path, Path]] = []
    input_set = {p for p, _ in pairs}
    claimed: dict[Path, Path] = {}
    early: list[FileResult] = [
        FileResult(display_path(path), None, "skipped", reason) for path, reason in problems
    ]
    for src, dst in pairs:
        shown, out = display_path(src), display_path(dst) if dst is not None else None
        if dst is None:
            early.append(FileResult(shown, None, "not-audio", "not an audio file extension"))
        elif dst in input_set:
            early.append(FileResult(shown, out, "failed", "output would overwrite an input"))
        elif dst in claimed:  # e.g. pad.wav and pad.aiff both converted with --format flac
            reason = f"output name collides with the output of {display_path(claimed[dst])}"
            early.append(FileResult(shown, out, "failed", reason))
        elif _exists(dst) and not overwrite:
            early.append(FileResult(shown, out, "exists", "output exists (use --overwrite)"))
        elif dry_run:
            early.append(FileResult(shown, out, "planned"))
        else:
            todo.append((src, dst))
        if dst is not None:
            claimed.setdefault(dst, src)
    for result in early:
        report.files.append(result)
        if on_result:
            on_result(result)
    if not todo:
        report.seconds = time.perf_counter() - start
        return report

    local = threading.local()

    def work(pair: tuple[Path, Path]) -> FileResult:
        src, dst = pair
        t0 = time.perf_counter()
        try:
            if not hasattr(local, "chain"):
                local.chain = chain_factory()
            return process_file(src, dst, local.chain, out_format, buffer_size)
        except Exception as exc:  # every cause becomes this file's failure; the batch goes on
            reason = describe_exception(exc).removeprefix(f"{display_path(src)}: ")
        return FileResult(
            display_path(src), display_path(dst), "failed", reason, seconds=round(time.perf_counter() - t0, 4)
        )

    jobs = report.jobs = default_jobs(len(todo)) if jobs is None else max(1, min(int(jobs), len(todo)))
    bar = tqdm(total=len(todo), unit="file", disable=not progress, desc="processing", dynamic_ncols=True)
    try:
        if executor is not None:  # e.g. Ray actors; planning and the report stay here
            executor.run(todo, out_format, lambda result: _record(report, result, bar, on_result))
        elif jobs <= 1:
            for pair in todo:
                _record(report, work(pair), bar, on_result)
        else:
            with _torch_on_one_thread(files_in_parallel=True), ThreadPoolExecutor(max_workers=jobs) as pool:
                # the largest files start first, so that none is left to run alone at the end while
                # the other cores idle; results are recorded in the planned order all the same
                futures = {i: pool.submit(work, todo[i]) for i in _largest_first(todo)}
                try:
                    for i in range(len(todo)):
                        _record(report, futures[i].result(), bar, on_result)
                finally:  # Ctrl-C: the files not started yet are dropped (as pool.map did)
                    for future in futures.values():
                        future.cancel()
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
    return report


def _largest_first(todo: list[tuple[Path, Path]]) -> list[int]:
    """Indices of ``todo`` by input size, largest first (unreadable sizes last, in order)."""

    def size(i: int) -> int:
        try:
            return todo[i][0].stat().st_size
        except OSError:
            return -1

    return sorted(range(len(todo)), key=lambda i: -size(i))


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_jobs(files: int) -> int:
    """Files in parallel when ``--jobs`` is not given: one per core, at most one per file.

    Measured (``bench/batch.py``, 2 cores): two files at once with one thread each beat one file
    at a time with two block threads, on long files and on one-shots.
    """
    return max(1, min(available_cores(), files))


def _torch_on_one_thread(files_in_parallel: bool = False):
    """torch ops on one thread (``cakfx.dsp.threads.serial_torch_ops``); with ``files_in_parallel``
    each file's block jobs run on its own thread too (``one_thread_per_file``). Without torch loaded
    there is nothing to set."""
    if "torch" not in sys.modules:
        return contextlib.nullcontext()
    from cakfx.dsp.threads import one_thread_per_file, serial_torch_ops

    return one_thread_per_file() if files_in_parallel else serial_torch_ops()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long: let processing report it
        return False


def _record(report: BatchReport, result: FileResult, bar, on_result) -> None:
    report.files.append(result)
    bar.update(1)
    if result.status == "failed":
        bar.set_postfix(failed=report.failed)
    if on_result:
        on_result(result)
