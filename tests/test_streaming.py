"""The streaming contract: ``reset=False`` in any chunking equals one offline call, delayed by
the reported latency; ``render_stream`` equals the offline chain."""

from __future__ import annotations

import doctest

import numpy as np
import pedalboard
import pytest

import cakfx
import cakfx.node
import cakfx.streaming
from cakfx.streaming import render_stream
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
    # a stream's first block fixes its channel count, so it must not be square or look channels-last
    first = max(int(sizes[0]), x.shape[0] + 1)
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
            self.emitted = 0
        buf = np.concatenate([self.history, audio], axis=1)
        self.history = buf[:, buf.shape[1] - 3 * d :]
        out = (buf[:, :n] + buf[:, 2 * d : 2 * d + n]) / 2
        out[:, : max(0, 2 * d - self.emitted)] = 0  # priming: offline output delayed, zeros first
        self.emitted += n
        return out

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
    assert not y[:, :lat].any()  # priming is silence
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


# --- Chain: every stage streams, native pedalboard ones included -------------------------


def delay_by_xcorr(reference: np.ndarray, delayed: np.ndarray) -> int:
    """Lag (in samples) at which ``delayed`` best matches ``reference``, from the cross-correlation."""
    from scipy.signal import fftconvolve

    corr = sum(fftconvolve(delayed[c], reference[c][::-1]) for c in range(reference.shape[0]))
    return int(np.argmax(corr)) - (reference.shape[1] - 1)


def check_streams_like_offline(make_chain, x, sizes, min_snr, buffer_size=8192):
    chain = make_chain()
    offline = chain(x, SR, buffer_size=buffer_size)
    assert offline.shape == x.shape
    streamer = make_chain()
    lat = streamer.latency_samples(SR, buffer_size)
    y = stream(streamer, x, sizes, tail=lat, buffer_size=buffer_size)
    assert streamer.reported_latency_samples == lat
    snr = snr_db(offline, y[:, lat:])
    assert snr >= min_snr, f"SNR {snr:.1f} dB"
    return snr, lat


@pytest.mark.parametrize("sizes", [[1], [511], [8192], RANDOM_SIZES])
def test_chain_with_reverb_streams_like_one_call(sizes):
    snr, lat = check_streams_like_offline(
        lambda: cakfx.Chain([pedalboard.Reverb(room_size=0.8)]), tone(0.6, channels=2), sizes, 100
    )
    assert lat == 0  # pedalboard's Reverb has no latency


@pytest.mark.parametrize("sizes", [[1], [511], [8192], RANDOM_SIZES])
def test_mixed_chain_with_latency_streams_like_one_call(sizes):
    def make():
        return cakfx.Chain(
            [
                pedalboard.Gain(gain_db=-3),
                pedalboard.Resample(target_sample_rate=16000),
                Lookahead(ms=3.0),
                cakfx.Chain([Lookahead(ms=1.0), pedalboard.Compressor(threshold_db=-20)]),
                pedalboard.Delay(delay_seconds=0.05, mix=0.4),
                pedalboard.Reverb(),
            ]
        )

    snr, lat = check_streams_like_offline(make, drums(0.6, channels=2), sizes, 100)
    assert lat > 2 * 132 + 2 * 44  # Resample's delay on top of the two look-aheads


def test_chain_latency_is_the_measured_delay():
    x = drums(1.0, channels=2)
    for items in (
        [Lookahead(ms=5.0)],
        [pedalboard.MP3Compressor(vbr_quality=2)],
        [pedalboard.BrickwallLimiter(ceiling_db=-12, lookahead_ms=5)],
        [pedalboard.Resample(target_sample_rate=22050), Lookahead(ms=2.0), pedalboard.Reverb()],
    ):
        chain = cakfx.Chain(items)
        offline = chain(x, SR)
        lat = chain.latency_samples(SR)
        y = stream(chain, x, [1000], tail=lat)
        assert delay_by_xcorr(offline, y) == lat, items


def test_offline_chain_stays_aligned_with_latent_natives():
    x = tone(0.5, channels=1, freq=1000.0)  # a tone well inside the band, some noise above it
    y = cakfx.Chain([pedalboard.Resample(target_sample_rate=22050)])(x, SR)
    assert delay_by_xcorr(x, y) == 0 and snr_db(x, y) > 12  # the noise above 11 kHz is gone


