"""STFT front end shared by the neural effects (n_fft 2048, hop 512, Hann, centred)."""

from __future__ import annotations

import torch

N_FFT = 2048
HOP = 512
MODEL_SR = 44100

_windows: dict = {}


def hann(n_fft: int = N_FFT, device=None, dtype=torch.float32) -> torch.Tensor:
    """Periodic Hann window (as librosa and torch use), cached per device/dtype."""
    key = (n_fft, str(device), dtype)
    if key not in _windows:
        _windows[key] = torch.hann_window(n_fft, periodic=True, device=device, dtype=dtype)
    return _windows[key]


def stft(
    x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP, pad_mode: str = "constant", center: bool = True
) -> torch.Tensor:
    """Complex STFT of ``x`` (``(..., samples)``) -> ``(..., n_fft//2+1, frames)``.

    Frames are centred (padded with ``pad_mode``) unless ``center=False``.
    """
    shape = x.shape[:-1]
    spec = torch.stft(
        x.reshape(-1, x.shape[-1]),
        n_fft,
        hop_length=hop,
        window=hann(n_fft, x.device, x.dtype),
        center=center,
        pad_mode=pad_mode,
        return_complex=True,
    )
    return spec.reshape(*shape, *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Inverse of ``stft`` to exactly ``length`` samples."""
    shape = spec.shape[:-2]
    real_dtype = spec.real.dtype
    out = torch.istft(
        spec.reshape(-1, *spec.shape[-2:]),
        n_fft,
        hop_length=hop,
        window=hann(n_fft, spec.device, real_dtype),
        center=True,
        length=length,
    )
    return out.reshape(*shape, length)
