"""Audio file I/O: read any soundfile format, write back in the same container
and sample format, atomically."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from cakfx.errors import CakfxError
from cakfx.paths import as_new_file

#: extensions we try to decode; anything else in a folder is "not audio"
AUDIO_EXTENSIONS = {
    ".wav",
    ".wave",
    ".flac",
    ".aif",
    ".aiff",
    ".aifc",
    ".ogg",
    ".oga",
    ".mp3",
    ".au",
    ".caf",
    ".w64",
    ".rf64",
}
#: --format choices -> (extension, soundfile format, default subtype)
FORMATS = {
    "wav": (".wav", "WAV", "FLOAT"),
    "flac": (".flac", "FLAC", "PCM_24"),
    "ogg": (".ogg", "OGG", "VORBIS"),
    "aiff": (".aiff", "AIFF", "PCM_24"),
}
# subtypes that keep float; everything else is integer or lossy and needs clipping
FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}


@dataclass(frozen=True)
class AudioInfo:
    """What a file is, so the output can be written the same way."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def walk_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under ``folder``, recursive and sorted; hidden files (``.name``) left out."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def read_info(path: str | os.PathLike) -> AudioInfo:
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CakfxError(f"{path}: empty file")
        info = sf.info(str(path))
    except CakfxError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise CakfxError(f"{path}: cannot read audio ({_reason(exc)})") from None
    return AudioInfo(info.samplerate, info.channels, info.frames, info.format, info.subtype)


def read_audio(path: str | os.PathLike, dtype: str = "float32") -> tuple[np.ndarray, AudioInfo]:
    """Read ``path`` as ``(channels, samples)`` float audio plus its ``AudioInfo``."""
    path = Path(path)
    info = read_info(path)
    try:
        data, _ = sf.read(str(path), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise CakfxError(f"{path}: cannot decode audio ({_reason(exc)})") from None
    if data.shape[0] == 0:
        raise CakfxError(f"{path}: no audio frames")
    if not np.all(np.isfinite(data)):
        raise CakfxError(f"{path}: contains NaN or infinite samples")
    # MP3/OGG report approximate frame counts in the header; the decoded length wins
    info = AudioInfo(info.sample_rate, info.channels, data.shape[0], info.format, info.subtype)
    return np.ascontiguousarray(data.T), info


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int,
    format: str | None = None,
    subtype: str | None = None,
) -> None:
    """Write ``(channels, samples)`` audio atomically (temporary file, then rename).

    Integer and lossy formats get values clipped to [-1, 1] first, so loud
    results clip instead of wrapping around.
    """
    path = Path(path)
    if format is None:
        ext = path.suffix.lower().lstrip(".")
        format = {"aif": "AIFF", "oga": "OGG", "wave": "WAV"}.get(ext, ext.upper())
    if subtype is None:
        subtype = sf.default_subtype(format)
    data = np.asarray(audio).T
    if subtype not in FLOAT_SUBTYPES:
        data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".cakfx-tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, int(sample_rate), subtype=subtype, format=format)
        as_new_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (sf.LibsndfileError, RuntimeError, ValueError, TypeError)):
            raise CakfxError(f"{path}: cannot write {format}/{subtype} ({_reason(exc)})") from None
        raise


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
