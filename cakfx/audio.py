"""Audio file I/O: read any soundfile format, write back in the same container
and sample format, atomically."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from cakfx.errors import CakfxError
from cakfx.paths import as_new_file, os_reason

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
    return scan_folder(folder)[0]


def scan_folder(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Regular files under ``folder`` (recursive, sorted, hidden names left out) and what
    could not be taken, as ``(path, reason)``: unreadable folders, special files (FIFOs,
    sockets, devices), broken symbolic links and link loops.

    Symbolic links to folders are not followed (as ``Path.rglob``), so a link cannot
    make the walk loop. Names are kept exactly as the OS gives them (non-UTF-8 bytes
    survive as surrogate escapes).
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def on_error(exc: OSError) -> None:
        problems.append((Path(exc.filename), f"cannot read folder ({os_reason(exc)})"))

    for root, dirs, names in os.walk(folder, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            path = Path(root) / name
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                if path.is_symlink():
                    why = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
                    problems.append((path, why))
                else:
                    problems.append((path, f"cannot read ({os_reason(exc)})"))
                continue
            if stat.S_ISREG(mode):
                files.append(path)
            elif not stat.S_ISDIR(mode):
                problems.append((path, f"not a regular file ({_file_kind(mode)})"))
    return sorted(files), sorted(problems)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def display_path(path: str | os.PathLike | bytes) -> str:
    """A path as printable text: bytes that are not UTF-8 appear as ``\\xNN`` escapes,
    so a strange file name can be reported and printed instead of raising."""
    text = os.fsdecode(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_info(path: str | os.PathLike) -> AudioInfo:
    """What ``path`` holds (rate, channels, frames, container, sample format)."""
    fh, f = _open_audio(Path(path))
    with fh, f:
        return _info(f)


def _open_audio(path: Path):
    """``(file object, soundfile.SoundFile)`` open for reading; ``CakfxError`` naming the file."""
    try:
        if path.stat().st_size == 0:  # before opening: opening a FIFO (size 0) would wait for a writer
            raise CakfxError(f"{display_path(path)}: empty file")
        fh = open(path, "rb")  # a Python file: soundfile cannot encode non-UTF-8 names itself
    except OSError as exc:
        raise CakfxError(f"{display_path(path)}: cannot read audio ({_reason(exc)})") from None
    try:
        # libsndfile reads the descriptor itself: no Python call per read, as a file object costs
        return fh, sf.SoundFile(fh.fileno(), closefd=False)
    except BaseException as exc:
        fh.close()
        if not isinstance(exc, CakfxError) and isinstance(
            exc, (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError)
        ):
            raise CakfxError(f"{display_path(path)}: cannot read audio ({_reason(exc)})") from None
        raise


def _info(f) -> AudioInfo:
    return AudioInfo(f.samplerate, f.channels, f.frames, f.format, f.subtype)


def header_frames(path: str | os.PathLike, info: AudioInfo, fd: int | None = None) -> int | None:
    """The frame count a WAV or AIFF header declares (None where the header is not exact).

    libsndfile quietly decodes what survives of a truncated file; comparing this with
    ``info.frames`` finds the truncation. ``fd``: an open descriptor of the file to read
    instead of opening it again (read with ``pread``: its position is left alone).
    """
    if info.format not in ("WAV", "AIFF"):
        return None
    try:
        if fd is not None:
            return _declared_frames(fd, info.format)
        with open(path, "rb") as f:
            return _declared_frames(f.fileno(), info.format)
    except OSError:
        return None


def _declared_frames(fd: int, format: str) -> int | None:
    head = os.pread(fd, 12, 0)
    if format == "WAV" and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        order = "little"
    elif format == "AIFF" and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        order = "big"
    else:
        return None
    block_align = None
    pos = 12
    for _ in range(64):  # chunk headers; a real file has a handful
        chunk = os.pread(fd, 8, pos)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], int.from_bytes(chunk[4:], order)
        if cid == b"fmt ":
            block_align = int.from_bytes(os.pread(fd, 16, pos + 8)[12:14], "little")
        elif cid == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None  # streamed WAVs leave the size open
            return size // block_align
        elif cid == b"COMM":
            return int.from_bytes(os.pread(fd, 6, pos + 8)[2:6], "big")
        pos += 8 + size + (size & 1)
    return None


def read_audio(path: str | os.PathLike, dtype: str = "float32") -> tuple[np.ndarray, AudioInfo]:
    """Read ``path`` as ``(channels, samples)`` float audio plus its ``AudioInfo``."""
    reader = BlockReader(path, dtype=dtype)
    parts = list(reader())
    if not parts:
        raise CakfxError(f"{display_path(path)}: no audio frames")
    data = np.concatenate(parts, axis=1)
    # MP3/OGG report approximate frame counts in the header; the decoded length wins
    info = reader.info
    info = AudioInfo(info.sample_rate, info.channels, data.shape[1], info.format, info.subtype)
    return np.ascontiguousarray(data), info


class BlockReader:
    """Calling it gives a fresh iterator of ``(channels, n)`` float blocks of the file, so
    a file can be read more than once (a measuring pass, then the render) without being
    held in memory. After a full pass, ``frames`` is the decoded length.

    The file opened to read ``info`` is the one the first pass reads (``close()`` lets it go
    when no pass comes); ``declared_frames`` reads its header through it too.

    Raises ``CakfxError`` (naming the file) when the file cannot be decoded or holds
    NaN/infinite samples.
    """

    def __init__(self, path: str | os.PathLike, block_frames: int = 65536, dtype: str = "float32"):
        self.path = Path(path)
        self._open: tuple | None = _open_audio(self.path)
        self.info = _info(self._open[1])
        self.block_frames = max(1, int(block_frames))
        self.dtype = dtype
        self.frames: int | None = None
        # integer samples decode to finite floats: only float and lossy data can hold NaN
        self._check_finite = self.info.subtype not in PCM_BITS

    def declared_frames(self) -> int | None:
        """``header_frames`` of the file, read through the open file where it still is."""
        fd = self._open[0].fileno() if self._open is not None else None
        return header_frames(self.path, self.info, fd)

    def close(self) -> None:
        """Let go of the file opened for ``info`` (a pass closes it itself)."""
        if self._open is not None:
            fh, f = self._open
            self._open = None
            with fh, f:
                pass

    def __call__(self):
        where = display_path(self.path)
        try:
            opened, self._open = self._open, None
            fh, f = opened if opened is not None else _open_audio(self.path)
            with fh, f:
                n = 0
                for block in f.blocks(self.block_frames, dtype=self.dtype, always_2d=True):
                    if self._check_finite and not np.all(np.isfinite(block)):
                        raise CakfxError(f"{where}: contains NaN or infinite samples")
                    n += block.shape[0]
                    yield np.ascontiguousarray(block.T)
                self.frames = n
        except CakfxError:
            raise
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
            raise CakfxError(f"{where}: cannot decode audio ({_reason(exc)})") from None


# integer subtypes -> bits; written as rounded integers (libsndfile truncates floats,
# a -0.5 LSB DC offset), so float -> file -> float is within half an LSB with no bias
PCM_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}


def quantize(block: np.ndarray, subtype: str) -> np.ndarray:
    """``(n, channels)`` float samples as the integers ``subtype`` stores (rounded to the
    nearest step, clipped to full scale), shifted to int16/int32 as soundfile expects."""
    bits = PCM_BITS[subtype]
    scale = float(2 ** (bits - 1))
    block = np.asarray(block)
    # float32 samples times a power of two up to 2**23 are exact in float32, and so are their
    # rounded values: the same integers as in float64, without converting the block
    exact = np.float32 if block.dtype == np.float32 and bits <= 24 else np.float64
    q = np.multiply(block, scale, dtype=exact)
    np.clip(np.rint(q, out=q), -scale, scale - 1, out=q)
    q = q.astype(np.int32)  # |q| <= 2**31: fits
    return (q << (16 - bits)).astype(np.int16) if bits <= 16 else q << (32 - bits)


class BlockWriter:
    """Write ``(channels, n)`` blocks to ``path`` atomically: a hidden temporary file in
    the same folder (``.cakfx-*.cakfx-tmp``), renamed over ``path`` by ``commit()``.

    Every block is checked for non-finite samples first (``CakfxError``; nothing is
    written) and measured (``meter``, a ``cakfx.dsp.loudness.PeakMeter``: sample peak, true
    peak, samples beyond full scale).
    Integer outputs are rounded, integer and lossy outputs clipped to [-1, 1] so loud
    results clip instead of wrapping around.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int,
        channels: int,
        format: str | None = None,
        subtype: str | None = None,
    ):
        path = Path(path)
        if format is None:
            ext = path.suffix.lower().lstrip(".")
            format = {"aif": "AIFF", "oga": "OGG", "wave": "WAV"}.get(ext, ext.upper())
        if subtype is None:
            subtype = sf.default_subtype(format)
        self.path, self.format, self.subtype = path, format, subtype
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.frames = 0
        from cakfx.dsp.loudness import PeakMeter  # here: scipy stays out of `cakfx --help`

        self.meter = PeakMeter(self.channels)
        self._file = None
        path.parent.mkdir(parents=True, exist_ok=True)
        # a short ASCII name: the output's own name may be long or not UTF-8
        fd, self.tmp = tempfile.mkstemp(prefix=".cakfx-", suffix=TMP_SUFFIX, dir=path.parent)
        try:
            self._fh = _ErrorKeepingFile(os.fdopen(fd, "w+b"))
            self._file = sf.SoundFile(self._fh, "w", self.sample_rate, self.channels, subtype, format=format)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, (sf.LibsndfileError, RuntimeError, ValueError, TypeError)):
                raise CakfxError(
                    f"{display_path(path)}: cannot write {format}/{subtype} ({_reason(exc)})"
                ) from None
            raise

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise CakfxError(
                f"{display_path(self.path)}: the chain returned shape {block.shape}, "
                f"expected ({self.channels}, n)"
            )
        if not np.all(np.isfinite(block)):
            bad = int(np.count_nonzero(~np.isfinite(block)))
            raise CakfxError(
                f"{display_path(self.path)}: the chain produced {bad} NaN or infinite samples "
                f"near {self.frames / self.sample_rate:.2f}s; nothing written"
            )
        self.meter.process(block)
        data = block.T
        if self.subtype in PCM_BITS:
            data = quantize(data, self.subtype)
        elif self.subtype not in FLOAT_SUBTYPES:
            data = np.clip(data, -1.0, 1.0).astype(np.float32)
        try:
            self._file.write(data)
            if self._fh.error is not None:
                raise self._fh.error
        except (sf.LibsndfileError, RuntimeError, AssertionError, OSError) as exc:
            # libsndfile reports a failed write as "System error." or a short count: the
            # OS's own error, kept by the file object, says what happened
            exc = self._fh.error or exc
            raise CakfxError(f"{display_path(self.path)}: cannot write ({_reason(exc)})") from None
        self.frames += block.shape[1]

    def commit(self) -> None:
        """Finish the file and rename it into place."""
        try:
            try:
                self._file.close()
                self._fh.flush()
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                exc = self._fh.error or exc
                raise CakfxError(f"{display_path(self.path)}: cannot write ({_reason(exc)})") from None
            if self._fh.error is not None:
                raise CakfxError(f"{display_path(self.path)}: cannot write ({_reason(self._fh.error)})")
            self._fh.close()
            as_new_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop the temporary file (the output is left as it was)."""
        for obj in (self._file, getattr(self, "_fh", None)):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # closing a half-written file may fail again; it is deleted anyway
                pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


TMP_SUFFIX = ".cakfx-tmp"


class _ErrorKeepingFile:
    """A binary file for soundfile's virtual I/O that keeps the first OS error of a
    write instead of letting it vanish inside libsndfile's callback."""

    def __init__(self, f):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            return 0

    def __getattr__(self, name):
        return getattr(self._f, name)


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int,
    format: str | None = None,
    subtype: str | None = None,
) -> None:
    """Write ``(channels, samples)`` audio atomically (temporary file, then rename).

    Integer formats are rounded; integer and lossy formats get values clipped to
    [-1, 1] first, so loud results clip instead of wrapping around.
    """
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None, :]
    writer = BlockWriter(path, sample_rate, audio.shape[0], format, subtype)
    try:
        for start in range(0, audio.shape[1], 65536):
            writer.write(audio[:, start : start + 65536])
        writer.commit()
    except BaseException:
        writer.discard()
        raise


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os_reason(exc)
    if isinstance(exc, sf.LibsndfileError):  # without soundfile's "Error opening <file>: "
        return exc.error_string.strip()
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
