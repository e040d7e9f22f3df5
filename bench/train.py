"""Training throughput of the trainer recipes on this machine.

    python bench/train.py [--device auto|cpu|cuda|mps] [--threads N] [--steps N]

For each trainer (texture, grain) and profile (fast, paper) this builds the
real recipe on synthetic drum loops (features made by the trainers' own
preprocessing), times ``--steps`` training steps after one warm-up step, and
prints samples per second and the projected time of one epoch on 200 files
(200 identity samples + 100 low->high pairs = 300 samples; preprocessing,
which runs once and is cached, is not included).

``--compare-threads`` instead times the ``fast`` profile's training steps at 1 and 2 torch
threads and at the recipe's default (``Trainer.CPU_THREADS``), interleaved in one run, and prints
each setting's median per batch and the ratio default / best (target: <= 1.2).

The texture paper profile on a CPU is far too slow to time whole steps (5
critic steps with a gradient penalty on 1025 x 1293 spectrograms per generator
step): there one critic step and one generator step are timed on a batch of 4
and the batch-16 step is projected as (5 critic + 1 generator) x 16/4.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cakfx.device import resolve_device
from cakfx.trainers.data import Item
from cakfx.trainers.grain import GrainTrainer
from cakfx.trainers.options import Options
from cakfx.trainers.texture import TextureTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ lives beside bench/, not in the wheel
from tools.demo import SR, drum_loop  # noqa: E402

EPOCH_SAMPLES = 300  # 200 files: each once as identity, plus 100 low->high pairs


def synthetic_items(trainer, n: int, seconds: float) -> list[Item]:
    items = []
    for i in range(n):
        audio = drum_loop(seconds=seconds, bpm=90 + 7 * i, seed=i)
        audio = audio + 0.01 * i * np.random.default_rng(i).standard_normal(audio.shape).astype(np.float32)
        items.append(Item(f"loop{i}.wav", f"{i:064x}", trainer.make_features(audio, SR)))
    return items


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def bench(cls, profile: str, device: torch.device, steps: int) -> dict:
    trainer = cls(Options(samples="-", name="bench", profile=profile, device=str(device)), device)
    seconds = trainer.settings.get("segment_s", 3.0) + 1.0
    trainer.setup(synthetic_items(trainer, 8, seconds))
    trainer.start_epoch(5)
    batch = trainer.settings["batch_size"]
    rows = [trainer.samples[i % len(trainer.samples)] for i in range(batch)]
    split = cls is TextureTrainer and profile == "paper" and device.type == "cpu"
    if split:
        small = rows[:4]
        x, y = trainer.batch(small)
        t = torch.tensor([c for _, _, c in small], dtype=torch.float32, device=device)
        trainer.critic_step(x, y, t)  # warm-up
        critic = timed(lambda: trainer.critic_step(x, y, t), device)
        gen = timed(lambda: trainer.generator_step(x, y, t), device)
        per_batch = (trainer.settings["critic_steps"] * critic + gen) * batch / len(small)
        note = f"projected from batch 4: critic step {critic:.2f} s, generator step {gen:.2f} s"
    else:
        trainer.train_step(rows)  # warm-up
        per_batch = sum(timed(lambda: trainer.train_step(rows), device) for _ in range(steps)) / steps
        note = f"{steps} timed steps"
    rate = batch / per_batch
    return {"per_batch": per_batch, "rate": rate, "epoch": EPOCH_SAMPLES / rate, "note": note}


def compare_threads(device: torch.device, steps: int, repeats: int) -> None:
    """Median s/batch per thread setting, the settings interleaved so machine load hits all alike."""
    import statistics

    settings = sorted({1, 2, torch.get_num_threads()})
    print(f"fast profile, s/batch (median of {repeats} interleaved repeats of {steps} steps)")
    head = "".join(f"{f'{n} thr':>10s}" for n in settings)
    print(f"{'trainer':8s}{head}{'default':>10s}{'default/best':>14s}")
    for cls in (TextureTrainer, GrainTrainer):
        trainer = cls(Options(samples="-", name="bench", profile="fast", device=str(device)), device)
        trainer.setup(synthetic_items(trainer, 8, trainer.settings.get("segment_s", 3.0) + 1.0))
        trainer.start_epoch(5)
        rows = [trainer.samples[i % len(trainer.samples)] for i in range(trainer.settings["batch_size"])]
        default = cls.CPU_THREADS["fast"] or torch.get_num_threads()
        times: dict[int, list[float]] = {n: [] for n in settings}
        for _ in range(repeats):
            for n in settings:
                torch.set_num_threads(n)
                trainer.train_step(rows)  # warm-up at this setting
                step = trainer.train_step
                per_batch = sum(timed(lambda s=step, r=rows: s(r), device) for _ in range(steps)) / steps
                times[n].append(per_batch)
        med = {n: statistics.median(v) for n, v in times.items()}
        best = min(med.values())
        print(f"{cls.name:8s}" + "".join(f"{med[n]:10.3f}" for n in settings) + f"{default:>10d}"
              f"{med[default] / best:14.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", choices=("texture", "grain"), default=None)
    parser.add_argument("--profile", choices=("fast", "paper"), default=None)
    parser.add_argument("--compare-threads", action="store_true", help="default vs best thread count")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.compare_threads:
        compare_threads(device, args.steps, args.repeats)
        return
    print(f"{'trainer':8s} {'profile':7s} {'s/batch':>9s} {'samples/s':>10s} {'epoch@200 files':>18s}  how")
    for cls in (TextureTrainer, GrainTrainer):
        if args.only and cls.name != args.only:
            continue
        for profile in ("fast", "paper"):
            if args.profile and profile != args.profile:
                continue
            r = bench(cls, profile, device, args.steps)
            print(
                f"{cls.name:8s} {profile:7s} {r['per_batch']:9.3f} {r['rate']:10.2f} "
                f"{r['epoch']:7.0f} s ({r['epoch'] / 60:5.1f} min)  {r['note']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
