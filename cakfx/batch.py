"""The batch engine: folders in, a mirrored folder of processed audio out.

Guarantees (DESIGN §9): inputs are never written; outputs are written
atomically; existing outputs are skipped unless ``overwrite`` (so a rerun
resumes); one bad file is reported by path and reason and the rest carry on.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
from tqdm import tqdm

from cakfx.audio import FORMATS, AudioInfo, is_audio_path, read_audio, walk_files, write_audio
from cakfx.errors import CakfxError


@dataclass
class FileResult:
    input: str
    output: str | None
    status: str  # ok | exists | failed | not-audio | planned
    reason: str = ""
    duration: float | None = None  # audio seconds
    seconds: float = 0.0  # processing time
    sample_rate: int | None = None
    channels: int | None = None
    format: str | None = None
    subtype: str | None = None
    worker: str | None = None  # which Ray worker processed it (--executor ray)


@dataclass
class BatchReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def to_dict(self, **extra: Any) -> dict:
        counts = {s: self.count(s) for s in ("ok", "exists", "failed", "not-audio", "planned")}
        return {
            **extra,
            "seconds": round(self.seconds, 3),
            "counts": counts,
            "files": [asdict(f) for f in self.files],
        }


def output_format(info: AudioInfo, out_format: str) -> tuple[str, str, str | None]:
    """(soundfile format, subtype, new extension or None) for ``--format``."""
    if out_format == "same":
        return info.format, info.subtype, None
    ext, fmt, default_subtype = FORMATS[out_format]
    subtype = info.subtype if sf.check_format(fmt, info.subtype) else default_subtype
    return fmt, subtype, ext


def process_file(in_path, out_path, chain, out_format: str = "same") -> FileResult:
    """Read, process and write one file, keeping rate, channels, length and format."""
    in_path, out_path = Path(in_path), Path(out_path)
    start = time.perf_counter()
    if out_path.exists() and out_path.resolve() == in_path.resolve():
        raise CakfxError(f"{in_path}: output would overwrite the input")
    audio, info = read_audio(in_path)
    fmt, subtype, _ = output_format(info, out_format)
    try:
        out = chain(audio, info.sample_rate)
    except CakfxError:
        raise
    except Exception as exc:  # an effect failing on one file must not end the batch
        raise CakfxError(f"{in_path}: processing failed ({type(exc).__name__}: {exc})") from exc
    write_audio(out_path, out, info.sample_rate, format=fmt, subtype=subtype)
    return FileResult(
        str(in_path),
        str(out_path),
        "ok",
        "",
        round(info.duration, 6),
        round(time.perf_counter() - start, 4),
        info.sample_rate,
        info.channels,
        fmt,
        subtype,
    )


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def plan(inputs, out_dir, out_format: str = "same") -> list[tuple[Path, Path | None]]:
    """(input, output) pairs; output is None for files that are not audio."""
    out_dir = Path(out_dir).resolve()
    pairs: list[tuple[Path, Path | None]] = []
    for raw in inputs:
        src = Path(raw).expanduser()
        if not src.exists():
            raise CakfxError(f"input not found: {src}")
        src = src.resolve()
        if src.is_dir():
            if _inside(out_dir, src):
                raise CakfxError(f"output folder {out_dir} is inside the input folder {src}; choose another")
            files = walk_files(src)
            base = src
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
        raise CakfxError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK | os.X_OK):
        raise CakfxError(f"output folder {out_dir} is not writable")
    return out_dir


def run_batch(
    inputs,
    out_dir,
    chain_factory: Callable[[], Any],
    out_format: str = "same",
    overwrite: bool = False,
    dry_run: bool = False,
    jobs: int = 1,
    progress: bool = True,
    on_result: Callable[[FileResult], None] | None = None,
    executor: Any = None,
) -> BatchReport:
    """Process every audio file under ``inputs`` into ``out_dir``.

    ``chain_factory()`` builds a chain; with ``jobs > 1`` each worker thread
    builds its own (effects keep state such as reverb tails). An ``executor``
    (:mod:`cakfx.executors`) processes the planned files instead; ``chain_factory`` is unused.
    """
    if out_format != "same" and out_format not in FORMATS:
        raise CakfxError(f"unknown format {out_format!r} (choose same, {', '.join(FORMATS)})")
    start = time.perf_counter()
    pairs = plan(inputs, out_dir, out_format)
    if not dry_run:
        check_output_dir(out_dir)
    report = BatchReport()
    todo: list[tuple[Path, Path]] = []
    input_set = {p for p, _ in pairs}
    claimed: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst is None:
            report.files.append(FileResult(str(src), None, "not-audio", "not an audio file extension"))
        elif dst in input_set:
            report.files.append(FileResult(str(src), str(dst), "failed", "output would overwrite an input"))
        elif dst in claimed:  # e.g. pad.wav and pad.aiff both converted with --format flac
            reason = f"output name collides with the output of {claimed[dst]}"
            report.files.append(FileResult(str(src), str(dst), "failed", reason))
        elif dst.exists() and not overwrite:
            report.files.append(FileResult(str(src), str(dst), "exists", "output exists (use --overwrite)"))
        elif dry_run:
            report.files.append(FileResult(str(src), str(dst), "planned"))
        else:
            todo.append((src, dst))
        if dst is not None:
            claimed.setdefault(dst, src)
    for result in report.files:
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
            return process_file(src, dst, local.chain, out_format)
        except CakfxError as exc:
            reason = str(exc).removeprefix(f"{src}: ")
        except MemoryError:
            reason = "out of memory"
        return FileResult(str(src), str(dst), "failed", reason, seconds=round(time.perf_counter() - t0, 4))

    bar = tqdm(total=len(todo), unit="file", disable=not progress, desc="processing", dynamic_ncols=True)
    try:
        if executor is not None:  # e.g. Ray actors; planning and the report stay here
            executor.run(todo, out_format, lambda result: _record(report, result, bar, on_result))
        elif jobs <= 1:
            results = (work(p) for p in todo)
            for result in results:
                _record(report, result, bar, on_result)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for result in pool.map(work, todo):
                    _record(report, result, bar, on_result)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _record(report: BatchReport, result: FileResult, bar, on_result) -> None:
    report.files.append(result)
    bar.update(1)
    if result.status == "failed":
        bar.set_postfix(failed=report.failed)
    if on_result:
        on_result(result)
