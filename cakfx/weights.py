"""The weights store: safetensors files with JSON metadata (never pickles).

Header metadata (all strings, as safetensors requires): ``kind``
(``cak.texture`` / ``cak.grain``), ``format_version``, ``name``, ``stats``
(JSON: normalisation the model needs) and ``training`` (JSON: trainer,
profile, data set summary, epochs, seed, date, ...).
Resolution by name: ``$CAKFX_HOME/weights/NAME.safetensors``, then the
bundled ``cakfx.bundled_weights`` package data (the repo's ``weights/``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cakfx.errors import CakfxError
from cakfx.params import check_finite_tree
from cakfx.paths import as_new_file, is_file, user_weights_dir

if TYPE_CHECKING:  # torch is imported only where tensors are made, so listing stays fast
    import torch

FORMAT_VERSION = 1
SUFFIX = ".safetensors"
#: weights are data from strangers: bounds checked before anything is allocated
MAX_WEIGHTS_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_TENSORS = 4096
MAX_ABS_VALUE = 1e12  # a weight or statistic beyond this is damage, not training
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


@dataclass
class WeightsFile:
    """A loaded weights file: tensors plus parsed metadata."""

    path: Path
    kind: str
    tensors: dict[str, torch.Tensor]
    stats: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name.removesuffix(SUFFIX)

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.tensors.items()}


#: a file unchanged for this long is digested and checked once per process: one changed more recently
#: may change again within the same timestamp tick (a few ms), which ``stat`` would not show
SETTLED_NS = 2_000_000_000
_KEPT = 256  # results kept per process (by ``settled_key``)
_digests: dict[tuple, str] = {}


def settled_key(path: str | os.PathLike) -> tuple | None:
    """``(device, inode, size, mtime, ctime)`` of a file unchanged for ``SETTLED_NS``, else None.

    While it stays the same the file's bytes have not changed, so a digest or a check that passed
    can be kept under it (preset pins are verified by every chain build, 1-2 ms a time).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < SETTLED_NS:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember(kept: dict, key: tuple, value: Any) -> None:
    """Keep ``value`` under ``key`` in a per-process table of at most ``_KEPT`` entries."""
    if len(kept) >= _KEPT:
        kept.clear()
    kept[key] = value


def sha256_file(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex); computed once per process while the file is unchanged and settled."""
    key = settled_key(path)
    if key is not None and key in _digests:
        return _digests[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if key is not None:
        remember(_digests, key, digest)
    return digest


def save_weights(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    kind: str,
    stats: dict | None = None,
    training: dict | None = None,
    name: str | None = None,
) -> Path:
    """Write a weights file atomically and return its path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "kind": kind,
        "format_version": str(FORMAT_VERSION),
        "name": name or path.name.removesuffix(SUFFIX),
        "stats": json.dumps(stats or {}),
        "training": json.dumps(training or {}),
    }
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(clean, str(tmp), metadata=meta)
    as_new_file(tmp)
    os.replace(tmp, path)
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Parse a safetensors file with numpy only, checking every size and offset first.

    Returns (metadata, arrays); BF16 arrays come back as float32. Raises ``CakfxError``
    for anything that is not a well-formed file within ``MAX_WEIGHTS_BYTES``.
    """
    path = Path(path)
    bad = f"{path}: not a cakfx weights file"
    try:
        size = path.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise CakfxError(f"{path}: weights file too large ({size} bytes; limit {MAX_WEIGHTS_BYTES})")
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CakfxError(f"{bad} (too short)")
            n = int.from_bytes(raw, "little")
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise CakfxError(f"{bad} (header length {n} does not fit the file)")
            header_bytes = f.read(n)
            data = f.read(size - 8 - n)
    except FileNotFoundError:
        raise CakfxError(f"weights file not found: {path}") from None
    except IsADirectoryError:
        raise CakfxError(f"{path}: is a folder, not a weights file") from None
    except OSError as exc:
        raise CakfxError(f"{path}: cannot read weights ({os.strerror(exc.errno or 0).lower()})") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CakfxError(f"{bad} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CakfxError(f"{bad} (header is not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise CakfxError(f"{bad} (metadata must map strings to strings)")
    if len(header) > MAX_TENSORS:
        raise CakfxError(f"{bad} ({len(header)} tensors; limit {MAX_TENSORS})")
    arrays: dict[str, np.ndarray] = {}
    for name, desc in header.items():
        where = f"{bad} (tensor {name!r}"
        if not isinstance(desc, dict) or desc.get("dtype") not in _DTYPES:
            raise CakfxError(f"{where}: unknown dtype)")
        shape, offsets = desc.get("shape"), desc.get("data_offsets")
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
            raise CakfxError(f"{where}: bad shape)")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= len(data)
        ):
            raise CakfxError(f"{where}: data offsets outside the file)")
        dtype = np.dtype(_DTYPES[desc["dtype"]])
        count = math.prod(shape)
        if count * dtype.itemsize != offsets[1] - offsets[0]:
            raise CakfxError(f"{where}: shape {shape} does not match its data size)")
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=offsets[0]).reshape(shape)
        if desc["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = arr
    return meta, arrays


def check_values(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Every value finite and within ``MAX_ABS_VALUE``."""
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and arr.size:
            if not np.all(np.isfinite(arr)):
                raise CakfxError(f"{path}: tensor {name!r} holds NaN or infinite values")
            if float(np.max(np.abs(arr))) > MAX_ABS_VALUE:
                raise CakfxError(f"{path}: tensor {name!r} holds values beyond ±{MAX_ABS_VALUE:g}")


