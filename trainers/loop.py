"""A training run end to end: ``run_training(trainer_cls, options)``.

Steps: check the options, find and cache the data (``data``), build the recipe seeded, resume
if asked (``resume``), train epoch by epoch with a tqdm bar, checkpoint every N epochs and on
Ctrl-C, then write the weights (with the training record in their metadata), a ready preset and
the history (``history``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cakfx.errors import CakfxError
from cakfx.paths import cakfx_home, user_presets_dir, user_weights_dir
from cakfx.trainers.base import Trainer
from cakfx.trainers.data import FeatureCache, Found, Item, find_audio, preprocess
from cakfx.trainers.history import write_history
from cakfx.trainers.options import Options
from cakfx.trainers.resume import FILENAME, load_checkpoint, save_checkpoint


@dataclass
class TrainingResult:
    """What a run wrote and how long it took."""

    weights: Path
    preset: Path
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    files: int = 0
    prep_seconds: float = 0.0
    train_seconds: float = 0.0

    def __getitem__(self, key: str):
        return getattr(self, key)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def run_dir(name: str) -> Path:
    return cakfx_home() / "training" / name


def check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name.endswith(".safetensors"):
        raise CakfxError(f"-n/--name {name!r}: give a plain name such as 'my-texture' (no slashes)")


def check_options(trainer_cls: type[Trainer], options: Options) -> None:
    check_name(options.name)
    if options.profile not in trainer_cls.PROFILES:
        choices = ", ".join(trainer_cls.PROFILES)
        raise CakfxError(f"unknown profile {options.profile!r} (choose from {choices})")
    if options.checkpoint_every < 1:
        raise CakfxError(f"--checkpoint-every must be at least 1, got {options.checkpoint_every}")
    if options.threads is not None and options.threads < 1:
        raise CakfxError(f"--threads must be at least 1, got {options.threads}")


def choose_threads(trainer_cls: type[Trainer], options: Options, device: torch.device) -> None:
    """``--threads``, else the recipe's measured best for this profile on the CPU."""
    threads = options.threads
    if threads is None and device.type == "cpu":
        threads = trainer_cls.CPU_THREADS.get(options.profile)
    if threads is not None:
        torch.set_num_threads(threads)


def prepare_data(trainer: Trainer, found: Found, quiet: bool, echo: Callable[[str], None]):
    """Cached features of every readable file, and the list of unreadable ones."""
    cache = FeatureCache(trainer.name, trainer.cache_settings())
    t0 = time.perf_counter()
    items, failed = preprocess(found, cache, trainer.make_features, trainer.min_files, trainer.name, quiet)
    seconds = time.perf_counter() - t0
    notes = [f"{len(items)} audio files under {found.root}"]
    if found.non_audio:
        notes.append(f"{found.non_audio} non-audio skipped")
    if found.excluded:
        notes.append(f"{found.excluded} excluded")
    if failed:
        notes.append(f"{len(failed)} unreadable skipped")
    notes.append(f"cache: {cache.hits} reused, {cache.misses} decoded ({seconds:.1f} s)")
    echo("; ".join(notes))
    return items, failed, seconds


