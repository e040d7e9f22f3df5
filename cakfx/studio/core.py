"""The studio's state, without any web framework: files, processing jobs, presets, a batch.

Everything the API hands out is an *id*, never a path: the studio serves and
writes only the files it was given on the command line, listed in a batch
report, uploaded, or produced itself (in its private temporary folder, removed
by ``close()``). Files are immutable once registered and every processing job
builds its own chain, so two browser tabs cannot disturb each other; the
tables are guarded by one lock.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from cakfx.audio import AUDIO_EXTENSIONS, FORMATS, AudioInfo, read_audio, read_info, write_audio
from cakfx.errors import CakfxError

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PRESET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: columns of the waveform overview and of the spectrogram pictures
WAVE_COLUMNS = 1200
SPEC_COLUMNS = 800
SPEC_BINS = 160
SPEC_DB_RANGE = (-100.0, 0.0)  # one fixed dB scale, so before and after compare
#: results kept on disk; every control change makes one, so the oldest are dropped
MAX_RESULTS = 64


def new_id() -> str:
    return secrets.token_urlsafe(12)


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise NotFound(f"no such {what}")
    return value


class NotFound(CakfxError):
    """An id the studio does not know (HTTP 404)."""


class Conflict(CakfxError):
    """The request would replace something (HTTP 409)."""


class TooLarge(CakfxError):
    """An upload over the limit (HTTP 413)."""


@dataclass
class StudioFile:
    """One file the studio may read: given, uploaded, listed in a batch, or a result."""

    id: str
    name: str  # for display and as the download name; never used as a path
    path: Path
    origin: str  # given | upload | batch-input | batch-output | result
    info: AudioInfo
    source: str | None = None  # results: the id of the processed file
    chain: list[dict] | None = None  # results: the chain that made it
    preset: str | None = None
    seconds: float | None = None  # results: processing time
    _analysis: dict | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = {
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "sample_rate": self.info.sample_rate,
            "channels": self.info.channels,
            "frames": self.info.frames,
            "duration": round(self.info.duration, 6),
            "format": self.info.format,
            "subtype": self.info.subtype,
        }
        if self.origin == "result":
            out.update(source=self.source, chain=self.chain, preset=self.preset, seconds=self.seconds)
        return out


@dataclass
class Job:
    """A processing run: queued -> running -> done | failed | cancelled."""

    id: str
    file: str
    stages: int
    state: str = "queued"
    progress: float = 0.0
    stage: str = "queued"
    error: str = ""
    result: str | None = None
    seconds: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "file": self.file,
            "state": self.state,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "error": self.error,
            "result": self.result,
            "seconds": self.seconds,
        }


def display_name(raw: str) -> str:
    """The last component of an uploaded name, without control characters."""
    name = PureWindowsPath(PurePosixPath(str(raw)).name).name
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*\\/')
    return name.strip(" .")[:200]


class Studio:
    """The studio's files, jobs and batch, in a private temporary folder.

    ``files`` are paths given on the command line; ``report`` a JSON report
    written by ``cakfx process --report``. ``close()`` removes the temporary
    folder (the server calls it on shutdown).
    """

    def __init__(
        self,
        files=(),
        report: str | os.PathLike | None = None,
        max_upload: int = 1 << 30,
        device: Any = None,
        token: str | None = None,
        workers: int = 2,
    ) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.max_upload = int(max_upload)
        self.device = device
        self.workdir = Path(tempfile.mkdtemp(prefix="cakfx-studio-"))
        self._lock = threading.Lock()
        self._files: dict[str, StudioFile] = {}
        self._jobs: dict[str, Job] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cakfx-studio")
        self.batch: dict | None = None
        try:
            for f in files:
                self.add_file(f, "given")
            if report is not None:
                self.batch = self._load_report(Path(report))
        except BaseException:
            self.close()
            raise

    # ---- files ---------------------------------------------------------------------

    def add_file(self, path, origin: str, name: str | None = None, **extra) -> StudioFile:
        path = Path(path)
        if not path.is_file():
            raise CakfxError(f"{path}: no such file")
        info = read_info(path)
        if info.frames == 0:
            raise CakfxError(f"{path}: no audio frames")
        item = StudioFile(new_id(), name or path.name, path, origin, info, **extra)
        with self._lock:
            self._files[item.id] = item
            results = [f for f in self._files.values() if f.origin == "result"]
            dropped = results[: max(0, len(results) - MAX_RESULTS)]
            for old in dropped:
                del self._files[old.id]
        for old in dropped:  # results live in the studio's own folder only
            old.path.unlink(missing_ok=True)
            for path in self.workdir.glob(f"{old.id}.*"):
                path.unlink(missing_ok=True)
        return item

    def file(self, file_id: str) -> StudioFile:
        check_id(file_id, "file")
        with self._lock:
            item = self._files.get(file_id)
        if item is None:
            raise NotFound(f"no such file {file_id!r}")
        return item

    def list_files(self) -> list[dict]:
        with self._lock:
            return [f.to_dict() for f in self._files.values() if f.origin in ("given", "upload")]

    def upload(self, name: str, chunks, length: int | None = None) -> StudioFile:
        """Store an upload (an iterable of byte chunks) and register it."""
        clean = display_name(name)
        ext = Path(clean).suffix.lower()
        if not clean or ext not in AUDIO_EXTENSIONS:
            kinds = ", ".join(sorted(e.lstrip(".") for e in AUDIO_EXTENSIONS))
            raise CakfxError(f"upload {clean or name!r}: not an audio file name (expected one of: {kinds})")
        self.check_upload_size(length)
        target = self.workdir / f"{new_id()}.upload{ext}"
        size = 0
        try:
            with open(target, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    self.check_upload_size(size)
                    out.write(chunk)
            return self.add_file(target, "upload", name=clean)
        except BaseException as exc:
            target.unlink(missing_ok=True)
            if isinstance(exc, CakfxError) and str(target) in str(exc):
                raise type(exc)(str(exc).replace(str(target), f"upload {clean!r}")) from None
            raise

    def check_upload_size(self, size: int | None) -> None:
        if size is not None and size > self.max_upload:
            raise TooLarge(
                f"upload too large: {size / 2**20:.1f} MB is over the studio's limit of "
                f"{self.max_upload / 2**20:.0f} MB (start it with --max-upload-mb N, or give the file "
                "on the command line: cakfx studio FILE)"
            )

    def playable(self, file_id: str) -> Path:
        """A float WAV of the file, which every browser decodes (AIFF/FLAC may not be)."""
        item = self.file(file_id)
        if item.origin == "result":
            return item.path
        target = self.workdir / f"{item.id}.play.wav"
        if not target.exists():
            audio, info = read_audio(item.path)
            write_audio(target, audio, info.sample_rate, format="WAV", subtype="FLOAT")
        return target

    def export(self, file_id: str, out_format: str = "same") -> tuple[Path, str]:
        """A result written like its source (rate, channels, container, sample format)
        or as ``out_format``; returns (path, download name)."""
        from cakfx.batch import output_format

        item = self.file(file_id)
        if out_format != "same" and out_format not in FORMATS:
            raise CakfxError(f"format {out_format!r}: expected same, {', '.join(FORMATS)}")
        source = self.file(item.source) if item.source else item
        fmt, subtype, ext = output_format(source.info, out_format)
        stem = Path(source.name).stem or "audio"
        ext = ext or Path(source.name).suffix.lower() or ".wav"
        suffix = f"-{item.preset}" if item.preset else ("-studio" if item.origin == "result" else "")
        target = self.workdir / f"{item.id}.export-{out_format}{ext}"
        if not target.exists():
            audio, _ = read_audio(item.path)
            write_audio(target, audio, item.info.sample_rate, format=fmt, subtype=subtype)
        return target, f"{stem}{suffix}{ext}"

    def analysis(self, file_id: str) -> dict:
        item = self.file(file_id)
        if item._analysis is None:
            audio, info = read_audio(item.path)
            item._analysis = analyse(audio, info.sample_rate)
        return item._analysis

    # ---- presets and chains --------------------------------------------------------

    def preset_chain(self, name: str) -> dict:
        from cakfx.presets import read_preset

        preset = read_preset(_preset_name(name))
        return {
            "name": preset.name,
            "description": preset.description,
            "source": preset.source,
            "chain": [
                {"effect": e.effect, "id": e.id, "params": dict(e.params)}
                | ({"sha256": e.sha256} if e.sha256 else {})
                for e in preset.entries
            ],
        }

    def make_preset(self, chain: Any, base: str | None = None, name: str = "studio"):
        """A ``Preset`` for ``chain`` (a list of ``{effect, id?, params}``), fully checked.

        Parameters naming files on disk (``path``, and ``weights`` given as a path)
        must keep the value of the base preset they came from: a request never
        chooses what the server reads.
        """
        from cakfx.presets import Preset, parse_preset, read_preset, resolved_entries
        from cakfx.registry import get_effect
        from cakfx.weights import is_path_like

        if not isinstance(chain, list) or not chain:
            raise CakfxError("the chain is empty: add an effect or choose a preset")
        base_preset: Preset | None = read_preset(_preset_name(base)) if base else None
        allowed = set()
        if base_preset is not None:
            for e in base_preset.entries:
                allowed.update((e.effect, k, json.dumps(v, sort_keys=True)) for k, v in e.params.items())
        tables = []
        for i, raw in enumerate(chain, start=1):
            if not isinstance(raw, dict) or not isinstance(raw.get("params", {}), dict):
                raise CakfxError(f"chain entry {i}: expected {{effect, id, params}}")
            table = {"effect": raw.get("effect")}
            if raw.get("id"):
                table["id"] = raw["id"]
            if raw.get("sha256"):
                table["sha256"] = raw["sha256"]
            table.update(raw.get("params") or {})
            tables.append(table)
        path = base_preset.path if base_preset else Path(f"{name}.toml")
        preset = parse_preset({"preset": {"name": name}, "chain": tables}, path, "studio")
        for entry in preset.entries:
            try:
                spec = get_effect(entry.effect)
            except CakfxError as exc:
                raise CakfxError(f"{entry.label()}: {exc}") from None
            for key, value in entry.params.items():
                param = spec.param_map.get(key)
                if param is None:
                    continue  # check_params names it
                on_disk = param.type == "path" or (
                    param.type == "weights" and isinstance(value, str) and is_path_like(value)
                )
                if on_disk and (entry.effect, key, json.dumps(value, sort_keys=True)) not in allowed:
                    raise CakfxError(
                        f"{entry.label()}: {key}: the studio only uses files named by an installed preset; "
                        "choose installed weights or save the preset file yourself"
                    )
        try:
            resolved_entries(preset)
        except CakfxError as exc:
            # the placeholder path means nothing to the user; keep the chain entry and key
            raise CakfxError(str(exc).replace(f"{path}: ", "", 1)) from None
        return preset

    def save_preset(
        self, name: str, chain: Any, description: str = "", base: str | None = None, overwrite: bool = False
    ) -> Path:
        """Write the chain as a user preset ``NAME`` (usable as ``cakfx process -p NAME``)."""
        from cakfx.paths import user_presets_dir
        from cakfx.presets import save_preset, validate_preset

        if not isinstance(name, str) or not PRESET_NAME_RE.match(name):
            raise CakfxError(
                f"preset name {name!r}: use letters, digits, '-' and '_' (up to 64, e.g. my-drums)"
            )
        preset = self.make_preset(chain, base, name)
        folder = user_presets_dir()
        target = folder / f"{name}.toml"
        if target.exists() and not overwrite:
            raise Conflict(f"preset {name!r} already exists in {folder}; save with overwrite to replace it")
        entries = []
        for e in preset.entries:
            table: dict[str, Any] = {}
            if e.id:
                table["id"] = e.id
            table["effect"] = e.effect
            if e.sha256:
                table["sha256"] = e.sha256
            table.update(e.params)
            entries.append(table)
        if base:
            _anchor_paths(entries, preset.path.parent)
        save_preset(
            name, entries, description=str(description or ""), author="cakfx studio", overwrite=overwrite
        )
        validate_preset(target)
        return target

    # ---- processing ----------------------------------------------------------------

    def submit(self, file_id: str, chain: Any, base: str | None = None) -> Job:
        """Check the chain now (errors are immediate); process in the background."""
        source = self.file(file_id)
        preset = self.make_preset(chain, base, base or "studio")
        job = Job(new_id(), file_id, len(preset.entries))
        with self._lock:
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, source, preset, base)
        return job

    def job(self, job_id: str) -> Job:
        check_id(job_id, "job")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no such job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.job(job_id)
        job.cancel_event.set()
        if job.state == "queued":
            job.state, job.stage = "cancelled", "cancelled"
        return job

    def wait(self, job_id: str, timeout: float = 600.0) -> Job:
        """Block until the job ends (for scripts and tests)."""
        job = self.job(job_id)
        deadline = time.monotonic() + timeout
        while job.state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.01)
        return job

    def _run(self, job: Job, source: StudioFile, preset, base: str | None) -> None:
        from cakfx.chain import Chain
        from cakfx.presets import build_chain

        if job.cancel_event.is_set():
            job.state = job.stage = "cancelled"
            return
        job.state = "running"
        start = time.perf_counter()
        try:
            job.stage = "reading"
            audio, info = read_audio(source.path)
            job.stage = "loading models"
            chain = build_chain(preset, device=self.device)
            n = len(chain.items)
            for i, (item, item_id) in enumerate(zip(chain.items, chain.ids)):
                if job.cancel_event.is_set():
                    job.state = job.stage = "cancelled"
                    return
                job.stage = f"{i + 1}/{n} {preset.entries[i].effect}"
                # one item at a time (a Chain of one), so progress and cancel work between effects
                audio = Chain([item], [item_id])(audio, info.sample_rate)
                job.progress = (i + 1) / (n + 1)
            if job.cancel_event.is_set():
                job.state = job.stage = "cancelled"
                return
            if not np.all(np.isfinite(audio)):
                raise CakfxError("the chain produced NaN or infinite samples; nothing was written")
            job.stage = "writing"
            target = self.workdir / f"{new_id()}.result.wav"
            write_audio(target, audio, info.sample_rate, format="WAV", subtype="FLOAT")
            chain_desc = [{"effect": e.effect, "id": e.id, "params": dict(e.params)} for e in preset.entries]
            seconds = round(time.perf_counter() - start, 4)
            result = self.add_file(
                target,
                "result",
                name=source.name,
                source=source.id,
                chain=chain_desc,
                preset=base,
                seconds=seconds,
            )
            result._analysis = analyse(audio, info.sample_rate)  # the page asks next; no re-read
            job.result, job.seconds = result.id, seconds
            job.progress, job.stage, job.state = 1.0, "done", "done"
        except CakfxError as exc:
            job.error, job.state, job.stage = str(exc), "failed", "failed"
        except Exception as exc:  # one line for the page, never a traceback
            job.error = f"processing failed ({type(exc).__name__}: {exc})".splitlines()[0]
            job.state = job.stage = "failed"

    # ---- a batch report --------------------------------------------------------------

    def _load_report(self, report: Path) -> dict:
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise CakfxError(f"{report}: cannot read report ({exc})") from None
        except json.JSONDecodeError as exc:
            raise CakfxError(f"{report}: not a JSON report ({exc})") from None
        rows = data.get("files") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise CakfxError(f"{report}: no 'files' list (write one with cakfx process --report FILE)")
        out = []
        for i, row in enumerate(rows, start=1):
            if not isinstance(row, dict) or not isinstance(row.get("input"), str):
                raise CakfxError(f"{report}: files[{i}]: expected an object with 'input'")
            entry = {
                "index": i,
                "name": row["input"],
                "status": str(row.get("status", "")),
                "reason": str(row.get("reason", "") or ""),
                "input": None,
                "output": None,
            }
            for key, origin in (("input", "batch-input"), ("output", "batch-output")):
                path = _report_path(row.get(key), report)
                if path is not None:
                    try:
                        entry[key] = self.add_file(path, origin).id
                    except CakfxError as exc:
                        entry["reason"] = entry["reason"] or str(exc)
            out.append(entry)
        return {
            "report": report.name,
            "preset": data.get("preset"),
            "counts": data.get("counts"),
            "files": out,
        }

    # ---- end -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers and remove every temporary file."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _preset_name(name: Any) -> str:
    """Presets are chosen by name from the bundled and user folders, never by path."""
    from cakfx.presets import list_presets

    if not isinstance(name, str) or name not in list_presets():
        raise NotFound(f"unknown preset {name!r}; see 'cakfx presets list'")
    return name


def _report_path(value: Any, report: Path) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    for candidate in (path, report.parent / path, report.parent.parent / path):
        if candidate.is_file():
            return candidate
    return None


def _anchor_paths(entries: list[dict], base_folder: Path) -> None:
    """Relative file parameters of the base preset, made absolute for the new folder."""
    for table in entries:
        for key, value in table.items():
            if isinstance(value, str) and (value.startswith(".") or "/" in value):
                p = Path(value).expanduser()
                if not p.is_absolute() and (base_folder / p).exists():
                    table[key] = str((base_folder / p).resolve())


# ---- analysis: waveform overview, log-frequency spectrogram, level --------------------


def analyse(audio: np.ndarray, sr: int) -> dict:
    """What the page draws: min/max waveform columns, a log-frequency dB spectrogram
    (uint8 on ``SPEC_DB_RANGE``, base64) and the file's level."""
    x = np.asarray(audio, dtype=np.float64)
    mono = x.mean(axis=0)
    n = mono.shape[0]
    cols = min(WAVE_COLUMNS, n)
    edges = np.linspace(0, n, cols + 1).astype(int)
    lo = np.minimum.reduceat(mono, edges[:-1])
    hi = np.maximum.reduceat(mono, edges[:-1])
    level = loudness(x, sr)
    return {
        "waveform": {"min": np.round(lo, 4).tolist(), "max": np.round(hi, 4).tolist()},
        "spectrogram": spectrogram(mono, sr),
        **level,
    }