def parse_metadata(meta: dict[str, str], path: Path, expect_kind: str | None = None) -> tuple[dict, dict]:
    """Check ``kind`` and ``format_version``; return the parsed (stats, training)."""
    kind = meta.get("kind", "")
    if not kind:
        raise CakfxError(f"{path}: weights file has no 'kind' in its metadata")
    version = meta.get("format_version", "0") or "0"
    if not version.isdigit() or len(version) > 6:
        raise CakfxError(f"{path}: weights format_version {version!r} is not a whole number")
    if int(version) > FORMAT_VERSION:
        raise CakfxError(f"{path}: weights format {version} is newer than this cakfx")
    if expect_kind and kind != expect_kind:
        raise CakfxError(f"{path}: weights are for {kind}, not {expect_kind}")
    out = []
    for key in ("stats", "training"):
        try:
            value = json.loads(meta.get(key) or "{}")
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CakfxError(f"{path}: bad JSON in weights metadata {key!r} ({exc})") from None
        if not isinstance(value, dict):
            raise CakfxError(f"{path}: weights metadata {key!r} must be a JSON object")
        try:
            check_finite_tree(value, f"{path}: {key}", MAX_ABS_VALUE, max_depth=16)
        except ValueError as exc:
            raise CakfxError(str(exc)) from None
        out.append(value)
    return out[0], out[1]


def check_weights(
    path: str | os.PathLike,
    expect_kind: str | None = None,
    expected_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[dict[str, str], dict[str, np.ndarray], dict, dict]:
    """Validate a weights file fully without torch: structure, size, kind, metadata,
    finite values and (when given) the tensor names and shapes a model expects.

    Returns (metadata, arrays, stats, training).
    """
    path = Path(path)
    meta, arrays = read_safetensors(path)
    stats, training = parse_metadata(meta, path, expect_kind)
    check_values(arrays, path)
    if expected_shapes is not None:
        check_shapes({k: tuple(v.shape) for k, v in arrays.items()}, expected_shapes, path)
    return meta, arrays, stats, training


def check_shapes(actual: dict[str, tuple], expected: dict[str, tuple], path: Path) -> None:
    """The tensors ``actual`` has must be exactly ``expected`` (name -> shape); a name ending in
    ``?`` is optional (e.g. ``"threshold?": ()``)."""
    optional = {k[:-1] for k in expected if k.endswith("?")}
    expected = {k.removesuffix("?"): v for k, v in expected.items()}
    missing = sorted(set(expected) - set(actual) - optional)
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        parts = [
            f"missing {', '.join(missing[:5])}" if missing else "",
            f"unexpected {', '.join(extra[:5])}" if extra else "",
        ]
        raise CakfxError(f"{path}: weights do not fit the model ({'; '.join(p for p in parts if p)})")
    for name, shape in expected.items():
        if name in actual and tuple(actual[name]) != tuple(shape):
            raise CakfxError(
                f"{path}: tensor {name!r} has shape {tuple(actual[name])}, the model expects {tuple(shape)}"
            )


def load_weights(
    path: str | os.PathLike,
    expect_kind: str | None = None,
    expected_shapes: dict[str, tuple[int, ...]] | None = None,
) -> WeightsFile:
    """Read and fully check a safetensors weights file (CPU tensors) with its metadata."""
    import torch

    path = Path(path)
    meta, arrays, stats, training = check_weights(path, expect_kind, expected_shapes)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    return WeightsFile(path, meta["kind"], tensors, stats, training, meta)


def bundled_dir() -> Path:
    return Path(str(resources.files("cakfx.bundled_weights")))


def is_path_like(ref: str) -> bool:
    return ref.endswith(SUFFIX) or "/" in ref or os.sep in ref


def resolve_weights(ref: str | os.PathLike, relative_to: str | os.PathLike | None = None) -> Path:
    """Find weights by path or name (user folder first, then bundled)."""
    ref = str(ref)
    if is_path_like(ref):
        path = Path(ref).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = Path(relative_to) / path
        if is_file(path):
            return path
        raise CakfxError(f"weights file not found: {path}")
    for folder in (user_weights_dir(), bundled_dir()):
        candidate = folder / f"{ref}{SUFFIX}"
        if is_file(candidate):
            return candidate
    known = ", ".join(sorted(list_weights())) or "none installed"
    raise CakfxError(f"unknown weights {ref!r} (known: {known})")


def list_weights() -> dict[str, Path]:
    """Weights names -> paths; user weights shadow bundled ones of the same name."""
    found: dict[str, Path] = {}
    for folder in (bundled_dir(), user_weights_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                found[path.name.removesuffix(SUFFIX)] = path
    return found


def load_model(weights: str | os.PathLike | WeightsFile, device: Any = None):
    """The torch module stored in ``weights`` (a name, a path or a ``WeightsFile``).

    The effect that registered the weights' ``kind`` builds it, in eval mode.
    """
    from cakfx.device import resolve_device
    from cakfx.registry import get_effect

    wf = weights if isinstance(weights, WeightsFile) else load_weights(resolve_weights(weights))
    spec = get_effect(wf.kind)
    if spec.load_model is None:
        raise CakfxError(f"effect {wf.kind} has no model loader")
    return spec.load_model(wf, resolve_device(device))
