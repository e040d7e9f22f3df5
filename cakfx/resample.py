"""Band-limited resampling (Kaiser-windowed sinc, polyphase) in torch.

Used by the neural effects to run their 44.1 kHz models at any input rate:
``resample(x, sr, 44100)`` then back with ``length=`` the input length.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# 64 zero crossings with a Kaiser window (beta 14.77): stop-band below -100 dB.
LOWPASS_WIDTH = 64
ROLLOFF = 0.9475937167399596
BETA = 14.769656459379492
MAX_PHASES = 2000  # reduced rate ratios above this fall back to pedalboard's resampler


def _kernels(orig: int, new: int, dtype, device) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64, device=device)[:, None, None] / new + idx
    t = (t * base).clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = torch.special.i0(BETA * torch.sqrt(1 - (t / LOWPASS_WIDTH) ** 2)) / float(np.i0(BETA))
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (base / orig)).to(dtype), width


def resample(x: torch.Tensor, orig_sr: float, new_sr: float, length: int | None = None) -> torch.Tensor:
    """Resample ``x`` (``(..., samples)``) from ``orig_sr`` to ``new_sr``.

    The output has ``ceil(n * new / orig)`` samples, or ``length`` if given
    (trimmed or zero-padded), and is time-aligned with the input (zero phase).
    """
    orig, new = int(round(orig_sr)), int(round(new_sr))
    n = x.shape[-1]
    out_len = length if length is not None else math.ceil(n * new / orig)
    if orig == new:
        y = x
    else:
        g = math.gcd(orig, new)
        o, w = orig // g, new // g
        if max(o, w) > MAX_PHASES:
            y = _resample_pedalboard(x, orig, new)
        else:
            kernels, width = _kernels(o, w, x.dtype, x.device)
            shape = x.shape[:-1]
            flat = x.reshape(-1, 1, n)
            flat = torch.nn.functional.pad(flat, (width, width + o))
            y = torch.nn.functional.conv1d(flat, kernels, stride=o)  # (B, w, frames)
            y = y.transpose(1, 2).reshape(*shape, -1)
    if y.shape[-1] >= out_len:
        return y[..., :out_len]
    return torch.nn.functional.pad(y, (0, out_len - y.shape[-1]))


def _resample_pedalboard(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    from pedalboard import Resample
    from pedalboard.io import StreamResampler

    flat = x.detach().reshape(-1, x.shape[-1]).cpu().numpy().astype(np.float32)
    rs = StreamResampler(orig, new, flat.shape[0], Resample.Quality.WindowedSinc256)
    latency = int(round(rs.input_latency * new / orig))
    y = np.concatenate([rs.process(flat), rs.process(None)], axis=1)[:, latency:]
    return torch.from_numpy(y).to(x).reshape(*x.shape[:-1], -1)
