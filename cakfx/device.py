"""Device choice: ``auto`` = CUDA, else MPS, else CPU."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cakfx.errors import CakfxError

if TYPE_CHECKING:
    import torch

CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda[:N]``/``mps`` (or ``$CAKFX_DEVICE``) into a device.

    Asking for an accelerator that is not there is a ``CakfxError``.
    """
    import torch  # here, not at import: the listing commands stay torch-free

    if isinstance(name, torch.device):
        return name
    name = (name or os.environ.get("CAKFX_DEVICE") or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in CHOICES:
        raise CakfxError(f"unknown device {name!r} (choose from {', '.join(CHOICES)})")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CakfxError(f"device {name!r} requested but CUDA is not available to torch {torch.__version__}")
    if kind == "mps" and not _mps_available():
        raise CakfxError(f"device {name!r} requested but MPS is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise CakfxError(f"bad device {name!r}: {exc}") from None
