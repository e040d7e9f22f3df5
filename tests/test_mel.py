"""The grain model's mel front end against librosa (a test-only reference) and the original's tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cakfx.dsp import mel
from cakfx.dsp.stft import istft, stft
from tests.signals import drums, tone

librosa = pytest.importorskip("librosa")


@pytest.mark.parametrize("sr", [16000, 22050, 44100, 48000])
@pytest.mark.parametrize("n_mels,fmin,fmax", [(128, 0.0, None), (64, 30.0, 8000.0)])
def test_filterbank_matches_librosa(sr, n_mels, fmin, fmax):
    ours = mel.mel_filterbank(sr, 2048, n_mels, fmin, fmax).numpy()
    theirs = librosa.filters.mel(sr=sr, n_fft=2048, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == (n_mels, 1025)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)


def test_mel_scale_round_trip():
    hz = np.array([0.0, 100.0, 999.0, 1000.0, 5000.0, 22050.0])
    np.testing.assert_allclose(mel.hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-12)
    np.testing.assert_allclose(mel.mel_to_hz(mel.hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_power_and_mel_spectrogram_match_librosa():
    x = drums(1.0, 22050)[0].astype(np.float64)
    power = mel.power_spectrogram(x).numpy()
    theirs = np.abs(librosa.stft(x, n_fft=2048, hop_length=512, center=True, pad_mode="constant")) ** 2
    np.testing.assert_allclose(power, theirs, rtol=1e-9, atol=1e-12 * theirs.max())
    ours = mel.mel_power(x, 22050).numpy()
    ref = librosa.feature.melspectrogram(y=x, sr=22050, n_fft=2048, hop_length=512, n_mels=128)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12 * ref.max())


@pytest.mark.parametrize("ref,top_db", [("max", 80.0), (1.0, 80.0), (1.0, None), ("max", 40.0)])
def test_power_to_db_matches_librosa(ref, top_db):
    S = mel.mel_power(tone(0.5, 44100, 1)[0].astype(np.float64), 44100).numpy()
    theirs = librosa.power_to_db(S, ref=np.max if ref == "max" else ref, amin=1e-10, top_db=top_db)
    np.testing.assert_allclose(mel.power_to_db(S, ref=ref, top_db=top_db).numpy(), theirs, atol=1e-9)


def test_power_to_db_per_window_equals_each_window_alone():
    windows = torch.rand(3, 16, 20, dtype=torch.float64) * torch.tensor([1.0, 1e-3, 1e-9])[:, None, None]
    together = mel.power_to_db(windows, dim=(-2, -1))
    for i in range(3):
        torch.testing.assert_close(together[i], mel.power_to_db(windows[i]))


def test_normalise_round_trip_and_constant_window():
    db = torch.linspace(-80.0, 0.0, 128 * 10).reshape(128, 10)
    norm, low, high = mel.normalise_window(db)
    assert float(norm.min()) == -1.0 and float(norm.max()) == 1.0
    torch.testing.assert_close(mel.denormalise_window(norm, low, high), db, atol=1e-4, rtol=0)
    flat, low, high = mel.normalise_window(torch.full((128, 5), -100.0))
    assert torch.isfinite(flat).all()
    torch.testing.assert_close(mel.denormalise_window(flat, low, high), torch.full((128, 5), -100.0))


def test_block_stft_and_overlap_add_equal_one_pass():
    x = torch.from_numpy(tone(1.3, 44100, 2, dtype=np.float64))
    spec = stft(x)
    padded = mel.pad_centred(x)
    frames = mel.frame_count(x.shape[-1])
    assert frames == spec.shape[-1]
    ola = mel.OverlapAdd((2,), x.shape[-1], dtype=x.dtype)
    for f0 in range(0, frames, 13):  # odd block size: blocks end anywhere on the grid
        block = mel.stft_block(padded, f0, min(frames, f0 + 13))
        torch.testing.assert_close(block, spec[..., f0 : f0 + 13])
        ola.add(block * 0.5, f0)
    torch.testing.assert_close(ola.result(), istft(spec * 0.5, x.shape[-1]))
    torch.testing.assert_close(ola.result(), 0.5 * x)


def test_reference_mel_power_and_db(reference):
    io = np.load(reference / "grain" / "original_model_io.npz")
    power = mel.mel_power(io["input_chunk"], 44100).numpy()
    ref = io["mel_power"]
    assert power.shape == ref.shape == (128, 259)
    loud = ref >= ref.max() * 1e-8  # above -80 dB re max
    assert np.max(np.abs(power - ref)[loud] / ref[loud]) < 1e-4
    db = mel.power_to_db(power).numpy()
    assert np.max(np.abs(db - io["mel_db"])) < 0.01
    norm, _, _ = mel.normalise_window(db[:, :256])  # the model's input: the first 256 frames
    assert np.max(np.abs(norm.numpy() - io["input_norm"])) < 1e-4
