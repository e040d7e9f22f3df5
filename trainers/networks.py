"""Network pieces shared by the recipes (layer indices as in the published state dicts)."""

from __future__ import annotations

import torch


def realism_net(channels: tuple[int, int, int], norm: type[torch.nn.Module], sigmoid: bool = False):
    """The realism branch both recipes use (layer indices as in the published state dicts).

    conv 1->c1 4x4 s2, LReLU(0.2); conv c1->c2 4x4 s2, norm, LReLU; conv c2->c3 4x4 s2,
    norm, LReLU; global average pool; linear c3->1 (then a sigmoid for the grain GAN).
    """
    nn = torch.nn
    c1, c2, c3 = channels
    layers = [
        nn.Conv2d(1, c1, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1),
        norm(c2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c2, c3, 4, stride=2, padding=1),
        norm(c3),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, 1),
    ]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))
