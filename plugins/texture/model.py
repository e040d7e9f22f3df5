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
        # zero context frames, then a frames-first view: conv3x3's layout, no copy
        frames = F.pad(n, (1, 1)).transpose(-1, -2)
        w = self.detector_weight.reshape(3, 3).to(n.dtype)
        return conv3x3(frames, w, self.detector_bias.to(n.dtype)).transpose(-1, -2)

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


def conv3x3(n: torch.Tensor, kernel, bias) -> torch.Tensor:
    """``out[..., t, f] = bias + sum_ij kernel[i][j] * n[..., t + j, f + i - 1]``, zero padding over bins.

    The texture layer's 3x3 kernel, for training and inference alike. ``n`` is
    ``(..., T + 2, F)``: frames first with one context frame each side (the caller pads
    them); returns ``(..., T, F)``. ``kernel[i][j]`` indexes (frequency, time) like the
    ``(1, 1, 3, 3)`` detector weight. Numbers (the node's ``effective_kernel(...).tolist()``)
    are fused multiply-adds in place; tensors (training) keep the graph for autograd.
    """
    frames = n.shape[-2] - 2
    out = n[..., 1 : 1 + frames, :].mul(kernel[1][1]).add_(bias)
    for i in range(3):
        for j in range(3):
            if (i, j) == (1, 1):
                continue
            rows, k = n[..., j : j + frames, :], kernel[i][j]
            if i == 0:  # neighbour one bin below
                dst, src = out[..., 1:], rows[..., :-1]
            elif i == 1:
                dst, src = out, rows
            else:
                dst, src = out[..., :-1], rows[..., 1:]
            if isinstance(k, torch.Tensor):
                dst.add_(src * k)
            else:
                dst.add_(src, alpha=k)
    return out
