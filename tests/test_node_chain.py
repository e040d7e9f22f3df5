"""Nodes and chains behave like pedalboard plugins, in both layouts."""

from __future__ import annotations

import numpy as np
import pedalboard
import pytest

import cakfx
from cakfx.node import to_channels_first
from tests.signals import tone


class OnePole(cakfx.EffectNode):
    """A real (if small) cakfx node: a one-pole low-pass per channel."""

    name = "test.onepole"

    def __init__(self, coeff: float = 0.9) -> None:
        self.coeff = coeff

    def process_channels(self, audio, sample_rate):
        out = np.empty_like(audio)
        state = np.zeros(audio.shape[0], dtype=audio.dtype)
        for i in range(audio.shape[1]):
            state = self.coeff * state + (1 - self.coeff) * audio[:, i]
            out[:, i] = state
        return out


def test_layouts_are_detected_like_pedalboard():
    x = tone(0.1, channels=2)
    assert to_channels_first(x)[1] == "channels_first"
    assert to_channels_first(x.T)[1] == "channels_last"
    assert to_channels_first(x[0])[1] == "mono"
    with pytest.raises(cakfx.CakfxError, match="float32 or float64"):
        to_channels_first(x.astype(np.int16))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "mono"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_node_keeps_layout_dtype_and_length(layout, dtype):
    x = tone(0.05, channels=2, dtype=dtype)
    if layout == "channels_last":
        x = x.T.copy()
    elif layout == "mono":
        x = x[0].copy()
    y = OnePole()(x, 44100)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not np.allclose(y, x)  # it really filtered
    assert np.allclose(OnePole().process(x, 44100, buffer_size=512, reset=True), y)


def test_chain_mixes_pedalboard_and_cakfx_nodes_in_both_layouts():
    x = tone(0.2, channels=2)
    gain = pedalboard.Gain(gain_db=-6.0)
    chain = cakfx.Chain([gain, OnePole(0.5), pedalboard.Gain(gain_db=6.0), pedalboard.Invert()])
    # the two trailing native plugins run as one native Pedalboard call
    stages = chain.stages()
    assert isinstance(stages[1], OnePole) and isinstance(stages[2], pedalboard.Pedalboard)
    expected = -OnePole(0.5)(x * 10 ** (-6 / 20), 44100) * 10 ** (6 / 20)
    y_first = chain(x, 44100)
    y_last = chain(x.T.copy(), 44100)
    assert y_first.shape == x.shape and y_last.shape == x.T.shape
    np.testing.assert_allclose(y_first, expected, atol=1e-5)
    np.testing.assert_allclose(y_last.T, y_first, atol=1e-6)


def test_chain_nests_and_feeds_pedalboard():
    x = tone(0.1, channels=1)
    inner = cakfx.Chain([OnePole(0.8)])
    outer = cakfx.Chain([inner, pedalboard.Pedalboard([pedalboard.Gain(gain_db=-20)])])
    y = outer(x, 44100)
    np.testing.assert_allclose(y, OnePole(0.8)(x, 44100) * 0.1, atol=1e-6)
    z = pedalboard.Reverb()(y, 44100)  # a cakfx output goes straight into pedalboard
    assert z.shape == y.shape
    assert isinstance(inner, cakfx.EffectNode) and len(outer) == 2


def test_chain_keeps_float64():
    x = tone(0.05, channels=2, dtype=np.float64)
    y = cakfx.Chain([pedalboard.Gain(0.0), OnePole()])(x, 44100)
    assert y.dtype == np.float64


def test_chain_rejects_non_effects():
    with pytest.raises(TypeError):
        cakfx.Chain([lambda a, sr: a])


def test_empty_input_passes_through():
    x = np.zeros((2, 0), np.float32)
    assert OnePole()(x, 44100).shape == (2, 0)


def test_device_choice(monkeypatch):
    from cakfx.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("CAKFX_DEVICE", "cpu")
    assert resolve_device(None).type == "cpu"
    with pytest.raises(cakfx.CakfxError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(cakfx.CakfxError, match="CUDA is not available"):
            resolve_device("cuda")
