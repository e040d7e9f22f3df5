"""soxr resampling, its streaming form and the band split, on signals made here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from cakfx.dsp.resample import HighBand, StreamResampler, band_split, high_band, output_length, resample


def tones(freqs_amps, seconds, sr, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = sum(a * np.sin(2 * np.pi * f * t + f) for f, a in freqs_amps)
    return np.repeat(x[None], channels, axis=0).astype(np.float32)


def level_at(x, sr, freq, width=30.0):
    """Peak spectrum level (dB) within ``width`` Hz of ``freq``, Kaiser(20) window: ~150 dB range."""
    w = signal.windows.kaiser(x.shape[-1], 20.0)
    spec = np.abs(np.fft.rfft(x[0] * w)) / w.sum() * 2
    f = np.fft.rfftfreq(x.shape[-1], 1 / sr)
    band = (f > freq - width) & (f < freq + width)
    return 20 * np.log10(spec[band].max() + 1e-300)


def program(seconds, sr, seed=0):
    """Tones across the band plus noise low-passed at 18 kHz: 'music' the model band holds."""
    rng = np.random.default_rng(seed)
    lowpass = signal.butter(8, 18000, fs=sr, output="sos")
    noise = signal.sosfilt(lowpass, rng.normal(0, 0.05, int(seconds * sr)))[None].astype(np.float32)
    return tones([(220, 0.2), (1000, 0.1), (5000, 0.05), (15000, 0.03)], seconds, sr) + noise


def test_lengths_types_and_identity():
    x = np.random.default_rng(0).normal(size=(2, 3, 1001)).astype(np.float32)
    assert resample(x, 44100, 96000).shape == (2, 3, output_length(1001, 44100, 96000)) == (2, 3, 2180)
    assert resample(x, 96000, 44100, length=500).shape == (2, 3, 500)
    assert resample(x, 96000, 44100, length=5000)[..., 460:].max() == 0.0  # zero-padded past the end
    assert np.array_equal(resample(x, 48000, 48000), x)
    t = torch.from_numpy(x).double()
    y = resample(t, 44100, 48000)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and y.shape[-1] == 1090
    assert np.allclose(y.numpy(), resample(x.astype(np.float64), 44100, 48000))


@pytest.mark.parametrize("orig,new", [(96000, 44100), (44100, 96000), (48000, 44100), (44100, 88200)])
def test_time_aligned(orig, new):
    x = tones([(1000, 0.5)], 1.0, orig)
    y = resample(x, orig, new)
    expected = tones([(1000, 0.5)], 1.0, new)
    # away from the abrupt start and end, where the band-limited version rings
    assert np.abs(y[0, 200:-200] - expected[0, 200 : y.shape[1] - 200]).max() < 1e-4  # no phase offset


def test_band_split_keeps_the_30k_tone_and_the_program():
    sr = 96000
    prog = program(2.0, sr)
    tone = tones([(30000, 0.1)], 2.0, sr)
    x = prog + tone
    low, high = band_split(x, sr)
    assert np.abs(low + high - x).max() < 1e-6
    assert np.array_equal(band_split(x, sr, down=resample(x, sr, 44100))[1], high)
    # the model path (here: a -6 dB gain at 44.1 kHz) plus the high band: the 30 kHz tone is kept
    processed = resample(0.5 * resample(x, sr, 44100), 44100, sr, length=x.shape[1]) + high
    assert abs(level_at(processed, sr, 30000) - level_at(x, sr, 30000)) < 1.0
    assert abs(level_at(processed, sr, 1000) - (level_at(x, sr, 1000) - 6.02)) < 0.1
    # the high band carries no program: the 15 kHz tone is > 80 dB down in it
    assert level_at(high, sr, 15000) < level_at(x, sr, 15000) - 80
    assert level_at(low, sr, 30000) < level_at(x, sr, 30000) - 90
    # at or below the model's rate there is nothing to split off
    low44, high44 = band_split(prog[:, :44100], 44100)
    assert np.array_equal(low44, prog[:, :44100]) and not high44.any()


def test_no_aliasing_or_imaging():
    # down: a 30 kHz tone at 96 kHz would alias to 14.1 kHz at 44.1 kHz
    x = tones([(30000, 0.5), (1000, 0.5)], 1.0, 96000)
    y = resample(x, 96000, 44100)
    assert level_at(y, 44100, 14100) < level_at(y, 44100, 1000) - 90
    # up: a 15 kHz tone at 44.1 kHz would image at 29.1 kHz at 96 kHz
    x = tones([(15000, 0.5)], 1.0, 44100)
    y = resample(x, 44100, 96000)
    assert level_at(y, 96000, 29100) < level_at(y, 96000, 15000) - 90
    assert abs(level_at(y, 96000, 15000) - level_at(x, 44100, 15000)) < 0.05


def stream_all(process, x, sizes):
    out, a = [], 0
    for size in sizes:
        if a >= x.shape[1]:
            break
        out.append(process(x[:, a : a + size]))
        a += size
    return out


@pytest.mark.parametrize("orig,new", [(96000, 44100), (44100, 96000), (88200, 44100), (44100, 48000)])
def test_stream_equals_offline_delayed(orig, new):
    x = program(1.5, orig)
    x = np.concatenate([x, 0.7 * x[:, ::-1]])  # two different channels
    offline = resample(x, orig, new)
    rng = np.random.default_rng(0)
    for sizes in ([511] * 10**4, [8192] * 10**3, rng.integers(1, 20000, 10**3)):
        rs = StreamResampler(orig, new, channels=2)
        out = np.concatenate(stream_all(rs.process, x, sizes), axis=1)
        lat = rs.latency
        assert lat % rs.period == 0 and out.shape[1] == x.shape[1] * new // orig
        assert not out[:, :lat].any()
        assert np.abs(out[:, lat:] - offline[:, : out.shape[1] - lat]).max() < 1e-6


def test_stream_sample_by_sample_and_reset():
    x = program(0.1, 96000)
    rs = StreamResampler(96000, 44100, channels=1)
    first = np.concatenate(stream_all(rs.process, x, [1] * x.shape[1]), axis=1)
    rs.reset()
    second = rs.process(x)
    assert np.array_equal(first, second)
    offline = resample(x, 96000, 44100)
    assert np.abs(first[:, rs.latency :] - offline[:, : first.shape[1] - rs.latency]).max() < 1e-6


@pytest.mark.parametrize("sr", [96000, 88200])
def test_high_band_stream_equals_band_split_delayed(sr):
    x = program(1.0, sr) + tones([(30000, 0.1)], 1.0, sr)
    x = np.concatenate([x, -x])
    low, high = band_split(x, sr)
    hb = HighBand(sr, channels=2)
    lat = hb.latency_samples(sr)
    rng = np.random.default_rng(1)
    parts = stream_all(hb.stream, x, rng.integers(1, 9000, 1000))
    s_low = np.concatenate([p[0] for p in parts], axis=1)
    s_high = np.concatenate([p[1] for p in parts], axis=1)
    assert s_low.shape == x.shape
    m = x.shape[1] - lat - 2000  # the offline ends see the signal's end, the stream has not yet
    assert np.abs(s_low[:, lat : lat + m] - low[:, :m]).max() < 1e-6
    assert np.abs(s_high[:, lat : lat + m] - high[:, :m]).max() < 1e-6
    delayed = np.pad(x, ((0, 0), (lat, 0)))[:, : x.shape[1]]
    assert np.abs(s_low + s_high - delayed).max() < 1e-6  # the two bands sum to the input, delayed


@pytest.mark.parametrize("sr", [48000, 96000, 88200])
@pytest.mark.parametrize("n", [1, 300, 4410, 30011])
def test_high_band_equals_the_stream_run_over_the_whole_signal(sr, n):
    # high_band computes in two soxr calls what HighBand streams in pieces: the same samples
    x = np.random.default_rng(n).normal(0, 0.3, (2, n)).astype(np.float32)
    hb = HighBand(sr, channels=2)
    flushed = np.pad(x, ((0, 0), (0, hb.latency)))
    streamed = np.concatenate(stream_all(lambda b: hb.stream(b)[1], flushed, [4096] * 64), axis=1)
    assert np.array_equal(high_band(x, sr), streamed[:, hb.latency :])


def test_stream_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="expects"):
        StreamResampler(96000, 44100, channels=2).process(np.zeros((1, 10)))
