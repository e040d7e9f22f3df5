"""The limiter's and meters' shortcuts give what the plain computation gives: the sidechain
oversampled only near the ceiling, cached release decays, one pass for signal and tail, block
peaks by ``reduceat``, the drive search's peaks held once, the meter's float32 search."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cakfx.dsp import limiter
from cakfx.dsp.level import LevelStage
from cakfx.dsp.limiter import (
    HALF_SPAN,
    BlockPeaks,
    TruePeakLimiter,
    held_block_peaks,
    limit,
    limited_loudness,
    release_curve,
)
from cakfx.dsp.loudness import (
    LoudnessMeter,
    PeakMeter,
    oversampled_magnitude,
    true_peak_db,
)
from tests.signals import drums
from tests.test_loudness import oversampled_peak_everywhere
from tools import demo

SR = 44100
STEP = limiter.CHUNK


def hot_mix(seconds: float = 3.0, over_db: float = 4.0) -> np.ndarray:
    """Stereo drum loop over a chord pad, true peak ``over_db`` over -1 dBTP."""
    d, pad = demo.drum_loop(seconds), demo.chord_pad(seconds)
    n = min(d.shape[-1], pad.shape[-1])
    mix = d[..., :n] + pad[..., :n]
    return (mix / 10 ** (true_peak_db(mix) / 20) * 10 ** ((-1.0 + over_db) / 20)).astype(np.float32)


def edge_cases() -> dict[str, np.ndarray]:
    """Signals where the segment bookkeeping could go wrong (two steps long, most of them)."""
    n = 2 * STEP + 5000
    rng = np.random.default_rng(4)
    quiet = rng.normal(0, 0.01, (2, n))
    cases = {"silence": np.zeros((2, n), np.float32), "dc": np.full((1, n), 0.95)}
    square = np.sign(np.sin(2 * np.pi * 110 * np.arange(n) / SR))[None]
    cases["full-scale square"] = np.repeat(square, 2, axis=0)
    for at in (STEP - 1, STEP, STEP + 1, STEP - HALF_SPAN, 50, 63, 64, STEP + 50, n - 1):  # steps, segments
        x = quiet.copy()
        x[at % 2, at] = 1.3
        if at + 1 < n:
            x[at % 2, at + 1] = -1.3  # an inter-sample over
        cases[f"click at {at}"] = x
    nan = quiet * 40
    nan[0, STEP + 3] = np.nan
    nan[1, 7] = np.inf
    cases["NaN and inf"] = nan
    return cases


def dense(monkeypatch) -> None:
    monkeypatch.setattr(limiter, "DENSE_SHARE", -1.0)  # every step oversampled whole


def segmented(monkeypatch) -> None:
    monkeypatch.setattr(limiter, "DENSE_SHARE", 2.0)  # only the segments near the ceiling


@pytest.mark.parametrize("name", [*edge_cases(), "drums+pad", "drums quiet", "drums 96 kHz"])
def test_the_sidechain_near_the_ceiling_gives_the_dense_sidechains_output(name, monkeypatch):
    if name == "drums+pad":
        x, sr = hot_mix(), SR
    elif name == "drums quiet":
        x, sr = drums(3.0, SR, channels=2) * 0.2, SR
    elif name == "drums 96 kHz":
        x, sr = drums(1.5, 96000, channels=2) * 3, 96000
    else:
        x, sr = edge_cases()[name], SR
    dense(monkeypatch)
    want = limit(x, -1.0, sr)
    segmented(monkeypatch)
    got = limit(x, -1.0, sr)
    assert np.array_equal(got, want, equal_nan=True)
    if np.isfinite(x).all():
        assert true_peak_db(got) <= -1.0


def test_the_oversampled_values_near_the_ceiling_are_the_dense_ones():
    x = hot_mix(2.0).astype(np.float64)
    xs = np.concatenate([np.zeros((2, 2 * HALF_SPAN)), x[:, : STEP // 2]], axis=1)
    magnitude = np.abs(xs).max(axis=0)
    everywhere = oversampled_magnitude(xs, "float32").max(axis=0).astype(np.float64)
    for ceiling in (0.2, 0.6, 0.95):
        near = limiter._oversampled_near(xs, magnitude, ceiling)
        computed = near > 0
        assert 0 < computed.mean() < 1  # some segments skipped
        assert np.array_equal(near[computed], everywhere[computed])
        assert (everywhere[~computed] <= ceiling).all()  # nothing skipped could reach it


def test_one_pass_with_the_tail_equals_streaming_block_by_block():
    x = hot_mix(2.0)
    lim = TruePeakLimiter(-1.0, SR, 2)
    padded = np.pad(x, ((0, 0), (0, lim.latency)))
    streamed = np.concatenate([lim.process(padded[:, a : a + 3000]) for a in range(0, padded.shape[1], 3000)],
                              axis=1)[:, lim.latency :]
    offline = limit(x, -1.0, SR)
    assert np.abs(streamed.astype(np.float64) - offline).max() <= 1e-6
    assert limit(np.zeros((2, 0), np.float32), -1.0, SR).shape == (2, 0)
    quiet = x * 0.1
    out = limit(quiet, -1.0, SR)
    assert np.array_equal(out, quiet) and out is not quiet


def test_the_cached_release_decays_are_each_power_computed_alone():
    alpha = math.exp(-1.0 / 4410.0)
    limiter._decays.clear()
    short = limiter._decay(alpha, 100).copy()
    long = limiter._decay(alpha, STEP)
    assert np.array_equal(long[:100], short)
    assert np.array_equal(long, alpha ** np.arange(1, STEP + 1))
    held = np.zeros(5000)
    held[[10, 2000, 2001]] = [3.0, 6.0, 1.0]
    d, state = release_curve(held, alpha)
    decay = alpha ** np.arange(1, held.size + 1)
    e = decay * np.maximum.accumulate(np.maximum((held + 0.1) / decay, 0.1))
    e[0] = max(held[0] + 0.1, alpha * 0.1)
    want = e - 0.1
    want[want < 1e-9] = 0.0
    assert np.array_equal(d, want) and state == float(want[-1] + 0.1)


def test_block_peaks_by_reduceat_are_the_plain_block_maxima():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64, np.int16):
        x = (rng.normal(0, 0.3, (2, 10_000)) * (3000 if dtype == np.int16 else 1)).astype(dtype)
        peaks = BlockPeaks(64)
        for a in range(0, x.shape[1], 777):
            peaks.process(x[:, a : a + 777])
        magnitude = np.abs(x.astype(np.float64)).max(axis=0)
        whole = magnitude[: 10_000 // 64 * 64].reshape(-1, 64).max(axis=1)
        want = np.concatenate([whole, [magnitude[10_000 // 64 * 64 :].max()]])
        assert np.array_equal(peaks.peaks_db, 20 * np.log10(want))


def test_the_drive_search_holds_the_peaks_once_with_the_same_estimate():
    x = hot_mix(3.0, over_db=6.0)
    meter = LoudnessMeter(SR, 2, record=64)
    meter.process(x)
    peaks = BlockPeaks(64)
    peaks.process(x)
    held = held_block_peaks(peaks.peaks_db, SR, 64)
    for gain_db in (-3.0, 0.0, 2.5):
        plain = limited_loudness(meter.recorded_powers, peaks.peaks_db, gain_db, -1.0, SR, 64)
        assert limited_loudness(meter.recorded_powers, held, gain_db, -1.0, SR, 64, held=True) == plain


def test_the_level_stage_cleans_non_finite_output_into_a_copy():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, (2, SR)).astype(np.float32)
    y = x * 2
    y[0, 100], y[1, 200] = np.nan, np.inf
    before = y.copy()
    out = LevelStage("match").apply(x, y, SR)
    assert np.isfinite(out).all() and out[0, 100] == 0.0 and out[1, 200] == 0.0
    assert np.array_equal(y, before, equal_nan=True)  # the caller's array untouched
    off = LevelStage("off")
    clean = x * 0.5
    assert off.apply(x, clean, SR) is not clean


@pytest.mark.parametrize("name", ["full-scale square", "click at 32767", "click at 64", "dc", "limited"])
def test_the_meters_float32_search_finds_float64s_true_peak(name):
    if name == "limited":
        x = limit(hot_mix(2.0, over_db=6.0), -1.0, SR).astype(np.float64)  # dense peaks at the ceiling
    else:
        x = edge_cases()[name]
    expected = oversampled_peak_everywhere(x)
    assert true_peak_db(x) == pytest.approx(expected, abs=1e-9)
    meter = PeakMeter(x.shape[0])
    for a in range(0, x.shape[1], 5003):
        meter.process(x[:, a : a + 5003])
    assert meter.true_peak_db == pytest.approx(expected, abs=1e-9)
    assert meter.clipped == int(np.count_nonzero(np.abs(x) > 1.0))
    whole = PeakMeter(x.shape[0])  # one block longer than the meter's internal steps
    whole.process(np.concatenate([x, x[:, ::-1]], axis=1).astype(np.float32))
    assert whole.true_peak_db == pytest.approx(oversampled_peak_everywhere(
        np.concatenate([x, x[:, ::-1]], axis=1).astype(np.float32)), abs=1e-9)


def test_the_limiter_decision_asks_the_model_bands_true_peak_as_the_bound_does():
    from cakfx.dsp.level import _peak_bound_db, _peak_bound_exceeds

    rng = np.random.default_rng(8)
    model = rng.normal(0, 0.1, (2, 20_000))
    model[1, 12_345] = 0.6
    peak = true_peak_db(model)
    for high_peak_db in (-math.inf, -30.0, -6.0, -1.0, 0.0):
        for gain_db in (-12.0, -3.0, 0.0, 3.0):
            bound = _peak_bound_db(gain_db, peak, high_peak_db)
            for ceiling_db in (bound - 1e-6, bound + 1e-6, bound - 0.5, -6.0, -1.0, -0.5):
                assert _peak_bound_exceeds(model, gain_db, high_peak_db, ceiling_db) == (bound > ceiling_db)
