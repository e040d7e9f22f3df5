"""Render a short demo input folder: ``python tools/demo.py DIR``.

Two files a sound designer would reach for: a drum loop (transients, for the
texture effect) and a stereo chord pad (sustained, for the grain effect).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cakfx.audio import write_audio

SR = 44100


def drum_loop(seconds: float = 4.0, bpm: float = 110.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    out = np.zeros(n)
    step = int(60 / bpm / 4 * SR)  # sixteenth notes
    t = np.arange(step * 4) / SR
    kick = np.sin(2 * np.pi * (50 + 90 * np.exp(-t * 30)) * t) * np.exp(-t * 9)
    snare = rng.standard_normal(t.size) * np.exp(-t * 22) * 0.6 + np.sin(2 * np.pi * 190 * t) * np.exp(
        -t * 30
    )
    hat = np.diff(rng.standard_normal(t.size + 1)) * np.exp(-t * 90) * 0.25
    for i, start in enumerate(range(0, n, step)):
        for pattern, hit in ((kick, i % 8 in (0, 3, 6)), (snare, i % 8 == 4), (hat, True)):
            if hit:
                seg = pattern[: n - start]
                out[start : start + seg.size] += seg
    return (0.5 * out / np.abs(out).max())[None].astype(np.float32)


def chord_pad(seconds: float = 4.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    env = np.minimum(1, t / 0.5) * np.minimum(1, (seconds - t) / 0.5)
    channels = []
    for detune in (0.998, 1.002):
        tone = sum(
            np.sin(2 * np.pi * f * detune * t + k) / (k + 1) for k, f in enumerate((220, 277.2, 329.6, 440))
        )
        channels.append(0.25 * env * tone)
    return np.stack(channels).astype(np.float32)


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_audio(out / "drum-loop.wav", drum_loop(), SR, subtype="PCM_16")
    write_audio(out / "chord-pad.flac", chord_pad(), SR, subtype="PCM_24")
    print(f"demo input written to {out}/")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-in")
