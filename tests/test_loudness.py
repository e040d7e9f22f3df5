"""Loudness and peak meters on signals made here: reference levels, streaming == whole signal."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
import torch

from cakfx.dsp.loudness import (
    LoudnessMeter,
    PeakMeter,
    clipped_samples,
    integrated_loudness,
    sample_peak_db,
    true_peak_db,
)
from tests.signals import drums


def sine(freq, seconds, sr, amplitude, phase=0.0, channels=1):
    t = np.arange(int(round(seconds * sr))) / sr
    return np.repeat((amplitude * np.sin(2 * np.pi * freq * t + phase))[None], channels, axis=0)


def program(seconds, sr, seed=0):
    """Stereo noise with a swelling envelope and a quiet gap: exercises both gates."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    env = np.linspace(0.02, 1.0, n) ** 2
    env[n // 3 : n // 3 + sr // 2] = 1e-4
    return rng.normal(0, 0.2, (2, n)) * env


def chunked(meter, x, sizes):
    a = 0
    for size in sizes:
        if a >= x.shape[1]:
            break
        meter.process(x[:, a : a + size])
        a += size
    meter.process(x[:, a:])
    return meter


def test_standard_sine_reads_minus_23_lufs():
    x = sine(997, 10.0, 48000, 10 ** (-20 / 20))
    assert integrated_loudness(x, 48000) == pytest.approx(-23.0, abs=0.1)
    assert sample_peak_db(x) == pytest.approx(-20.0, abs=1e-3)


def test_integrated_loudness_is_pyloudnorms_and_scales_with_gain():
    x = program(5.0, 44100)
    ref = pyloudnorm.Meter(44100).integrated_loudness(x.T.copy())
    assert integrated_loudness(x, 44100) == pytest.approx(ref, abs=1e-9)
    assert integrated_loudness(0.5 * x, 44100) == pytest.approx(ref - 6.02, abs=0.01)
    # torch tensors and float32 are read the same way
    assert integrated_loudness(torch.from_numpy(x.astype(np.float32)), 44100) == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 96000])
def test_loudness_meter_equals_whole_signal_on_random_chunks(sr):
    x = program(3.3, sr, seed=sr)
    ref = pyloudnorm.Meter(sr).integrated_loudness(x.T.copy())
    rng = np.random.default_rng(1)
    for sizes in ([511] * 10**4, [8192] * 10**3, rng.integers(1, 20000, 10**4)):
        meter = chunked(LoudnessMeter(sr, 2), x, sizes)
        assert meter.loudness == pytest.approx(ref, abs=0.05)
        assert meter.samples == x.shape[1]


def test_loudness_meter_sample_by_sample():
    sr = 8000
    x = program(1.3, sr, seed=3)
    meter = chunked(LoudnessMeter(sr, 2), x, [1] * x.shape[1])
    assert meter.loudness == pytest.approx(pyloudnorm.Meter(sr).integrated_loudness(x.T.copy()), abs=0.05)


def test_gates_ignore_silence_and_quiet_passages():
    sr = 44100
    loud = sine(997, 2.0, sr, 0.1)
    with_gap = np.concatenate([loud, np.zeros((1, 5 * sr)), 1e-3 * loud], axis=1)
    # the silent and -80 dBFS parts are gated out (only the blocks straddling the edge count,
    # -0.34 LU); ungated, the mean square would be 5.4 dB lower
    assert integrated_loudness(with_gap, sr) == pytest.approx(integrated_loudness(loud, sr), abs=0.5)


def test_silence_and_sub_gate_material_read_minus_inf():
    sr = 44100
    assert integrated_loudness(np.zeros((2, sr)), sr) == -math.inf
    assert integrated_loudness(np.zeros((2, 100)), sr) == -math.inf
    assert integrated_loudness(sine(997, 1.0, sr, 1e-5), sr) == -math.inf  # below -70 LUFS
    assert sample_peak_db(np.zeros((1, 10))) == -math.inf
    assert true_peak_db(np.zeros((1, 10))) == -math.inf


def test_short_material_falls_back_to_k_weighted_rms():
    sr = 48000
    short = sine(997, 0.2, sr, 0.1)
    level = integrated_loudness(short, sr)
    assert level == pytest.approx(-23.0, abs=0.3)  # reads like LUFS on the same tone
    assert integrated_loudness(2 * short, sr) == pytest.approx(level + 6.02, abs=0.01)
    meter = chunked(LoudnessMeter(sr, 1), short, [100] * 1000)
    assert meter.loudness == pytest.approx(level, abs=1e-9)


def test_true_peak_of_quarter_rate_sine_is_3_db_over_its_samples():
    n = np.arange(48000)
    x = (np.sin(2 * np.pi * n / 4 + np.pi / 4) / np.sin(np.pi / 4))[None]  # samples at ±1.0
    assert sample_peak_db(x) == pytest.approx(0.0, abs=1e-6)
    assert true_peak_db(x) == pytest.approx(3.01, abs=0.1)
    # a low tone has no inter-sample peaks
    low = sine(100, 1.0, 48000, 0.5)
    assert true_peak_db(low) == pytest.approx(sample_peak_db(low), abs=0.02)


