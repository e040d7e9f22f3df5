"""A small weights-backed effect registered through the real plugin hooks.

It stands in for the neural effects in core tests: it loads a safetensors
weights file and multiplies the audio by its stored gain and a ``level``
parameter, so tests can check that presets resolve, pin and load weights.
"""

from __future__ import annotations

import numpy as np
import torch

import cakfx
from cakfx.hookspecs import hookimpl
from cakfx.params import Param
from cakfx.weights import load_weights, save_weights


class GainNode(cakfx.EffectNode):
    name = "test.gain"

    def __init__(self, level: float, weights: str, device=None) -> None:
        self.level = level
        self.gain = float(load_weights(weights, expect_kind="test.gain").tensors["gain"])

    def process_channels(self, audio, sample_rate):
        return audio * np.asarray(self.level * self.gain, dtype=audio.dtype)


class GainPlugin:
    @hookimpl
    def register_effects(self, register):
        register(
            "test.gain",
            GainNode,
            [
                Param("level", "float", 1.0, "linear level", min=0.0, max=4.0),
                Param("weights", "weights", "test-gain", "gain weights"),
            ],
            summary="test effect",
            takes_device=True,
        )


def make_gain_weights(path, gain: float = 0.5):
    return save_weights(path, {"gain": torch.tensor(gain)}, kind="test.gain")


def spools_find_the_disk_full(monkeypatch) -> None:
    """Every ``cakfx.streaming.Spool`` write fails as on a full disk (what a node must survive)."""
    from cakfx.streaming import Spool

    def disk_full(self, block):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "push", disk_full)
