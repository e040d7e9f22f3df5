"""Quality checks of trained texture and grain weights (the figures in weights/README.md).

    python bench/quality.py [--texture NAME] [--grain NAME] [--heldout DIR] [--json OUT.json]

Inputs: the demo material (``cakfx.demo``: a drum loop and a chord pad, summed
into a third "drums + pad" mix) and the audio files under ``--heldout`` (by
default the hydrogen ``VariBreaks`` kit, which ``make weights`` leaves out of
training).

* texture: amount 0 must be a bypass (bit for bit); the mean absolute spectral
  change must grow monotonically over amounts 0.25, 0.5, 1, 2 and stay finite;
* grain: the change must grow with |grain|; the direction in which spectral
  flatness moves for negative and positive grain is measured and printed.

Spectral change = mean |20 log10 |Y| - 20 log10 |X|| in dB over STFT bins
within 60 dB of the input's peak (n_fft 2048, hop 512). Each check runs twice:
with the effects' defaults (RMS match, and texture's soft clip) and with those
turned off (the model's own change). Flatness = ``cakfx.measure.spectral_flatness`` (same as
``cakfx measure``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import cakfx
from cakfx.audio import is_audio_path, read_audio
from cakfx.demo import SR, chord_pad, drum_loop
from cakfx.measure import spectral_flatness
from cakfx.spectral import stft

HELDOUT = Path("/usr/share/hydrogen/data/drumkits/VariBreaks")
AMOUNTS = (0.0, 0.25, 0.5, 1.0, 2.0)
GRAINS = (-3.0, -1.5, -0.5, 0.0, 0.5, 1.5, 3.0)


def spectral_change_db(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute dB change of the STFT magnitude over bins within 60 dB of the input's peak."""
    mx = stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).abs()
    my = stft(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))).abs()
    dx = 20 * torch.log10(mx.clamp_min(1e-8))
    dy = 20 * torch.log10(my.clamp_min(1e-8))
    keep = dx > dx.max() - 60
    return float((dy - dx).abs()[keep].mean())