def loudness(x: np.ndarray, sr: int) -> dict:
    """Integrated loudness (LUFS) where the level lane's meter is there, else RMS (dBFS)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    out = {
        "peak_db": round(20 * np.log10(max(peak, 1e-10)), 2),
        "rms_db": round(20 * np.log10(max(rms, 1e-10)), 2),
    }
    value, unit = out["rms_db"], "dBFS RMS"
    try:
        from cakfx.dsp.loudness import integrated_loudness
    except ImportError:
        integrated_loudness = None
    if integrated_loudness is not None:
        try:
            lufs = float(integrated_loudness(x.astype(np.float32), sr))
            if np.isfinite(lufs):
                value, unit = round(lufs, 2), "LUFS"
        except Exception:  # too short or silent: RMS is the honest fallback
            pass
    out.update(loudness=value, loudness_unit=unit)
    return out


def spectrogram(mono: np.ndarray, sr: int) -> dict:
    n_fft = 2048
    n = mono.shape[0]
    pad = np.pad(mono, (n_fft // 2, n_fft // 2))
    frames = max(1, min(SPEC_COLUMNS, n // 256))
    starts = np.linspace(0, max(0, pad.shape[0] - n_fft), frames).astype(int)
    window = np.hanning(n_fft)
    seg = np.stack(
        [
            pad[s : s + n_fft]
            if s + n_fft <= pad.shape[0]
            else np.pad(pad[s:], (0, s + n_fft - pad.shape[0]))
            for s in starts
        ]
    )
    power = np.abs(np.fft.rfft(seg * window, axis=1)) ** 2 / (window.sum() ** 2 / 4)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    f_min, f_max = 30.0, sr / 2
    centres = np.geomspace(f_min, f_max, SPEC_BINS + 1)
    idx = np.clip(np.searchsorted(freqs, centres), 1, len(freqs) - 1)
    bands = np.stack([power[:, a : max(b, a + 1)].max(axis=1) for a, b in zip(idx[:-1], idx[1:])], axis=1)
    db = 10 * np.log10(np.maximum(bands, 1e-12))
    lo, hi = SPEC_DB_RANGE
    img = np.clip((db - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)  # (frames, bins)
    return {
        "columns": int(frames),
        "bins": SPEC_BINS,
        "data": base64.b64encode(img.tobytes()).decode("ascii"),
        "db_min": lo,
        "db_max": hi,
        "f_min": f_min,
        "f_max": f_max,
    }
