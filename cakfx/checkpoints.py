"""Reading the original research checkpoints (``.pt``) without unpickling code.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers;
the numpy scalars in the training history are allow-listed by name (both the
numpy 2 and the numpy 1 module paths, since the checkpoints were saved by both).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cakfx.errors import CakfxError


def _safe_globals() -> list:
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = {type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")}
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *dtypes,
    ]


def load_research_checkpoint(path: str | os.PathLike) -> dict:
    """Load a research ``.pt`` checkpoint safely onto the CPU (MPS-saved ones too)."""
    path = Path(path)
    if not path.is_file():
        raise CakfxError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            data = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CakfxError(f"{path}: not a loadable checkpoint ({first})") from None
    if not isinstance(data, dict):
        raise CakfxError(f"{path}: not a research checkpoint (expected a dict, got {type(data).__name__})")
    return data
