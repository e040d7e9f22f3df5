"""The CAK texture model: eleven learned numbers.

Conditioning-Aware Kernel (CAK)::

    p    = conv3x3(n)                      # 1 -> 1 channel, zero padding 1
    gate = sigmoid((t - tau) * T)          # tau = 0.3, T = 20 at inference
    out  = n + p * t * scale * gate        # t = the control ("amount")

``n`` is the normalised STFT magnitude ``(B, 1, freq, time)``. The kernel is
applied as nine shifted multiply-adds (``conv3x3``): a 1-channel ``conv2d`` is ~9x slower
on CPU. Training (``detect``, ``forward``) and the effect node (``effective_kernel`` then
``conv3x3``) run the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

THRESHOLD = 0.3
TEMPERATURE = 20.0


class TextureCAK(nn.Module):
    """CAK layer of the texture processor (published name: ``cak``).

    Parameters: ``detector_weight`` (3x3 kernel, the published
    ``cak.detector.conv.weight``), ``detector_bias`` and ``scale``.
    ``temperature`` is a buffer so trainers can anneal it (2 -> 20).
    """

    def __init__(self, threshold: float = THRESHOLD, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        self.detector_weight = nn.Parameter(torch.randn(1, 1, 3, 3) * 0.1)
        self.detector_bias = nn.Parameter(torch.zeros(1))
        self.scale = nn.Parameter(torch.ones(1))
        self.threshold = threshold
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def detect(self, n: torch.Tensor) -> torch.Tensor:
        """The 3x3 pattern detector ``p = conv3x3(n) + bias`` on ``(..., F, T)``, zero padded."""
        w = self.detector_weight.reshape(3, 3).to(n.dtype)
        framed = F.pad(n, (1, 1))  # zero context frames either side
        return conv3x3(framed, w, self.detector_bias.to(n.dtype), time_dim=-1)

    def gate(self, amount: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((amount - self.threshold) * self.temperature)

    def effective_kernel(self, amount: float) -> tuple[torch.Tensor, float]:
        """The layer as one affine 3x3 filter for a fixed control: ``out = conv3x3(n, k) + b``.

        ``k = w * c`` plus 1 at the centre (the residual ``n``), ``b = bias * c``, with
        ``c = t * scale * gate(t)``; computed in float64.
        """
        t = float(amount)
        gate = 1.0 / (1.0 + math.exp(-(t - self.threshold) * float(self.temperature)))
        c = t * float(self.scale.detach()) * gate
        kernel = self.detector_weight.detach().to("cpu", torch.float64).reshape(3, 3) * c
        kernel[1, 1] += 1.0
        return kernel, float(self.detector_bias.detach()) * c

    def forward(self, n: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
        """``n``: ``(B, 1, F, T)`` normalised magnitudes; ``amount``: ``(B,)``."""
        t = amount.to(n.dtype).reshape(-1, 1, 1, 1)
        p = self.detect(n)
        return n + p * t * self.scale.to(n.dtype) * self.gate(t)


def conv3x3(n: torch.Tensor, kernel, bias, time_dim: int = -2) -> torch.Tensor:
    """``out[t, f] = bias + sum_ij kernel[i][j] * n[t + j, f + i - 1]``, zero padding over bins.

    The texture layer's 3x3 kernel, for training and inference alike. ``n``'s last two dims
    are frames and bins, frames (``time_dim``: -2, the node's layout, bins contiguous; or
    -1, the model's ``(..., F, T)``) with one context frame each side, padded by the caller;
    returns ``T`` frames in the same layout. ``kernel[i][j]`` indexes (frequency, time) like
    the ``(1, 1, 3, 3)`` detector weight. Numbers (the node's
    ``effective_kernel(...).tolist()``) run as fused multiply-adds in place on the bins each
    neighbour reaches; tensors (training) as plain sums over a bin-padded copy, which
    autograd differentiates fast.
    """
    freq_dim = -1 if time_dim == -2 else -2
    frames, bins = n.shape[time_dim] - 2, n.shape[freq_dim]

    def at(x: torch.Tensor, j: int, i: int, width: int) -> torch.Tensor:  # frames j.., bins i..
        return x.narrow(time_dim, j, frames).narrow(freq_dim, i, width)

    if isinstance(kernel, torch.Tensor):
        padded = F.pad(n, (1, 1) if freq_dim == -1 else (0, 0, 1, 1))
        out = bias + kernel[0][0] * at(padded, 0, 0, bins)
        for i in range(3):
            for j in range(3):
                if i or j:
                    out = out + kernel[i][j] * at(padded, j, i, bins)
        return out
    out = at(n, 1, 0, bins).mul(kernel[1][1]).add_(bias)
    for i in range(3):
        for j in range(3):
            if (i, j) == (1, 1):
                continue
            if i == 1:
                out.add_(at(n, j, 0, bins), alpha=kernel[i][j])
            else:  # i == 0: each bin reads the one below it; i == 2: the one above
                dst = out.narrow(freq_dim, 1 if i == 0 else 0, bins - 1)
                dst.add_(at(n, j, 0 if i == 0 else 1, bins - 1), alpha=kernel[i][j])
    return out
