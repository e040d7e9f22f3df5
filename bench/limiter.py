"""cakfx's true-peak limiter (cakfx.dsp.limiter) against pedalboard.BrickwallLimiter as the level
stage used it before (true-peak sidechain, 5 ms look-ahead, 100 ms release, aimed 0.3 dB under
the ceiling): speed as a ratio measured in one run, and the sound.

Speed: interleaved repeats on SECONDS of stereo demo drum loop + pad, hot (peaks 6 dB over a
-1 dBTP ceiling) and ordinary (peaks 3 dB over); min and median seconds, ratio pedalboard/cakfx.
Sound, per signal: true peak out (dBTP), loudness change (LU), pumping (spread of the 100 ms
short-term gain, 10th-90th percentile, dB) and, for sines pushed 6 dB over the ceiling, the
distortion: energy outside the fundamental's +-20 Hz relative to the whole, after 0.5 s (dB).

``--before REV``: also times cakfx's limiter as it was at git revision REV (its
cakfx/dsp/limiter.py on today's loudness module), interleaved with today's, and prints how far
today's output is from it (max |diff|, true peak).

Usage: .venv/bin/python bench/limiter.py [--seconds 20] [--repeats 5] [--before 0862a99]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types
from pathlib import Path

import numpy as np
from pedalboard import BrickwallLimiter

from cakfx.dsp.limiter import limit
from cakfx.dsp.loudness import integrated_loudness, true_peak_db
from tools import demo

SR = 44100
CEILING = -1.0


def pedalboard_limit(x: np.ndarray) -> np.ndarray:
    limiter = BrickwallLimiter(ceiling_db=CEILING - 0.3, release_ms=100.0, lookahead_ms=5.0, true_peak=True)
    return limiter.process(x.astype(np.float32), SR, reset=True)


def cakfx_limit(x: np.ndarray) -> np.ndarray:
    return limit(x, CEILING, SR)


LIMITERS = {"pedalboard": pedalboard_limit, "cakfx": cakfx_limit}


def limiter_at(rev: str):
    """``limit`` from cakfx/dsp/limiter.py as it was at git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:cakfx/dsp/limiter.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"limiter_{rev}")
    exec(compile(source, f"{rev}:cakfx/dsp/limiter.py", "exec"), module.__dict__)
    return lambda x: module.limit(x, CEILING, SR)


def music(seconds: float, over_db: float) -> np.ndarray:
    drums, pad = demo.drum_loop(seconds), demo.chord_pad(seconds)
    n = min(drums.shape[-1], pad.shape[-1])
    mix = np.broadcast_to(drums[..., :n], pad[..., :n].shape) + pad[..., :n]
    return (mix / 10 ** (true_peak_db(mix) / 20) * 10 ** ((CEILING + over_db) / 20)).astype(np.float32)


def sine(hz: float, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.repeat((10 ** ((CEILING + 6) / 20) * np.sin(2 * np.pi * hz * t))[None], 2, 0).astype(np.float32)


def splatter_db(y: np.ndarray, hz: float) -> float:
    y = y[0, SR // 2 :].astype(np.float64)
    spec = np.abs(np.fft.rfft(y * np.kaiser(y.size, 20.0))) ** 2
    f = np.fft.rfftfreq(y.size, 1 / SR)
    return 10 * np.log10(spec[np.abs(f - hz) > 20].sum() / spec.sum())


def pumping_db(x: np.ndarray, y: np.ndarray) -> float:
    block = SR // 10
    n = x.shape[-1] // block * block
    ms = lambda a: np.mean(a[:, :n].reshape(a.shape[0], -1, block) ** 2, axis=(0, 2))  # noqa: E731
    gain = 10 * np.log10(ms(y) / ms(x))
    return float(np.percentile(gain, 90) - np.percentile(gain, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", metavar="REV", help="also time the limiter as it was at git revision REV")
    args = parser.parse_args()
    if args.before:
        LIMITERS[f"cakfx@{args.before}"] = limiter_at(args.before)

    signals = {"drums+pad +6 dB": music(args.seconds, 6.0), "drums+pad +3 dB": music(args.seconds, 3.0)}
    for name, x in signals.items():
        times = {k: [] for k in LIMITERS}
        for _ in range(args.repeats):  # interleaved: both see the same load
            for k, f in LIMITERS.items():
                t = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t)
        mins = {k: min(v) for k, v in times.items()}
        meds = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}, {args.seconds:g} s stereo: " + ", ".join(
            f"{k} {mins[k] * 1e3:.1f}/{meds[k] * 1e3:.1f} ms" for k in LIMITERS)
            + f" (min/median); pedalboard/cakfx {mins['pedalboard'] / mins['cakfx']:.2f}x min, "
            f"{meds['pedalboard'] / meds['cakfx']:.2f}x median")
        if args.before:
            old, new = LIMITERS[f"cakfx@{args.before}"](x), cakfx_limit(x)
            before = f"cakfx@{args.before}"
            diff = np.abs(old.astype(np.float64) - new).max()
            print(f"  cakfx@{args.before}/cakfx {mins[before] / mins['cakfx']:.2f}x min, "
                  f"{meds[before] / meds['cakfx']:.2f}x median; output max |diff| "
                  f"{diff:.1e} (bit-identical: {np.array_equal(old, new)}), "
                  f"true peak {true_peak_db(old):.4f} -> {true_peak_db(new):.4f} dBTP")

    print("\n| signal | limiter | true peak dBTP | loudness change LU | pumping dB | splatter dB |")
    print("|---|---|---|---|---|---|")
    sines = {f"sine {hz:g} Hz +6 dB": sine(hz) for hz in (40.0, 100.0, 1000.0)}
    cases = {**signals, **sines}
    for name, x in cases.items():
        for k, f in {"pedalboard": pedalboard_limit, "cakfx": cakfx_limit}.items():
            y = f(x)
            change = integrated_loudness(y, SR) - integrated_loudness(x, SR)
            hz = float(name.split()[1]) if name in sines else None
            splat = f"{splatter_db(y, hz):.1f}" if hz else ""
            pump = pumping_db(x, y)
            print(f"| {name} | {k} | {true_peak_db(y):.2f} | {change:+.2f} | {pump:.2f} | {splat} |")


if __name__ == "__main__":
    main()