def test_grouped_native_stage_is_kept_between_calls():
    chain = cakfx.Chain([pedalboard.Gain(), pedalboard.Reverb(), Gain()])
    first = chain.stages()[0]
    chain(tone(0.01), SR, reset=False)
    assert chain.stages()[0] is first and isinstance(first, pedalboard.Pedalboard)
    chain.append(pedalboard.Chorus())
    assert chain.stages()[0] is not first and len(chain.stages()) == 3


def test_pedalboard_refuses_cakfx_nodes():
    # pedalboard's own error (it accepts only native plugins); the README points to cakfx.Chain
    with pytest.raises(TypeError, match="cakfx test.gain"):
        pedalboard.Pedalboard([Gain()])


def test_first_block_of_a_native_stream_must_show_its_layout():
    chain = cakfx.Chain([pedalboard.Reverb()])
    with pytest.raises(cakfx.CakfxError, match="must have more samples than channels, got 2 samples of 2"):
        chain(tone(0.01)[:, :2], SR, reset=False)


# --- render_stream: files in blocks, equal to one offline call ----------------------------


class PeakLevel(cakfx.EffectNode):
    """A level stage that needs the whole signal: scales so the output peak is 0.5.

    Offline it measures its own input; streaming it uses a fixed measurement when it has
    one, else a running peak (which differs from offline until the loudest sample)."""

    name = "test.peak"

    def __init__(self) -> None:
        self.fixed: float | None = None
        self.measuring = False
        self.running = 0.0

    @property
    def needs_measure(self):
        return True

    def begin_measure(self):
        self.fixed, self.measuring, self.running = None, True, 0.0

    def end_measure(self):
        self.fixed, self.measuring = self.running, False

    def forget_measure(self):
        self.fixed = None

    def reset(self):
        self.running = 0.0

    def process_channels(self, audio, sample_rate):
        return audio * np.asarray(0.5 / max(float(np.abs(audio).max()), 1e-9), audio.dtype)

    def stream_channels(self, audio, sample_rate):
        self.running = max(self.running, float(np.abs(audio).max()))
        peak = self.fixed if self.fixed is not None and not self.measuring else self.running
        return audio * np.asarray(0.5 / max(peak, 1e-9), audio.dtype)


def render(chain, x, block_sizes, buffer_size=8192):
    """``render_stream`` from blocks of ``x``; returns the output and how blocks and sink calls
    interleaved (``"r"`` per block read, ``"w"`` per block written)."""
    events, out = [], []

    def blocks():
        for start, stop in chunks(x.shape[1], block_sizes):
            events.append("r")
            yield x[:, start:stop]

    def sink(block):
        events.append("w")
        out.append(block.copy())

    render_stream(chain, blocks, SR, sink, buffer_size=buffer_size)
    return np.concatenate(out, axis=1), "".join(events)


def test_render_stream_docstring_example_runs():
    result = doctest.testmod(cakfx.streaming, raise_on_error=False, verbose=False)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("block_sizes", [[4096], [511], RANDOM_SIZES])
def test_render_stream_equals_offline_with_measuring_levels(block_sizes):
    def make():
        return cakfx.Chain(
            [
                Lookahead(ms=4.0),
                PeakLevel(),
                pedalboard.Reverb(room_size=0.9),
                pedalboard.Resample(target_sample_rate=22050),
                cakfx.Chain([PeakLevel(), Lookahead(ms=1.0)]),
                pedalboard.Delay(delay_seconds=0.03, mix=0.3),
            ]
        )

    x = drums(1.0, channels=2) * np.linspace(0.2, 1.0, SR, dtype=np.float32)  # loudest at the end
    offline = make()(x, SR)
    chain = make()
    y, events = render(chain, x, block_sizes, buffer_size=1024)
    assert y.shape == x.shape
    assert snr_db(offline, y) > 100
    # three passes (two measuring, one rendering), and output written while reading
    assert events.count("r") == 3 * len(chunks(x.shape[1], block_sizes))
    assert "rw" in events and events.index("w") < len(events) - events[::-1].index("r")
    assert chain[1].fixed is None  # measurements forgotten afterwards
    # without the measuring pass the running peak is wrong early on: the passes matter
    live = stream(make(), x, block_sizes, tail=chain.latency_samples(SR), buffer_size=1024)
    assert snr_db(offline, live[:, chain.latency_samples(SR) :]) < 40


