"""Grain's share of ``bench/batch.py``: the long files only, against the I/O floor (issue 16).

Times, in one run with interleaved repeats, soundfile read + write of the long files (the floor),
``grain-noisy`` through ``run_batch`` (``--jobs`` as the CLI's default) and the grain model alone
(level stage off, files held in memory); the same corpus, presets and figures as ``bench/batch.py``
without its texture, one-shot and start-up parts (a quarter of its time).

    .venv/bin/python bench/grain_batch.py [--long-files 3 --long-seconds 20 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import MODEL_ONLY, batch, interleaved, io_floor, make_corpora, models_alone  # noqa: E402

TARGET = 8  # grain-noisy <= 8x the read+write floor on long files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-files", type=int, default=3)
    parser.add_argument("--long-seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subtype", default="PCM_24")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the CLI's default)")
    parser.add_argument("--jobs", default="auto", help="--jobs of the preset run: auto (the default) or N")
    args = parser.parse_args()
    args.oneshots = 0
    import torch

    torch.set_num_threads(args.threads)
    jobs = None if args.jobs == "auto" else int(args.jobs)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        long = make_corpora(root, args, np.random.default_rng(0))["long"]
        held = [sf.read(p, dtype="float32", always_2d=True) for p in sorted(long.iterdir())]
        alone = root / "grain-only.toml"
        alone.write_text(f'[preset]\nname = "grain-only"\n[[chain]]\nid = "m"\n{MODEL_ONLY["grain"]}\n')
        out = root / "out"
        tasks = {
            "read+write": lambda: io_floor(long, out / "floor"),
            "grain-noisy": lambda: batch(long, out / "grain", "grain-noisy", jobs),
            "grain model alone": lambda: models_alone(alone, held),
        }
        for fn in tasks.values():  # warm-up: imports, weights, FFT plans
            fn()
        wall, cpu = interleaved(tasks, args.repeats)

    floor_min, floor_med = min(wall["read+write"]), statistics.median(wall["read+write"])
    floor_cpu = min(cpu["read+write"])
    print(f"long = {args.long_files} x {args.long_seconds:g} s stereo 44.1/48 kHz, {args.subtype} WAV; "
          f"{args.repeats} interleaved repeats, {args.threads} torch threads, {os.cpu_count()} cores, "
          f"--jobs {args.jobs}, load average {load:.1f} before")
    print(f"read+write floor {floor_min:.3f} / {floor_med:.3f} s (min / median), {floor_cpu:.3f} s CPU")
    for name in ("grain-noisy", "grain model alone"):
        lo, med = min(wall[name]), statistics.median(wall[name])
        note = f"  (target <= {TARGET}x)" if name == "grain-noisy" else ""
        used = min(cpu[name])
        print(f"  {name:20s} {lo:7.3f} / {med:7.3f} s   ratio {lo / floor_min:5.2f}x min, "
              f"{med / floor_med:5.2f}x median; CPU {used:.3f} s, {used / floor_cpu:5.2f}x{note}")


if __name__ == "__main__":
    main()
