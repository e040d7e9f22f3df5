"""Batch speed of ``cakfx process`` against the I/O floor (issue 16).

Generates two corpora in a temporary folder and times, in one run with interleaved repeats,
``run_batch`` (what ``cakfx process`` calls, in-process) of each corpus through bundled
presets, against soundfile read + write of the same files (the I/O floor):

* long files: ``--long-files`` x ``--long-seconds`` s stereo, alternating 44.1 / 48 kHz;
* one-shots: ``--oneshots`` files of 0.1 - 2 s at mixed rates (22.05 / 44.1 / 48 / 96 kHz),
  mono and stereo;
* one 0.1 s file through texture-drums against its own read + write (per-file fixed cost);
* the CLI's start-up cost (a ``cakfx process`` subprocess on one 0.1 s file minus the same
  work in-process), and the default ``--jobs`` against ``--jobs 1``;
* the floor the neural models set: each model alone (level stage off, no other stage) on the
  long files held in memory, no file I/O, against the same read + write.

The presets run with ``--jobs`` as the CLI's default (``--jobs auto``; pass ``--jobs 1`` to time
code from before ``jobs=None`` existed).

Prints min / median seconds and the ratios to the floor (targets: texture-drums <= 3x on long
files and <= 5x on one-shots, grain-noisy <= 8x on long files, a 0.1 s file <= 2x) and, steadier
on a busy machine, the ratio of CPU seconds (this process's, all threads, min of the repeats).
Files are 24-bit WAV unless ``--subtype`` says otherwise.

    .venv/bin/python bench/batch.py [--long-files 10 --long-seconds 60 --oneshots 300 --repeats 3]
    .venv/bin/python bench/batch.py --quick      # 3 x 20 s long files, 60 one-shots
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

GAIN_PRESET = """\
[preset]
name = "gain-only"
description = "bench: a gain stage only"

[[chain]]
id = "gain"
effect = "pedalboard.Gain"
gain_db = -3.0
"""


def music(seconds: float, sr: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """``(samples, channels)`` float32: partials, decaying noise hits and a little hiss."""
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        f = rng.uniform(80, 600)
        x = 0.15 * np.sin(2 * np.pi * f * t) + 0.08 * np.sin(2 * np.pi * 2.01 * f * t)
        beat = max(1, int(0.25 * sr))
        env = np.exp(-(np.arange(n) % beat) / (0.04 * sr))
        x += 0.3 * env * rng.standard_normal(n) + 0.01 * rng.standard_normal(n)
        out[:, c] = x
    return out


def make_corpora(root: Path, args, rng: np.random.Generator) -> dict[str, Path]:
    long_dir, shots_dir, tiny_dir = root / "long", root / "oneshots", root / "tiny"
    for d in (long_dir, shots_dir, tiny_dir):
        d.mkdir()
    for i in range(args.long_files):
        sr = (44100, 48000)[i % 2]
        audio = music(args.long_seconds, sr, 2, rng)
        sf.write(long_dir / f"long{i:02d}.wav", audio, sr, subtype=args.subtype)
    rates = (22050, 44100, 48000, 96000)
    for i in range(args.oneshots):
        sr, channels = rates[i % 4], 1 + (i // 4) % 2
        seconds = float(rng.uniform(0.1, 2.0))
        sf.write(shots_dir / f"shot{i:03d}.wav", music(seconds, sr, channels, rng), sr, subtype=args.subtype)
    sf.write(tiny_dir / "tiny.wav", music(0.1, 44100, 2, rng), 44100, subtype=args.subtype)
    return {"long": long_dir, "oneshots": shots_dir, "tiny": tiny_dir}


def io_floor(src: Path, dst: Path) -> None:
    """soundfile read + write of every file, same format and subtype."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        info = sf.info(path)
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        sf.write(dst / path.name, audio, sr, format=info.format, subtype=info.subtype)


MODEL_ONLY = {
    "texture": 'effect = "cak.texture"\nweights = "cak-texture-default"\namount = 0.7\nlevel = "off"',
    "grain": 'effect = "cak.grain"\nweights = "cak-grain-default"\ngrain = 1.5\nlevel = "off"',
}


