"""``--executor ray`` against the local executor: files/s, audio-seconds/s and Ray's per-file cost.

Two sets, made here: 300 short one-shots (0.25 s, stereo, 44.1 kHz, PCM_16) and 10 long files
(20 s). Each goes through the ``texture-drums`` preset (the neural texture model, a compressor,
a reverb) with the local executor (``--jobs 1``, one torch thread like each Ray worker)
and with Ray actors (1 and 2 workers, audio
through the object store). Rounds interleave the configurations so a busy machine slows them
alike; the table shows the best and the median of the rounds.

* ``files/s`` and ``audio-s/s`` count the whole run, start-up included (``start s``: for
  Ray, connecting and starting the actors, each building its chain from the shipped preset;
  for the local executor, building the chain).
* ``Ray overhead per file`` is Ray's cost per file next to the local run of the same set,
  start-ups excluded: ((Ray 1-worker time - its start-up) - (local time - its start-up)) /
  files, from the best rounds.

Ray runs in a private network namespace (``unshare -n`` with loopback only; run as root), as
Ray advertises the external interface otherwise: the script re-executes itself there.

Usage: .venv/bin/python bench/ray.py [--repeats N] [--short N] [--long N] [--long-seconds S]
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

import soundfile as sf

# this file is named ray.py: keep its folder off the import path so `import ray` finds Ray
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PRESET = "texture-drums"
# a chain that costs next to nothing per file, so Ray's own cost per file shows
GAIN = '[preset]\nname = "gain"\n[[chain]]\neffect = "pedalboard.Gain"\ngain_db = -3.0\n'
SR = 44100
INSIDE = "CAKFX_BENCH_RAY_INSIDE"


def make_set(folder: Path, count: int, seconds: float) -> float:
    """``count`` drum-like stereo files of ``seconds``; return the total audio seconds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.signals import drums

    folder.mkdir(parents=True)
    for i in range(count):
        x = drums(seconds, sr=SR, channels=2, seed=i)
        sf.write(folder / f"{i:04d}.wav", x.T, SR, subtype="PCM_16")
    return count * seconds


def run_once(files: Path, out: Path, preset, executor) -> tuple[float, float]:
    """(wall seconds, start-up seconds) of one batch into a fresh ``out``."""
    from cakfx.batch import run_batch
    from cakfx.presets import build_chain

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if executor is None:
        chain = build_chain(preset)
        startup = time.perf_counter() - t0
        report = run_batch([files], out, lambda: chain, progress=False)
    else:
        report = run_batch([files], out, None, progress=False, executor=executor)
        startup = executor.startup_seconds
    seconds = time.perf_counter() - t0
    if report.failed or report.count("ok") != len(list(files.iterdir())):
        raise SystemExit(f"bench run failed: {report.to_dict()['counts']}")
    return seconds, startup


def bench(args) -> None:
    import ray
    import torch

    from cakfx.executors.ray import RayExecutor
    from cakfx.presets import read_preset

    # one torch thread, as in each Ray worker (--cpus-per-worker 1): the same work per file
    torch.set_num_threads(1)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _node_ip_address="127.0.0.1",
    )
    with tempfile.TemporaryDirectory(prefix="cakfx-bench-ray-") as tmp:
        root = Path(tmp)
        (root / "gain.toml").write_text(GAIN)
        texture, gain = read_preset(PRESET), read_preset(root / "gain.toml")
        configs = {  # name -> preset -> executor (None: local)
            "local (--jobs 1)": lambda preset: None,
            "ray, 1 worker": lambda preset: RayExecutor(preset, workers=1),
            "ray, 2 workers": lambda preset: RayExecutor(preset, workers=2),
        }
        short, long_ = (
            f"{args.short} short ({args.short_seconds:g} s)",
            f"{args.long} long ({args.long_seconds:g} s)",
        )
        sets = {  # name -> (folder, files, seconds each, preset, configs)
            short: (root / "short", args.short, args.short_seconds, texture, list(configs)),
            long_: (root / "long", args.long, args.long_seconds, texture, list(configs)),
            f"{short}, gain only": (root / "short", args.short, args.short_seconds, gain, list(configs)[:2]),
        }
        for folder, n, seconds, *_ in sets.values():
            if not folder.exists():
                make_set(folder, n, seconds)
        executors = {(name, c): configs[c](spec[3]) for name, spec in sets.items() for c in spec[4]}
        times: dict = {key: [] for key in executors}
        for r in range(args.repeats):
            for (set_name, config), executor in executors.items():
                folder, preset = sets[set_name][0], sets[set_name][3]
                seconds, startup = run_once(folder, root / "out", preset, executor)
                times[set_name, config].append((seconds, startup))
                print(f"  round {r + 1} {set_name:<32} {config:<17} {seconds:7.2f} s", flush=True)
    ray.shutdown()

    print()
    print(
        f"preset {PRESET} (gain only: one pedalboard.Gain); {args.repeats} interleaved rounds; best / median"
    )
    head = f"{'set':<32} {'executor':<17} {'files/s':>15} {'audio-s/s':>15} {'start s':>8} {'vs local':>9}"
    print(head)
    print("-" * len(head))
    for set_name, (_, count, seconds, _, names) in sets.items():
        best_local = min(t for t, _ in times[set_name, names[0]])
        for config in names:
            runs = times[set_name, config]
            best = min(t for t, _ in runs)
            med = statistics.median(t for t, _ in runs)
            start = min(s for _, s in runs)
            audio = count * seconds
            print(
                f"{set_name:<32} {config:<17} {count / best:7.1f} /{count / med:6.1f} "
                f"{audio / best:7.1f} /{audio / med:6.1f} {start:8.2f} {best_local / best:8.2f}x"
            )
        ray1 = min(times[set_name, "ray, 1 worker"], key=lambda ts: ts[0])
        local = min(times[set_name, names[0]], key=lambda ts: ts[0])
        overhead = ((ray1[0] - ray1[1]) - (local[0] - local[1])) / count * 1000
        print(f"{'':<32} Ray overhead per file (1 worker, start-up excluded): {overhead:.1f} ms")
    print(f"machine: {os.cpu_count()} CPUs (shared); Ray started with num_cpus=2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--short", type=int, default=300)
    parser.add_argument("--short-seconds", type=float, default=0.25)
    parser.add_argument("--long", type=int, default=10)
    parser.add_argument("--long-seconds", type=float, default=20.0)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        bench(args)
        return
    # re-run inside a network namespace of its own, loopback only
    script = 'ip link set lo up && exec "$0" "$@"'
    cmd = ["unshare", "-n", "sh", "-c", script, sys.executable, *sys.argv]
    done = subprocess.run(cmd, env={**os.environ, INSIDE: "1"})
    if done.returncode:
        raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
