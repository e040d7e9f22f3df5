"""The recipe interface every trainer implements (``TextureTrainer``, ``GrainTrainer``).

A recipe turns files into cached features (``make_features``), builds its data set, models and
optimisers (``setup``), trains one batch (``train_step``) and exports weights, stats and a preset
chain; ``cakfx.trainers.loop.run_training`` does everything around that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cakfx.trainers.data import Item
from cakfx.trainers.options import Options


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
    #: torch CPU threads when ``--threads`` is not given, per profile: the fastest measured
    #: setting (``python bench/train.py --compare-threads``). The fast profiles' models are so
    #: small that a second thread only adds OpenMP barriers (23-55x slower on a busy machine).
    #: ``None`` keeps torch's default (the paper critic's large convolutions use every core).
    CPU_THREADS = {"fast": 1, "paper": None}  # type: dict[str, int | None]

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

    def optimisers(self) -> dict:
        """Name -> optimiser (anything with ``state_dict``/``load_state_dict``), for checkpoints."""
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