def batch(src: Path, dst: Path, preset: str, jobs: int | None = None, chain=None) -> None:
    """What ``cakfx process SRC -p PRESET -o DST --overwrite -q [--jobs N]`` does, in-process
    (with ``chain``: a chain built before, as a batch's later files find it)."""
    from cakfx.batch import run_batch
    from cakfx.presets import build_chain, read_preset

    # the preset is parsed once per run, as the CLI does; with a chain given, only if a second
    # worker needs one (parsing it per call was 0.7 ms of a 0.1 s file's 4 ms)
    specs: list = []

    def make():
        if not specs:
            specs.append(read_preset(preset))
        return build_chain(specs[0], device="cpu")

    first = [chain if chain is not None else make()]
    report = run_batch(
        [src],
        dst,
        lambda: first.pop() if first else make(),
        overwrite=True,
        jobs=jobs,
        progress=False,
    )
    if report.failed:
        bad = [f"{r.input}: {r.reason}" for r in report.files if r.status == "failed"]
        raise SystemExit("bench: files failed:\n" + "\n".join(bad[:5]))


def models_alone(preset: Path, held: list) -> None:
    """The preset's chain on each held file, in memory: no reading, writing or metering."""
    from cakfx.presets import build_chain, read_preset

    chain = build_chain(read_preset(str(preset)), device="cpu")
    for audio, sr in held:
        chain(np.ascontiguousarray(audio.T), sr)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_cpu(fn) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads): the CPU figure hardly
    moves with other jobs' load, so its ratio compares the work done on a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(tasks: dict, repeats: int) -> tuple[dict, dict]:
    """Wall and CPU seconds of each of ``tasks`` (name -> function) over ``repeats`` rounds that
    run every task in turn, so a change in the machine's load falls on all of them alike."""
    wall: dict = {key: [] for key in tasks}
    cpu: dict = {key: [] for key in tasks}
    for _ in range(repeats):
        for key, fn in tasks.items():
            seconds, used = timed_cpu(fn)
            wall[key].append(seconds)
            cpu[key].append(used)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-files", type=int, default=10)
    parser.add_argument("--long-seconds", type=float, default=60.0)
    parser.add_argument("--oneshots", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny-repeats", type=int, default=20)
    parser.add_argument("--subtype", default="PCM_24")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the CLI's default)")
    parser.add_argument("--no-grain", action="store_true", help="skip grain-noisy (slow)")
    parser.add_argument("--jobs", default="auto", help="--jobs of the preset runs: auto (the default) or N")
    parser.add_argument("--quick", action="store_true", help="3 x 20 s long files, 60 one-shots")
    args = parser.parse_args()
    if args.quick:
        args.long_files, args.long_seconds, args.oneshots = 3, 20.0, 60
    import torch

    torch.set_num_threads(args.threads)
    jobs = None if args.jobs == "auto" else int(args.jobs)
    load = os.getloadavg()[0]
    presets = ["gain", "texture-drums"] + ([] if args.no_grain else ["grain-noisy"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpora = make_corpora(root, args, np.random.default_rng(0))
        gain_preset = root / "gain.toml"
        gain_preset.write_text(GAIN_PRESET)
        preset_ref = {"gain": str(gain_preset), "texture-drums": "texture-drums"}
        preset_ref["grain-noisy"] = "grain-noisy"
        out = root / "out"
        tasks: dict[tuple[str, str], object] = {}
        for corpus in ("long", "oneshots"):
            tasks[(corpus, "read+write")] = lambda c=corpus: io_floor(corpora[c], out / c / "floor")
            for name in presets:
                if corpus == "oneshots" and name == "grain-noisy":
                    continue
                tasks[(corpus, name)] = lambda c=corpus, p=name: batch(
                    corpora[c], out / c / p, preset_ref[p], jobs
                )
            tasks[(corpus, "texture-drums --jobs 1")] = lambda c=corpus: batch(
                corpora[c], out / c / "jobs1", "texture-drums", 1
            )
        held = [sf.read(p, dtype="float32", always_2d=True) for p in sorted(corpora["long"].iterdir())]
        for model in ("texture",) + (() if args.no_grain else ("grain",)):
            path = root / f"{model}-only.toml"
            path.write_text(f'[preset]\nname = "{model}-only"\n[[chain]]\nid = "m"\n{MODEL_ONLY[model]}\n')
            tasks[("long", f"{model} model alone")] = lambda p=path: models_alone(p, held)
        for fn in tasks.values():  # warm-up: imports, weights, FFT plans, first files
            fn()
        times, cpu = interleaved(tasks, args.repeats)
        from cakfx.presets import build_chain, read_preset

        built = build_chain(read_preset("texture-drums"), device="cpu")
        tiny_runs = {
            "read+write": lambda: io_floor(corpora["tiny"], out / "tiny" / "floor"),
            "texture-drums": lambda: batch(corpora["tiny"], out / "tiny" / "t", "texture-drums", jobs),
            "chain built": lambda: batch(corpora["tiny"], out / "tiny" / "b", "texture-drums", jobs, built),
        }
        tiny, tiny_cpu = interleaved(tiny_runs, args.tiny_repeats)
        # CLI start-up: a subprocess on the 0.1 s file against the same work in-process
        cli = [sys.executable, "-m", "cakfx", "process", str(corpora["tiny"]), "-p", str(gain_preset)]
        cli += ["-o", str(out / "tiny" / "cli"), "--overwrite", "-q", "--device", "cpu"]
        startup = []
        for _ in range(3):
            sub = timed(lambda: subprocess.run(cli, check=True, capture_output=True))
            inproc = timed(lambda: batch(corpora["tiny"], out / "tiny" / "g", str(gain_preset), jobs))
            startup.append(sub - inproc)
        shutil.rmtree(out, ignore_errors=True)

    def mm(values: list[float]) -> tuple[float, float]:
        return min(values), statistics.median(values)

    print(
        f"corpora: long = {args.long_files} x {args.long_seconds:g} s stereo 44.1/48 kHz; one-shots = "
        f"{args.oneshots} files 0.1-2 s, 22.05/44.1/48/96 kHz, mono/stereo; {args.subtype} WAV"
    )
    print(f"{args.repeats} interleaved repeats, {args.threads} torch threads, {os.cpu_count()} cores, "
          f"--jobs {args.jobs}")
    targets = {("long", "texture-drums"): 3, ("oneshots", "texture-drums"): 5, ("long", "grain-noisy"): 8}
    for corpus in ("long", "oneshots"):
        floor_min, floor_med = mm(times[(corpus, "read+write")])
        floor_cpu = min(cpu[(corpus, "read+write")])
        print(f"\n{corpus}: read+write floor {floor_min:.3f} / {floor_med:.3f} s (min / median), "
              f"{floor_cpu:.3f} s CPU")
        for (c, name), values in times.items():
            if c != corpus or name == "read+write":
                continue
            lo, med = mm(values)
            target = targets.get((corpus, name))
            note = f"  (target <= {target}x)" if target else ""
            print(
                f"  {name:24s} {lo:8.3f} / {med:8.3f} s   ratio {lo / floor_min:5.2f}x min, "
                f"{med / floor_med:5.2f}x median; CPU {min(cpu[(c, name)]) / floor_cpu:5.2f}x{note}"
            )
    floor_min, floor_med = mm(tiny["read+write"])
    floor_cpu = min(tiny_cpu["read+write"])
    print(f"\n0.1 s stereo file: read+write {floor_min * 1e3:.1f} / {floor_med * 1e3:.1f} ms, "
          f"{floor_cpu * 1e3:.2f} ms CPU")
    for key, what in (("chain built", "per file (chain already built, as for a batch's files)"),
                      ("texture-drums", "alone (the run builds its chain)")):
        lo, med = mm(tiny[key])
        print(
            f"  texture-drums, {what}: {lo * 1e3:.1f} / {med * 1e3:.1f} ms: ratio {lo / floor_min:.2f}x min, "
            f"{med / floor_med:.2f}x median; CPU {min(tiny_cpu[key]) / floor_cpu:.2f}x (target <= 2x)"
        )
    print(f"CLI start-up (subprocess minus in-process, 0.1 s file): {min(startup):.2f} s min")
    for corpus in ("long", "oneshots"):
        j1, jd = min(times[(corpus, "texture-drums --jobs 1")]), min(times[(corpus, "texture-drums")])
        print(f"--jobs {args.jobs} against --jobs 1 ({corpus}, texture-drums, min): {j1 / jd:.2f}x faster")
    if load > 1.0:
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores before the run: ratios noisier")


if __name__ == "__main__":
    main()