def test_peak_meter_equals_whole_signal_on_any_chunking():
    x = drums(1.0, 44100, channels=2).astype(np.float64) * 2.5  # overs on the kicks
    whole = (sample_peak_db(x), true_peak_db(x), clipped_samples(x))
    assert whole[2] > 0 and whole[1] >= whole[0]
    rng = np.random.default_rng(0)
    for sizes in ([1] * x.shape[1], [511] * 100, [8192] * 10, rng.integers(1, 5000, 100)):
        meter = chunked(PeakMeter(2), x, sizes)
        assert (meter.sample_peak_db, meter.clipped) == (whole[0], whole[2])
        assert meter.true_peak_db == pytest.approx(whole[1], abs=1e-9)


def test_clipped_samples_counts_samples_over_the_limit():
    x = np.array([[0.2, 1.0, -1.5, 1.01], [0.0, -0.99, 2.0, 0.3]])
    assert clipped_samples(x) == 3
    assert clipped_samples(x, limit=0.5) == 5


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match="NaN or infinite"):
        integrated_loudness(np.array([[0.0, np.nan]]), 44100)
    with pytest.raises(ValueError, match="channels"):
        LoudnessMeter(44100, 2).process(np.zeros((1, 10)))


@pytest.mark.parametrize("sr, channels, seconds", [(22050, 1, 2.5), (44100, 2, 7.3), (48000, 5, 1.1),
                                                   (96000, 2, 0.9)])
def test_integrated_loudness_equals_pyloudnorm_across_rates_and_layouts(sr, channels, seconds):
    rng = np.random.default_rng(sr + channels)
    n = int(seconds * sr)
    x = rng.normal(0, 0.1, (channels, n)) * np.linspace(0.05, 1.0, n) ** 3
    x[:, n // 2 : n // 2 + sr // 3] *= 1e-3  # a quiet stretch for the relative gate
    ref = pyloudnorm.Meter(sr).integrated_loudness(x.T.copy())
    assert integrated_loudness(x, sr) == pytest.approx(ref, abs=0.01)
    assert integrated_loudness(x.astype(np.float32), sr) == pytest.approx(ref, abs=0.01)


def oversampled_peak_everywhere(x: np.ndarray) -> float:
    """BS.1770 true peak straight from the definition: every phase at every position, ring-out included."""
    from cakfx.dsp.loudness import OVERSAMPLE, TRUE_PEAK_FIR

    peak = float(np.abs(x).max())
    for row in np.asarray(x, np.float64):
        for p in range(OVERSAMPLE):
            peak = max(peak, float(np.abs(np.convolve(row, TRUE_PEAK_FIR[p::OVERSAMPLE], "full")).max()))
    return 20 * math.log10(peak)


def test_true_peak_skips_only_stretches_that_cannot_hold_it():
    sr = 44100
    rng = np.random.default_rng(5)
    quiet_with_click = rng.normal(0, 0.01, (2, 3 * sr))
    quiet_with_click[1, 2 * sr + 17 : 2 * sr + 19] = [0.7, -0.7]  # one inter-sample over in quiet noise
    near_ceiling = np.clip(drums(2.0, sr, channels=2).astype(np.float64) * 4, -0.9, 0.9)  # dense peaks
    tone_at_quarter_rate = (np.sin(2 * np.pi * np.arange(sr) / 4 + np.pi / 4) * 0.5)[None]
    for x in (quiet_with_click, near_ceiling, tone_at_quarter_rate):
        expected = oversampled_peak_everywhere(x)
        assert true_peak_db(x) == pytest.approx(expected, abs=1e-9)
        meter = chunked(PeakMeter(x.shape[0]), x, np.random.default_rng(0).integers(1, 9000, 1000))
        assert meter.true_peak_db == pytest.approx(expected, abs=1e-9)
    assert oversampled_peak_everywhere(quiet_with_click) > sample_peak_db(quiet_with_click) + 0.5


def test_true_peak_exceeds_answers_like_the_meter():
    from cakfx.dsp.loudness import true_peak_exceeds

    sr = 44100
    rng = np.random.default_rng(9)
    click = rng.normal(0, 0.01, (2, 2 * sr))
    click[0, sr + 5 : sr + 7] = [0.6, -0.6]  # its true peak is between samples
    limited = np.clip(drums(1.5, sr, channels=2).astype(np.float64) * 4, -0.8, 0.8)
    for x in (click, limited, program(2.0, sr), np.zeros((1, 100))):
        peak = true_peak_db(x)
        for db in (peak - 0.5, peak - 1e-6, peak + 1e-6, peak + 0.5, -1.0, -60.0):
            if math.isfinite(db):
                assert true_peak_exceeds(x, db) == (peak > db), (peak, db)
    assert true_peak_exceeds(click, sample_peak_db(click) + 0.1)  # found between samples