def test_render_stream_ends_like_offline_after_a_ringing_stage():
    # offline, the look-ahead after the reverb hears silence past the end, not the tail
    def make():
        return cakfx.Chain([pedalboard.Reverb(room_size=0.95), Lookahead(ms=5.0), pedalboard.Chorus()])

    x = drums(0.5, channels=2)
    y, _ = render(make(), x, [1000])
    assert snr_db(make()(x, SR), y) > 100


def test_render_stream_takes_a_bare_plugin_and_mono_blocks():
    x = tone(0.3, channels=1)
    y, _ = render(pedalboard.MP3Compressor(), x, [777])
    assert y.shape == x.shape and snr_db(pedalboard.MP3Compressor()(x, SR), y) > 100


def test_render_stream_of_nothing_writes_nothing():
    out = []
    render_stream(cakfx.Chain([Lookahead()]), lambda: iter(()), SR, out.append)
    assert out == []


def test_readme_streaming_example_runs():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = (
        readme.split("<!-- runnable: streaming-file -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    )
    exec(compile(block, "README.md (streaming-file)", "exec"), {})


def test_render_stream_holds_short_inputs_and_renders_them_once():
    def make():
        return cakfx.Chain([Lookahead(ms=4.0), PeakLevel(), pedalboard.Reverb(room_size=0.9), PeakLevel()])

    x = drums(1.0, channels=2) * np.linspace(0.2, 1.0, SR, dtype=np.float32)
    streamed, events = render(make(), x, [511], buffer_size=1024)
    sizes = [511]
    reads = len(chunks(x.shape[1], sizes))
    assert events.count("r") == 3 * reads  # two measuring passes, then the render

    chain, out, events = make(), [], []

    def blocks():
        for start, stop in chunks(x.shape[1], sizes):
            events.append("r")
            yield x[:, start:stop]

    render_stream(chain, blocks, SR, out.append, buffer_size=1024, hold=x.size)
    held = np.concatenate(out, axis=1)
    assert events.count("r") == reads  # one read, one offline call
    assert held.shape == x.shape
    assert snr_db(make()(x, SR), held) > 100 and snr_db(streamed, held) > 100

    # one sample more than it may hold: it streams (after one partial read)
    events.clear()
    out.clear()
    render_stream(make(), blocks, SR, out.append, buffer_size=1024, hold=x.size - 1)
    assert reads * 3 < events.count("r") <= reads * 4
    assert snr_db(streamed, np.concatenate(out, axis=1)) > 100


def test_render_stream_does_not_hold_stages_that_stream_differently():
    x = tone(0.5, channels=1)
    results = []
    for hold in (0, x.size):
        out = []
        blocks = lambda: (x[:, a : a + 1024] for a in range(0, x.shape[1], 1024))  # noqa: E731
        render_stream(cakfx.Chain([pedalboard.GSMFullRateCompressor()]), blocks, SR, out.append,
                      buffer_size=1024, hold=hold)
        results.append(np.concatenate(out, axis=1))
    assert np.array_equal(results[0], results[1])  # the stream, not the offline call
    assert snr_db(pedalboard.GSMFullRateCompressor()(x, SR), results[1]) < 100


def test_spool_reads_back_in_any_chunking_and_refuses_to_pass_its_limit():
    from cakfx.streaming import Spool

    x = np.random.default_rng(3).normal(size=(3, 1000)).astype(np.float32)
    spool = Spool(3, limit=3 * 1000 * 4)
    for a in range(0, 1000, 333):
        spool.push(x[:, a : a + 333])
    with pytest.raises(OSError, match="limit"):
        spool.push(x[:, :1])
    parts = [spool.pop(n) for n in (1, 500, 77, 5000)]
    assert np.array_equal(np.concatenate(parts, axis=1), x) and spool.size == 0
    spool.close()
