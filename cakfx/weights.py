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
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cakfx.errors import CakfxError
from cakfx.paths import as_new_file, user_weights_dir

FORMAT_VERSION = 1
SUFFIX = ".safetensors"


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


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    kind: str,
    stats: dict | None = None,
    training: dict | None = None,
    name: str | None = None,
) -> Path:
    """Write a weights file atomically and return its path."""
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


def load_weights(path: str | os.PathLike, expect_kind: str | None = None) -> WeightsFile:
    """Read a safetensors weights file (CPU tensors) with its metadata."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise CakfxError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise CakfxError(f"{path}: not a cakfx weights file ({exc})") from None
    kind = meta.get("kind", "")
    if not kind:
        raise CakfxError(f"{path}: weights file has no 'kind' in its metadata")
    if int(meta.get("format_version", "0") or 0) > FORMAT_VERSION:
        raise CakfxError(f"{path}: weights format {meta['format_version']} is newer than this cakfx")
    if expect_kind and kind != expect_kind:
        raise CakfxError(f"{path}: weights are for {kind}, not {expect_kind}")
    try:
        stats = json.loads(meta.get("stats") or "{}")
        training = json.loads(meta.get("training") or "{}")
    except json.JSONDecodeError as exc:
        raise CakfxError(f"{path}: bad JSON in weights metadata ({exc})") from None
    return WeightsFile(path, kind, tensors, stats, training, meta)


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
        if path.is_file():
            return path
        raise CakfxError(f"weights file not found: {path}")
    for folder in (user_weights_dir(), bundled_dir()):
        candidate = folder / f"{ref}{SUFFIX}"
        if candidate.is_file():
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
