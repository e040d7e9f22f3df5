"""Synthetic test audio, made inside the tests."""

from __future__ import annotations

import numpy as np


def tone(seconds=1.0, sr=44100, channels=2, freq=440.0, seed=0, dtype=np.float32) -> np.ndarray:
    """A (channels, samples) test signal: a tone plus a little noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    rows = [
        0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) + 0.05 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(rows).astype(dtype)


def drums(seconds=2.0, sr=44100, channels=1, seed=0, dtype=np.float32) -> np.ndarray:
    """Decaying noise bursts and kicks on a beat grid: transient-rich material."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros((channels, n))
    beat = int(0.25 * sr)
    env = np.exp(-np.arange(beat) / (0.03 * sr))
    for start in range(0, n - beat, beat):
        hit = rng.standard_normal(beat) * env * 0.5
        kick = np.sin(2 * np.pi * 60 * np.arange(beat) / sr) * np.exp(-np.arange(beat) / (0.08 * sr))
        for c in range(channels):
            out[c, start : start + beat] += hit + 0.6 * kick * (start // beat % 2 == 0)
    return out.astype(dtype)
