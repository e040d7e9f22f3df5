"""Speed of cak.texture against a bare torch.stft -> torch.istft round trip (issue 3).

Generates 2 minutes of stereo 44.1 kHz audio, uses 2 torch threads, and prints
effect time / round-trip time (best of 3 each, runs interleaved so both see the
same machine load). Target: ratio <= 1.5.

    .venv/bin/python bench/texture.py [--seconds 120] [--device cpu] [--repeats 3] [--level match]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cakfx
from cakfx.errors import CakfxError
from cakfx.weights import resolve_weights, save_weights

SR = 44100
ROOT = Path(__file__).resolve().parents[1]


def find_weights(tmp: Path) -> tuple[str, str]:
    """A texture weights path and where it came from (speed does not depend on the values)."""
    try:
        return str(resolve_weights("cak-texture-default")), "installed cak-texture-default"
    except CakfxError:
        pass
    from cakfx.plugins.texture.checkpoint import import_checkpoint

    reference = Path(os.environ.get("CAKFX_REFERENCE", ROOT.parent / "shared" / "reference")) / "texture"
    if (reference / "final_wgan_grain.pt").is_file():
        tensors, stats, training = import_checkpoint(
            reference / "final_wgan_grain.pt", reference / "global_normalization_stats.json"
        )
        path = save_weights(tmp / "reference.safetensors", tensors, "cak.texture", stats, training)
        return str(path), "the reference checkpoint, imported to a temporary file"
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "detector_weight": torch.randn(1, 1, 3, 3, generator=gen) * 0.1,
        "detector_bias": torch.zeros(1),
        "scale": torch.ones(1),
    }
    stats = {"global_low": 0.0, "global_high": 4.2, "alpha": 10.0, "gamma": 0.85}
    path = save_weights(tmp / "random.safetensors", tensors, "cak.texture", stats, {"note": "bench"})
    return str(path), "RANDOM weights (no cak-texture-default, no reference): speed only"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amount", type=float, default=0.8)
    parser.add_argument("--level", default="match", choices=("match", "original", "off"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]  # before we add our own

    rng = np.random.default_rng(0)
    n = int(args.seconds * SR)
    t = np.arange(n) / SR
    # music-like: a few partials plus noise, different per channel
    audio = np.stack(
        [0.2 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(n) for f in (220.0, 331.0)]
    ).astype(np.float32)
    device = torch.device(args.device)
    window = torch.hann_window(2048, periodic=True, device=device)
    signal = torch.from_numpy(audio)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def round_trip() -> None:
        x = signal.to(device)
        spec = torch.stft(x, 2048, 512, window=window, center=True, pad_mode="constant", return_complex=True)
        torch.istft(spec, 2048, 512, window=window, center=True, length=n).cpu()
        sync()

    with tempfile.TemporaryDirectory() as tmp:
        weights, origin = find_weights(Path(tmp))
        node = cakfx.create_effect(
            "cak.texture", weights=weights, amount=args.amount, level=args.level, device=args.device
        )
        round_trip()
        node(audio[:, : SR * 5], SR)  # warm-up (allocator, FFT plans)
        times = {"round trip": [], "cak.texture": []}
        for _ in range(args.repeats):
            for name, fn in (("round trip", round_trip), ("cak.texture", lambda: node(audio, SR))):
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    bare, effect = min(times["round trip"]), min(times["cak.texture"])
    print(f"signal: {args.seconds:g} s stereo at {SR} Hz, {args.threads} torch threads, device {device}")
    print(f"weights: {origin}; amount {args.amount:g}")
    print(f"bare torch.stft -> torch.istft: {bare:.3f} s (best of {args.repeats})")
    print(f"cak.texture (level {args.level}): {effect:.3f} s (best of {args.repeats})")
    print(f"ratio effect / round trip: {effect / bare:.2f}  (target <= 1.5)")
    if load > (os.cpu_count() or 1) - args.threads + 0.5:
        print(f"note: load average was {load:.1f} on {os.cpu_count()} cores: times inflated, ratio noisier")


if __name__ == "__main__":
    main()
