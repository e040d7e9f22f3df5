"""What the texture and grain trainers share (DESIGN §8).

* ``find_audio``: recursive walk; non-audio is counted and skipped; one clear
  error for a missing/empty folder, a folder without audio, too few files.
* ``FeatureCache``: preprocessed tensors per file, keyed by the file's content
  hash and the recipe's settings, so a rerun never decodes audio again.
* ``Trainer``: the recipe interface (preprocess, setup, one epoch, export).
* ``run_training``: seeding, tqdm per epoch, checkpoints every N epochs and on
  Ctrl-C, ``--resume``, history.json/png, the weights file and a ready preset.
* ``train_options``: the click options both ``cakfx train`` commands take.

Checkpoints are ``torch.save`` of tensors and plain containers only and are
read back with ``weights_only=True``.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cakfx.audio import is_audio_path, read_audio, walk_files
from cakfx.dsp.resample import resample
from cakfx.errors import CakfxError
from cakfx.paths import cakfx_home, user_presets_dir, user_weights_dir
from cakfx.spectral import MODEL_SR
from cakfx.weights import sha256_file

PROFILES = ("paper", "fast")
CHECKPOINT = "checkpoint.pt"


# ---- data -------------------------------------------------------------------------------------


@dataclass
class Found:
    """The audio files under a folder, and what was left out."""

    root: Path
    files: list[Path]
    non_audio: int = 0
    excluded: int = 0

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def find_audio(folder: str | os.PathLike, exclude: tuple[str, ...] = ()) -> Found:
    """Every audio file under ``folder`` (sorted, recursive).

    ``exclude`` holds glob patterns matched against paths relative to ``folder``
    (e.g. ``"VariBreaks/*"`` to hold a kit out of training).
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise CakfxError(f"{root}: no such folder")
    if not root.is_dir():
        raise CakfxError(f"{root}: not a folder (give the folder of samples to train on)")
    everything = walk_files(root)
    if not everything:
        raise CakfxError(f"{root}: the folder is empty (no files to train on)")
    kept, excluded = [], 0
    for p in everything:
        rel = p.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in exclude):
            excluded += 1
        else:
            kept.append(p)
    audio = [p for p in kept if is_audio_path(p)]
    non_audio = len(kept) - len(audio)
    if not audio:
        detail = f"{non_audio} non-audio file{'s' * (non_audio != 1)}"
        if excluded:
            detail += f", {excluded} excluded"
        raise CakfxError(f"{root}: no audio files found ({detail})")
    return Found(root, audio, non_audio, excluded)


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def to_model_mono(audio: np.ndarray, sr: int) -> torch.Tensor:
    """``(C, N)`` audio -> mono float32 at the models' 44.1 kHz (the published recipes downmix)."""
    mono = torch.from_numpy(np.asarray(audio, dtype=np.float32)).mean(dim=0)
    if sr != MODEL_SR:
        mono = resample(mono, sr, MODEL_SR)
    return mono


class FeatureCache:
    """Preprocessed features per file in ``$CAKFX_HOME/cache/train/TRAINER``.

    The key is the file's SHA-256 plus a digest of the settings, so changed
    audio or a changed recipe misses the cache and an unchanged rerun only
    reads bytes to hash them: no decoding.
    """

    def __init__(self, trainer: str, settings: dict) -> None:
        self.folder = cakfx_home() / "cache" / "train" / trainer
        self.settings_key = settings_digest(settings)
        self.hits = 0
        self.misses = 0

    def get(
        self, path: Path, make: Callable[[np.ndarray, int], dict[str, torch.Tensor]]
    ) -> tuple[str, dict[str, torch.Tensor]]:
        """``(content digest, tensors)``; ``make(audio, sr)`` runs only on a miss.

        Raises ``CakfxError`` when the file cannot be read.
        """
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise CakfxError(f"{path}: cannot read ({exc.strerror or exc})") from None
        entry = self.folder / f"{digest[:32]}-{self.settings_key}.safetensors"
        if entry.is_file():
            try:
                tensors = load_file(str(entry))
                self.hits += 1
                return digest, tensors
            except Exception:  # a damaged cache entry is rebuilt, never fatal
                pass
        audio, info = read_audio(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in make(audio, info.sample_rate).items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, entry)
        self.misses += 1
        return digest, tensors


