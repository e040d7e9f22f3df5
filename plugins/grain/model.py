"""The CAK grain processor: three CAK layers and an output BatchNorm (13 400 numbers).

Each layer (published name ``cakN``)::

    p   = pattern_detector(x)     # conv 1->8 3x3, LReLU(0.2), 8->16 5x5, LReLU,
                                  # 16->8 3x3, LReLU, 8->1 1x1 ('same' padding)
    out = x + p * g * sigmoid(|g| * T) * scale

with T = 5, 10, 15 and controls g, 0.7 g, 0.5 g for the three layers, then
``output_norm`` (BatchNorm2d(1), eval mode). ``g`` runs -3 ... +3 (the published
description: negative adds texture, positive smooths; measured through cakfx, positive
brightens and flattens the spectrum, negative darkens it). Input is a
``(B, 1, 128, frames)`` mel dB spectrogram min-max normalised to [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

TEMPERATURES = (5.0, 10.0, 15.0)
CONTROL_FACTORS = (1.0, 0.7, 0.5)


class PatternDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.conv3 = nn.Conv2d(16, 8, 3, padding=1)
        self.conv4 = nn.Conv2d(8, 1, 1)
        self.act = nn.LeakyReLU(0.2, inplace=True)  # on fresh conv outputs: saves a copy per layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))
        return self.conv4(x)


class GrainCAK(nn.Module):
    """One CAK layer: ``x + p * g * sigmoid(|g| * T) * scale``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.pattern_detector = PatternDetector()
        self.scale = nn.Parameter(torch.ones(1))
        self.temperature = temperature

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        p = self.pattern_detector(x)
        return x + p * g * torch.sigmoid(g.abs() * self.temperature) * self.scale


class GrainProcessor(nn.Module):
    """The published ``processor``: ``cak1``..``cak3`` then ``output_norm``."""

    def __init__(self) -> None:
        super().__init__()
        self.cak1 = GrainCAK(TEMPERATURES[0])
        self.cak2 = GrainCAK(TEMPERATURES[1])
        self.cak3 = GrainCAK(TEMPERATURES[2])
        self.output_norm = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 1, 128, T)`` normalised mel; ``grain``: ``(B,)`` control."""
        g = grain.to(x.dtype).reshape(-1, 1, 1, 1)
        for layer, factor in zip((self.cak1, self.cak2, self.cak3), CONTROL_FACTORS):
            x = layer(x, g * factor)
        return self.output_norm(x)
