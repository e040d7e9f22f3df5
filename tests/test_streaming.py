"""The streaming contract: ``reset=False`` in any chunking equals one offline call, delayed by
the reported latency; ``render_stream`` equals the offline chain."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import cakfx
import cakfx.node
from tests.signals import drums, tone

SR = 44100


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    err = np.sum((np.asarray(reference, np.float64) - test) ** 2)
    return float(10 * np.log10(np.sum(np.asarray(reference, np.float64) ** 2) / max(err, 1e-300)))


def chunks(n: int, sizes) -> list[tuple[int, int]]:
    """``(start, stop)`` spans covering ``n`` samples, cycling through ``sizes``."""
    spans, start, i = [], 0, 0
    while start < n:
        stop = min(n, start + sizes[i % len(sizes)])
        spans.append((start, stop))
        start, i = stop, i + 1
    return spans


def stream(node, x: np.ndarray, sizes, sr: int = SR, tail: int = 0, buffer_size: int = 8192) -> np.ndarray:
    """Feed ``x`` (plus ``tail`` zeros) through ``node`` with ``reset=False`` in chunks."""
    x = np.concatenate([x, np.zeros((x.shape[0], tail), x.dtype)], axis=1)
    parts = []
    # a stream's first block fixes its channel count, so it must not look channels-last
    first = max(int(sizes[0]), x.shape[0])
    spans = [(0, first)] + [(a + first, b + first) for a, b in chunks(x.shape[1] - first, sizes)]
    for start, stop in spans:
        y = node(x[:, start:stop], sr, buffer_size=buffer_size, reset=False)
        assert y.shape == (x.shape[0], stop - start)
        parts.append(y)
    return np.concatenate(parts, axis=1)


RANDOM_SIZES = list(np.random.default_rng(7).integers(1, 3000, 64))


class Gain(cakfx.EffectNode):
    """Stateless, no latency: streams through the default ``stream_channels``."""

    name = "test.gain"

    def __init__(self, gain: float = 0.5) -> None:
        self.gain = gain

    def process_channels(self, audio, sample_rate):
        return audio * np.asarray(self.gain, audio.dtype)


class Lookahead(cakfx.EffectNode):
    """State and latency: y[n] = (x[n - d] + x[n + d]) / 2 offline (zeros outside), so streaming
    needs ``2 d`` samples of latency."""

    name = "test.lookahead"

    def __init__(self, ms: float = 2.0) -> None:
        self.ms = ms
        self.history = None

    def _d(self, sr):
        return int(round(self.ms * sr / 1000))

    def latency_samples(self, sample_rate):
        return 2 * self._d(sample_rate)

    def process_channels(self, audio, sample_rate):
        d = self._d(sample_rate)
        padded = np.pad(audio, ((0, 0), (d, d)))
        return (padded[:, : audio.shape[1]] + padded[:, 2 * d :]) / 2

    def stream_channels(self, audio, sample_rate):
        # output n = offline[n - 2d] = (x[n - 3d] + x[n - d]) / 2: keep the last 3d inputs
        d, n = self._d(sample_rate), audio.shape[1]
        if self.history is None:
            self.history = np.zeros((audio.shape[0], 3 * d), audio.dtype)
        buf = np.concatenate([self.history, audio], axis=1)
        self.history = buf[:, buf.shape[1] - 3 * d :]
        return (buf[:, :n] + buf[:, 2 * d : 2 * d + n]) / 2

    def reset(self):
        self.history = None


def test_node_docstring_example_runs():
    result = doctest.testmod(cakfx.node, raise_on_error=False, verbose=False)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize("sizes", [[1], [511], [8192], RANDOM_SIZES])
def test_stateless_node_streams_by_default(sizes):
    x = tone(0.3, channels=2)
    node = Gain()
    np.testing.assert_array_equal(stream(node, x, sizes), node(x, SR))
    assert node.reported_latency_samples == 0


def test_reported_latency_is_at_the_last_sample_rate():
    node = Lookahead(ms=2.0)
    assert node.reported_latency_samples == 0  # nothing processed yet
    node(tone(0.01), 48000)
    assert node.reported_latency_samples == 192 == node.latency_samples(48000)
    node(tone(0.01), 44100, reset=False)
    assert node.reported_latency_samples == 2 * 88
    with pytest.raises(AttributeError):
        node.reported_latency_samples = 3


@pytest.mark.parametrize("sizes", [[1], [511], [8192], RANDOM_SIZES])
@pytest.mark.parametrize("channels", [1, 2])
def test_latency_node_streams_offline_output_delayed(sizes, channels):
    x = drums(0.4, channels=channels)
    node = Lookahead()
    offline = node(x, SR)
    lat = node.latency_samples(SR)
    y = stream(node, x, sizes, tail=lat)
    assert snr_db(offline, y[:, lat:]) > 140


def test_format_change_starts_a_new_stream():
    node, x = Lookahead(), drums(0.1, channels=2)
    lat = node.latency_samples(SR)
    node(x, SR, reset=False)
    # one channel instead of two: a fresh stream (no history of the first one)
    y = node(x[:1], SR, reset=False)
    np.testing.assert_array_equal(y, Lookahead()(x[:1], SR, reset=False))
    np.testing.assert_allclose(y[:, lat:], node(x[:1], SR)[:, : x.shape[1] - lat], atol=1e-7)


def test_bad_buffer_size_is_one_clear_error():
    with pytest.raises(cakfx.CakfxError, match="buffer size must be at least 1, got 0"):
        Gain()(tone(0.01), SR, buffer_size=0)


def test_measure_protocol_defaults():
    node = Gain()
    assert node.needs_measure is False
    node.begin_measure()
    node.end_measure()
    node.forget_measure()