@dataclass
class Item:
    """One readable training file and its cached features."""

    rel: str
    digest: str
    features: dict[str, torch.Tensor]


def preprocess(
    found: Found,
    cache: FeatureCache,
    make: Callable[[np.ndarray, int], dict[str, torch.Tensor]],
    need: int,
    what: str,
    quiet: bool = False,
) -> tuple[list[Item], list[str]]:
    """Cache features for every file; unreadable files are reported by path and skipped.

    Raises ``CakfxError`` when fewer than ``need`` files are usable.
    """
    from tqdm.auto import tqdm

    items: list[Item] = []
    failed: list[str] = []
    bar = tqdm(found.files, desc="preparing", unit="file", disable=quiet, leave=False, file=sys.stderr)
    for path in bar:
        try:
            digest, feats = cache.get(path, make)
        except CakfxError as exc:
            failed.append(str(exc))
            tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
            continue
        items.append(Item(found.rel(path), digest, feats))
    bar.close()
    if len(items) < need:
        extra = f" ({len(failed)} unreadable)" if failed else ""
        raise CakfxError(
            f"{found.root}: the {what} recipe needs at least {need} audio files, "
            f"found {len(items)} usable{extra}"
        )
    return items, failed


def low_high_pairs(values: list[float]) -> list[tuple[int, int]]:
    """Sort by value; pair the i-th of the lower half with the i-th of the upper half.

    Returns ``(low_index, high_index)`` into ``values`` (an odd middle file is
    left unpaired, as in the published recipes).
    """
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    half = len(order) // 2
    return list(zip(order[:half], order[len(order) - half :]))


# ---- the recipe interface -----------------------------------------------------------------------


@dataclass
class Options:
    """What the user asked for on the command line."""

    samples: str
    name: str
    profile: str = "fast"
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    seed: int = 42
    resume: bool = False
    checkpoint_every: int = 5
    out: str | None = None
    exclude: tuple[str, ...] = ()
    threads: int | None = None
    quiet: bool = False