def describe(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "effect defaults"


def inputs(heldout: Path | None, limit: int) -> list[tuple[str, np.ndarray, int]]:
    drums = drum_loop()
    pad = chord_pad()
    mix = 0.7 * np.repeat(drums, 2, axis=0) + 0.7 * pad
    items = [("demo drum loop", drums, SR), ("demo chord pad", pad, SR), ("demo drums + pad", mix, SR)]
    if heldout is not None and heldout.is_dir():
        files = sorted(p for p in heldout.rglob("*") if p.is_file() and is_audio_path(p))[:limit]
        for path in files:
            audio, info = read_audio(path)
            items.append((f"held out: {path.name}", audio, info.sample_rate))
    return items


def texture_report(weights: str, items, **params) -> dict:
    rows, ok_bypass, ok_monotonic, ok_finite = [], True, True, True
    for label, audio, sr in items:
        changes = []
        for amount in AMOUNTS:
            effect = cakfx.create_effect(
                "cak.texture", weights=weights, amount=amount, device="cpu", **params
            )
            out = effect(audio, sr)
            if amount == 0:
                ok_bypass &= bool(np.array_equal(out, audio))
            ok_finite &= bool(np.isfinite(out).all())
            changes.append(spectral_change_db(audio, out))
        steps = changes[1:]
        ok_monotonic &= all(b > a for a, b in zip(steps, steps[1:]))
        rows.append({"input": label, "change_db": dict(zip(map(str, AMOUNTS), changes))})
    return {
        "weights": weights,
        "params": params,
        "rows": rows,
        "bypass": ok_bypass,
        "monotonic": ok_monotonic,
        "finite": ok_finite,
    }


def grain_report(weights: str, items, **params) -> dict:
    rows, ok_monotonic, ok_bypass = [], True, True
    for label, audio, sr in items:
        flat_in = spectral_flatness(audio, sr)
        change, flat = {}, {}
        for g in GRAINS:
            out = cakfx.create_effect("cak.grain", weights=weights, grain=g, device="cpu", **params)(
                audio, sr
            )
            if g == 0:
                ok_bypass &= bool(np.array_equal(out, audio))
            change[g] = spectral_change_db(audio, out)
            flat[g] = spectral_flatness(out, sr) - flat_in
        for sign in (-1, 1):
            mags = [change[sign * m] for m in (0.5, 1.5, 3.0)]
            ok_monotonic &= all(b > a for a, b in zip(mags, mags[1:]))
        rows.append(
            {
                "input": label,
                "flatness_in": flat_in,
                "change_db": {str(g): change[g] for g in GRAINS},
                "flatness_delta": {str(g): flat[g] for g in GRAINS},
            }
        )
    neg = [r["flatness_delta"]["-1.5"] for r in rows]
    pos = [r["flatness_delta"]["1.5"] for r in rows]
    return {
        "weights": weights,
        "params": params,
        "rows": rows,
        "bypass": ok_bypass,
        "monotonic_in_abs_grain": ok_monotonic,
        "flatness_direction": {
            "grain -1.5": {
                "up": sum(d > 0 for d in neg),
                "down": sum(d < 0 for d in neg),
                "mean": float(np.mean(neg)),
            },
            "grain +1.5": {
                "up": sum(d > 0 for d in pos),
                "down": sum(d < 0 for d in pos),
                "mean": float(np.mean(pos)),
            },
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texture", default="cak-texture-default")
    parser.add_argument("--grain", default="cak-grain-default")
    parser.add_argument("--heldout", type=Path, default=HELDOUT)
    parser.add_argument("--limit", type=int, default=16, help="held-out files to use at most")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    items = inputs(args.heldout, args.limit)
    held = sum(label.startswith("held out") for label, _, _ in items)
    print(f"inputs: 3 demo signals + {held} held-out files ({args.heldout})")

    report = {"texture": [], "grain": []}
    for params in ({}, {"rms_match": False, "soft_clip": False}):
        tex = texture_report(args.texture, items, **params)
        report["texture"].append(tex)
        print(f"\ntexture ({tex['weights']}, {describe(params)}): mean |dB change| per amount")
        print(f"{'input':40s}" + "".join(f"{a:>9g}" for a in AMOUNTS))
        for r in tex["rows"]:
            print(f"{r['input'][:40]:40s}" + "".join(f"{v:9.3f}" for v in r["change_db"].values()))
        print(f"amount 0 bypass: {tex['bypass']}; monotonic over 0.25..2: {tex['monotonic']}", end="")
        print(f"; finite at 2: {tex['finite']}")

    for params in ({}, {"rms_match": False}):
        gr = grain_report(args.grain, items, **params)
        report["grain"].append(gr)
        print(f"\ngrain ({gr['weights']}, {describe(params)}): mean |dB change| per grain")
        print(f"{'input':40s}" + "".join(f"{g:>8g}" for g in GRAINS))
        for r in gr["rows"]:
            print(f"{r['input'][:40]:40s}" + "".join(f"{v:8.3f}" for v in r["change_db"].values()))
        print(f"grain: flatness change (output - input) per grain, {describe(params)}")
        print(f"{'input':34s}{'in':>8s}" + "".join(f"{g:>9g}" for g in GRAINS))
        for r in gr["rows"]:
            print(
                f"{r['input'][:34]:34s}{r['flatness_in']:8.4f}"
                + "".join(f"{v:+9.4f}" for v in r["flatness_delta"].values())
            )
        print(f"grain 0 bypass: {gr['bypass']}; change grows with |grain|: {gr['monotonic_in_abs_grain']}")
        for key, d in gr["flatness_direction"].items():
            print(f"{key}: flatness up on {d['up']}, down on {d['down']} inputs (mean {d['mean']:+.4f})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    ok = all(t["bypass"] and t["monotonic"] and t["finite"] for t in report["texture"])
    ok = ok and all(g["bypass"] and g["monotonic_in_abs_grain"] for g in report["grain"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
