"""soxr (cakfx.dsp.resample) against the torch Kaiser-sinc resampler cakfx used before (kept here
as the baseline): speed as a ratio measured in one run, and cleanliness (alias/image level).

Round trips 96 kHz -> 44.1 kHz -> 96 kHz and 48 -> 44.1 -> 48 kHz of 30 s stereo noise; interleaved
repeats, min and median seconds of each, ratio old/new. Then the level of the 14.1 kHz alias of a
30 kHz tone after 96 -> 44.1 kHz, relative to a 1 kHz tone, for both.

Usage: .venv/bin/python bench/resample.py [--seconds 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from scipy import signal

from cakfx.dsp.resample import resample

# --- the previous cakfx/resample.py (64 zero crossings, Kaiser beta 14.77), for comparison only ---
LOWPASS_WIDTH, ROLLOFF, BETA = 64, 0.9475937167399596, 14.769656459379492


def _kernels(orig: int, new: int, dtype) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = torch.special.i0(BETA * torch.sqrt(1 - (t / LOWPASS_WIDTH) ** 2)) / float(np.i0(BETA))
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (base / orig)).to(dtype), width


def old_resample(x: torch.Tensor, orig: int, new: int, length: int | None = None) -> torch.Tensor:
    n = x.shape[-1]
    out_len = length if length is not None else math.ceil(n * new / orig)
    g = math.gcd(orig, new)
    o, w = orig // g, new // g
    kernels, width = _kernels(o, w, x.dtype)
    flat = torch.nn.functional.pad(x.reshape(-1, 1, n), (width, width + o))
    y = torch.nn.functional.conv1d(flat, kernels, stride=o).transpose(1, 2).reshape(*x.shape[:-1], -1)
    if y.shape[-1] >= out_len:
        return y[..., :out_len]
    return torch.nn.functional.pad(y, (0, out_len - y.shape[-1]))


def alias_db(y: np.ndarray, sr: int) -> float:
    w = signal.windows.kaiser(y.shape[-1], 20.0)
    spec = np.abs(np.fft.rfft(y[0] * w))
    f = np.fft.rfftfreq(y.shape[-1], 1 / sr)
    at = lambda hz: spec[(f > hz - 30) & (f < hz + 30)].max()  # noqa: E731
    return 20 * np.log10(at(14100) / at(1000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the old one is torch conv1d: compare both on one core
    rng = np.random.default_rng(0)
    for sr in (96000, 48000):
        x = rng.normal(0, 0.1, (2, int(args.seconds * sr))).astype(np.float32)
        xt = torch.from_numpy(x)
        runs = {
            "soxr": lambda: resample(resample(x, sr, 44100), 44100, sr, length=x.shape[1]),  # noqa: B023
            "old": lambda: old_resample(old_resample(xt, sr, 44100), 44100, sr, length=x.shape[1]),  # noqa: B023
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():  # interleaved: both see the same machine load
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            print(f"{sr} Hz round trip, {args.seconds:g} s stereo, {name:4s}: "
                  f"min {min(ts):.3f} s  median {statistics.median(ts):.3f} s")
        print(f"  speed ratio old/soxr: min {min(times['old']) / min(times['soxr']):.2f}x  "
              f"median {statistics.median(times['old']) / statistics.median(times['soxr']):.2f}x")
    t = np.arange(96000 * 2) / 96000
    x = (0.5 * np.sin(2 * np.pi * 30000 * t) + 0.5 * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32)
    new = resample(x, 96000, 44100)
    old = old_resample(torch.from_numpy(x), 96000, 44100).numpy()
    print("alias of a 30 kHz tone at 14.1 kHz after 96->44.1 kHz, re 1 kHz: "
          f"soxr {alias_db(new, 44100):.1f} dB, old {alias_db(old, 44100):.1f} dB")


if __name__ == "__main__":
    main()