@dataclass
class Trainer:
    """Base of a recipe. Subclasses fill in the class attributes and methods below."""

    options: Options
    device: torch.device
    settings: dict = field(default_factory=dict)

    #: the trainer's name (``texture``) and the weights kind it makes (``cak.texture``)
    name = ""
    kind = ""
    min_files = 2
    #: profile name -> settings (epochs, batch_size, ...); ``paper`` is DESIGN §8 exactly
    PROFILES = {}  # type: dict[str, dict]

    def __post_init__(self) -> None:
        self.settings = dict(self.PROFILES[self.options.profile])
        if self.options.epochs is not None:
            self.settings["epochs"] = self.options.epochs
        if self.options.batch_size is not None:
            self.settings["batch_size"] = self.options.batch_size
        self.gen = torch.Generator().manual_seed(self.options.seed)

    # -- subclass API
    def cache_settings(self) -> dict:
        """The settings that change preprocessed features (the cache key)."""
        raise NotImplementedError

    def make_features(self, audio: np.ndarray, sr: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def setup(self, items: list[Item]) -> None:
        """Build the data set, the models and the optimisers (seeded)."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def batches_per_epoch(self) -> int:
        return -(-len(self.samples) // self.settings["batch_size"])

    def start_epoch(self, epoch: int) -> None:
        """Put the models in training mode (and e.g. set the epoch's temperature)."""

    def end_epoch(self) -> dict[str, float]:
        """Extra per-epoch values for the history (e.g. the temperature)."""
        return {}

    def train_step(self, rows: list) -> dict[str, float]:
        """One generator step (with its critic/discriminator steps) on a batch of samples."""
        raise NotImplementedError

    def train_epoch(self, epoch: int, bar) -> dict[str, float]:
        """One pass over ``self.samples`` in seeded random batches; mean losses per epoch."""
        self.start_epoch(epoch)
        totals: dict[str, float] = {}
        batches = self.batch_indices(len(self.samples))
        for idx in batches:
            step = self.train_step([self.samples[i] for i in idx])
            for k, v in step.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(step.items())[:2]}, refresh=False)
            bar.update(1)
        return {**{k: v / len(batches) for k, v in totals.items()}, **self.end_epoch()}

    def export(self) -> tuple[dict[str, torch.Tensor], dict, dict]:
        """``(tensors, stats, training record extras)`` for the weights file."""
        raise NotImplementedError

    def preset_chain(self, weights_ref: str, sha256: str) -> list[dict]:
        raise NotImplementedError

    def dataset_summary(self) -> dict:
        return {}

    # -- shared helpers
    def randint(self, high: int) -> int:
        """A reproducible integer in [0, high] from the trainer's generator."""
        return int(torch.randint(0, high + 1, (1,), generator=self.gen))

    def permutation(self, n: int) -> list[int]:
        return torch.randperm(n, generator=self.gen).tolist()

    def batch_indices(self, n: int) -> list[list[int]]:
        order = self.permutation(n)
        size = self.settings["batch_size"]
        return [order[i : i + size] for i in range(0, n, size)]


# ---- shared network pieces ----------------------------------------------------------------------


def realism_net(channels: tuple[int, int, int], norm: type[torch.nn.Module], sigmoid: bool = False):
    """The realism branch both recipes use (layer indices as in the published state dicts).

    conv 1->c1 4x4 s2, LReLU(0.2); conv c1->c2 4x4 s2, norm, LReLU; conv c2->c3 4x4 s2,
    norm, LReLU; global average pool; linear c3->1 (then a sigmoid for the grain GAN).
    """
    nn = torch.nn
    c1, c2, c3 = channels
    layers = [
        nn.Conv2d(1, c1, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1),
        norm(c2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c2, c3, 4, stride=2, padding=1),
        norm(c3),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, 1),
    ]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


# ---- running a recipe ---------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def run_dir(name: str) -> Path:
    return cakfx_home() / "training" / name