def train_epochs(trainer: Trainer, options: Options, start: int, history: list[dict], ckpt: Path,
                 info: dict, echo: Callable[[str], None]) -> int:
    """Epochs ``start+1 .. epochs``, checkpointing every N and on Ctrl-C (then re-raised); the last epoch."""
    from tqdm.auto import tqdm

    epochs = trainer.settings["epochs"]
    epoch = start
    try:
        for epoch_index in range(start, epochs):
            t1 = time.perf_counter()
            with tqdm(
                total=trainer.batches_per_epoch(),
                desc=f"epoch {epoch_index + 1}/{epochs}",
                unit="batch",
                disable=options.quiet,
                file=sys.stderr,
                leave=False,
            ) as bar:
                losses = trainer.train_epoch(epoch_index, bar)
            epoch = epoch_index + 1
            history.append({"epoch": epoch, **losses, "seconds": round(time.perf_counter() - t1, 3)})
            echo(f"epoch {epoch}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))
            if epoch % options.checkpoint_every == 0 or epoch == epochs:
                save_checkpoint(ckpt, trainer, epoch, history, info)
    except KeyboardInterrupt:
        # the partial epoch is dropped from the record; its updates stay in the saved state
        save_checkpoint(ckpt, trainer, epoch, history, info)
        write_history(ckpt.parent, history, f"{options.name} ({trainer.name}, interrupted)")
        echo(f"interrupted after epoch {epoch}: checkpoint saved to {ckpt}; continue with --resume")
        raise
    return epoch


def training_record(trainer: Trainer, options: Options, found: Found, items: list[Item], failed: list[str],
                    history: list[dict], epoch: int, start: int, extras: dict) -> dict:
    """The ``training`` metadata stored in the weights file."""
    final = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch", "seconds")}
    return {
        "trainer": f"cakfx train {trainer.name}",
        "profile": options.profile,
        "profile_note": trainer.settings.get("note", ""),
        "settings": {k: v for k, v in trainer.settings.items() if k != "note"},
        "dataset": {
            "root": found.root.name,
            "files": len(items),
            "non_audio_skipped": found.non_audio,
            "excluded": found.excluded,
            "exclude_patterns": list(options.exclude),
            "unreadable_skipped": len(failed),
            **trainer.dataset_summary(),
        },
        "epochs": epoch,
        "resumed_from_epoch": start if options.resume else None,
        "seed": options.seed,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(trainer.device),
        "threads": torch.get_num_threads() if trainer.device.type == "cpu" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "final_losses": final,
        "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
        **extras,
    }


def write_preset(path: Path, name: str, description: str, chain: list[dict]) -> Path:
    """A ready preset for the new weights (atomic)."""
    import tomli_w

    doc = {"preset": {"name": name, "description": description, "author": "cakfx train"}, "chain": chain}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tomli_w.dumps(doc))
    os.replace(tmp, path)
    return path


def run_training(trainer_cls: type[Trainer], options: Options,
                 echo: Callable[[str], None] = lambda text: None) -> TrainingResult:
    """Train one recipe end to end; ``echo`` receives one-line progress notes.

    Raises ``CakfxError`` on bad options or data, ``KeyboardInterrupt`` after saving a checkpoint.
    """
    from cakfx.device import resolve_device
    from cakfx.weights import save_weights, sha256_file

    check_options(trainer_cls, options)
    device = resolve_device(options.device)
    choose_threads(trainer_cls, options, device)
    found = find_audio(options.samples, options.exclude)
    folder = run_dir(options.name)
    ckpt = folder / FILENAME
    if options.resume and not ckpt.is_file():
        raise CakfxError(f"--resume: no checkpoint at {ckpt} (train once without --resume first)")
    seed_everything(options.seed)
    trainer = trainer_cls(options, device)
    if trainer.settings["epochs"] < 1 or trainer.settings["batch_size"] < 1:
        raise CakfxError("--epochs and --batch-size must be at least 1")
    items, failed, prep_s = prepare_data(trainer, found, options.quiet, echo)

    seed_everything(options.seed)
    trainer.setup(items)
    start, history = 0, []
    if options.resume:
        start, history = load_checkpoint(ckpt, trainer)
        echo(f"resuming from epoch {start} ({ckpt})")
    epochs = trainer.settings["epochs"]
    echo(
        f"training {trainer.name} ({options.profile} profile) on {device}, "
        f"{torch.get_num_threads()} thread(s): epochs {start + 1}..{epochs}, "
        f"batch {trainer.settings['batch_size']}, seed {options.seed}"
    )
    info = {"samples": str(found.root), "files": len(items)}
    t0 = time.perf_counter()
    epoch = train_epochs(trainer, options, start, history, ckpt, info, echo)
    train_s = time.perf_counter() - t0

    tensors, stats, extras = trainer.export()
    record = training_record(trainer, options, found, items, failed, history, epoch, start, extras)
    out_dir = Path(options.out).expanduser() if options.out else user_weights_dir()
    weights_path = save_weights(
        out_dir / f"{options.name}.safetensors", tensors, trainer.kind, stats, record, options.name
    )
    ref = options.name if not options.out else str(weights_path.resolve())
    preset_path = write_preset(
        user_presets_dir() / f"{options.name}.toml",
        options.name,
        f"{trainer.kind} trained by 'cakfx train {trainer.name}' on {len(items)} files "
        f"({options.profile} profile, {epochs} epochs, seed {options.seed})",
        trainer.preset_chain(ref, sha256_file(weights_path)),
    )
    plots = write_history(folder, history, f"{options.name} ({trainer.name}, {options.profile})")
    echo(f"weights: {weights_path}")
    echo(f"preset:  {preset_path}  (cakfx process IN -p {options.name} -o OUT)")
    echo(f"history: {', '.join(str(p) for p in plots)}")
    return TrainingResult(weights_path, preset_path, folder, history, len(items), prep_s, train_s)