def _save_checkpoint(path: Path, trainer: Trainer, epoch: int, history: list[dict], info: dict) -> None:
    state = {
        "trainer": trainer.name,
        "profile": trainer.options.profile,
        "epoch": epoch,
        "history": history,
        "info": info,
        "generator_state": trainer.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "modules": {k: m.state_dict() for k, m in trainer.modules().items()},
        "optimisers": {k: o.state_dict() for k, o in trainer.optimisers().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, trainer: Trainer) -> tuple[int, list[dict]]:
    if not path.is_file():
        raise CakfxError(f"--resume: no checkpoint at {path} (train once without --resume first)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CakfxError(f"{path}: cannot read the checkpoint ({str(exc).splitlines()[0]})") from None
    if state.get("trainer") != trainer.name or state.get("profile") != trainer.options.profile:
        raise CakfxError(
            f"{path}: the checkpoint is from 'cakfx train {state.get('trainer')}' with profile "
            f"{state.get('profile')!r}, not {trainer.name!r} with {trainer.options.profile!r}"
        )
    try:
        for key, module in trainer.modules().items():
            module.load_state_dict(state["modules"][key])
        for key, opt in trainer.optimisers().items():
            opt.load_state_dict(state["optimisers"][key])
        trainer.gen.set_state(state["generator_state"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CakfxError(f"{path}: the checkpoint does not fit this recipe ({reason})") from None
    return int(state["epoch"]), list(state["history"])


def write_history(folder: Path, history: list[dict], title: str) -> list[Path]:
    """history.json always; history.png when matplotlib is importable."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "history.json"]
    written[0].write_text(json.dumps(history, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return written
    keys = [k for k in (history[0] if history else {}) if k not in ("epoch", "seconds")]
    if not keys:
        return written
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys)), sharex=True, squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes[:, 0], keys):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker=".")
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(folder / "history.png", dpi=90)
    plt.close(fig)
    written.append(folder / "history.png")
    return written


def write_preset(path: Path, name: str, description: str, chain: list[dict]) -> Path:
    import tomli_w

    doc = {"preset": {"name": name, "description": description, "author": "cakfx train"}, "chain": chain}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(tomli_w.dumps(doc))
    os.replace(tmp, path)
    return path


def check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name.endswith(".safetensors"):
        raise CakfxError(f"-n/--name {name!r}: give a plain name such as 'my-texture' (no slashes)")


def run_training(trainer_cls: type[Trainer], options: Options, echo: Callable[[str], None]) -> dict:
    """Train one recipe end to end; return a summary (paths, losses, timings).

    Raises ``KeyboardInterrupt`` after saving a checkpoint when interrupted.
    """
    from tqdm.auto import tqdm

    from cakfx.device import resolve_device
    from cakfx.weights import save_weights, sha256_file

    check_name(options.name)
    if options.profile not in trainer_cls.PROFILES:
        raise CakfxError(f"unknown profile {options.profile!r} (choose from {', '.join(PROFILES)})")
    if options.checkpoint_every < 1:
        raise CakfxError(f"--checkpoint-every must be at least 1, got {options.checkpoint_every}")
    device = resolve_device(options.device)
    if options.threads is not None:
        if options.threads < 1:
            raise CakfxError(f"--threads must be at least 1, got {options.threads}")
        # small models on a busy CPU run many times faster on one thread than oversubscribed
        torch.set_num_threads(options.threads)
    found = find_audio(options.samples, options.exclude)
    folder = run_dir(options.name)
    ckpt = folder / CHECKPOINT
    if options.resume and not ckpt.is_file():
        raise CakfxError(f"--resume: no checkpoint at {ckpt} (train once without --resume first)")
    seed_everything(options.seed)
    trainer = trainer_cls(options, device)
    if trainer.settings["epochs"] < 1 or trainer.settings["batch_size"] < 1:
        raise CakfxError("--epochs and --batch-size must be at least 1")
    cache = FeatureCache(trainer.name, trainer.cache_settings())
    t0 = time.perf_counter()
    items, failed = preprocess(
        found, cache, trainer.make_features, trainer.min_files, trainer.name, options.quiet
    )
    prep_s = time.perf_counter() - t0
    notes = [f"{len(items)} audio files under {found.root}"]
    if found.non_audio:
        notes.append(f"{found.non_audio} non-audio skipped")
    if found.excluded:
        notes.append(f"{found.excluded} excluded")
    if failed:
        notes.append(f"{len(failed)} unreadable skipped")
    notes.append(f"cache: {cache.hits} reused, {cache.misses} decoded ({prep_s:.1f} s)")
    echo("; ".join(notes))

    seed_everything(options.seed)
    trainer.setup(items)
    start, history = 0, []
    if options.resume:
        start, history = _load_checkpoint(ckpt, trainer)
        echo(f"resuming from epoch {start} ({ckpt})")
    epochs = trainer.settings["epochs"]
    info = {"samples": str(found.root), "files": len(items)}
    echo(
        f"training {trainer.name} ({options.profile} profile) on {device}: epochs {start + 1}..{epochs}, "
        f"batch {trainer.settings['batch_size']}, seed {options.seed}"
    )
    epoch = start
    train_s = 0.0
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
            seconds = time.perf_counter() - t1
            train_s += seconds
            epoch = epoch_index + 1
            history.append({"epoch": epoch, **losses, "seconds": round(seconds, 3)})
            echo(f"epoch {epoch}/{epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in losses.items()))
            if epoch % options.checkpoint_every == 0 or epoch == epochs:
                _save_checkpoint(ckpt, trainer, epoch, history, info)
    except KeyboardInterrupt:
        # the partial epoch is dropped from the record; its updates stay in the saved state
        _save_checkpoint(ckpt, trainer, epoch, history, info)
        write_history(folder, history, f"{options.name} ({trainer.name}, interrupted)")
        echo(f"interrupted after epoch {epoch}: checkpoint saved to {ckpt}; continue with --resume")
        raise

    tensors, stats, extras = trainer.export()
    final = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch", "seconds")}
    training = {
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
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "final_losses": final,
        "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
        **extras,
    }
    out_dir = Path(options.out).expanduser() if options.out else user_weights_dir()
    weights_path = save_weights(
        out_dir / f"{options.name}.safetensors", tensors, trainer.kind, stats, training, options.name
    )
    sha = sha256_file(weights_path)
    ref = options.name if not options.out else str(weights_path.resolve())
    preset_path = write_preset(
        user_presets_dir() / f"{options.name}.toml",
        options.name,
        f"{trainer.kind} trained by 'cakfx train {trainer.name}' on {len(items)} files "
        f"({options.profile} profile, {epochs} epochs, seed {options.seed})",
        trainer.preset_chain(ref, sha),
    )
    plots = write_history(folder, history, f"{options.name} ({trainer.name}, {options.profile})")
    echo(f"weights: {weights_path}")
    echo(f"preset:  {preset_path}  (cakfx process IN -p {options.name} -o OUT)")
    echo(f"history: {', '.join(str(p) for p in plots)}")
    return {
        "weights": weights_path,
        "preset": preset_path,
        "history": history,
        "run_dir": folder,
        "prep_seconds": prep_s,
        "train_seconds": train_s,
        "files": len(items),
    }


# ---- click --------------------------------------------------------------------------------------


def train_options(func: Callable) -> Callable:
    """The arguments and options both ``cakfx train`` commands take."""
    decorators = [
        click.argument("samples", type=click.Path(file_okay=True, dir_okay=True, path_type=str)),
        click.option("-n", "--name", required=True, help="Name of the weights and preset to write."),
        click.option(
            "--profile",
            type=click.Choice(PROFILES),
            default="fast",
            show_default=True,
            help="paper = the published recipe; fast = shorter crops and a lighter critic for CPUs.",
        ),
        click.option("--epochs", type=int, default=None, help="Epochs (default: the profile's)."),
        click.option("--batch-size", type=int, default=None, help="Batch size (default: the profile's)."),
        click.option(
            "--device",
            type=click.Choice(("auto", "cpu", "cuda", "mps")),
            default="auto",
            show_default=True,
        ),
        click.option("--seed", type=int, default=42, show_default=True, help="Seed for everything random."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint of NAME."),
        click.option(
            "--checkpoint-every", type=int, default=5, show_default=True, help="Epochs per checkpoint."
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=str),
            default=None,
            help="Folder for the weights (default: the user weights folder).",
        ),
        click.option(
            "--exclude",
            multiple=True,
            metavar="GLOB",
            help="Leave out files whose path under SAMPLES matches (repeatable), e.g. 'kit2/*'.",
        ),
        click.option(
            "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)."
        ),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def make_command(trainer_cls: type[Trainer], help_text: str) -> click.Command:
    """The ``cakfx train NAME`` click command for a recipe."""

    @click.command(trainer_cls.name, help=help_text)
    @train_options
    def command(**kwargs: Any) -> None:
        options = Options(**kwargs)
        try:
            run_training(trainer_cls, options, lambda text: click.echo(text, err=True))
        except CakfxError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    return command
