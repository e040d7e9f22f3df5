"""What a training run takes, declared once: the ``Options`` fields carry their help text, and
the CLI builds each ``cakfx train NAME`` command from them. Importing this module is cheap (no
torch), so registering trainers costs nothing at start-up."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("paper", "fast")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class Options:
    """One training run. ``samples`` (a folder) and ``name`` (of the weights and preset) are required.

    Every other field is a ``cakfx train`` option of the same name (``batch_size`` is ``--batch-size``).
    """

    samples: str = field(metadata={"help": "Folder of audio files to train on.", "argument": True})
    name: str = field(metadata={"help": "Name of the weights and preset to write.", "short": "-n"})
    profile: str = _opt(
        "fast", "paper = the published recipe; fast = shorter crops and a lighter critic for CPUs.",
        choices=PROFILES,
    )
    epochs: int | None = _opt(None, "Epochs (default: the profile's).", type=int)
    batch_size: int | None = _opt(None, "Batch size (default: the profile's).", type=int)
    device: str | None = _opt(None, "auto, cpu, cuda[:N] or mps (default: $CAKFX_DEVICE or auto).")
    seed: int = _opt(42, "Seed for everything random.", type=int)
    resume: bool = _opt(False, "Continue from the last checkpoint of NAME.", flag=True)
    checkpoint_every: int = _opt(5, "Epochs per checkpoint.", type=int)
    out: str | None = _opt(None, "Folder for the weights (default: the user weights folder).")
    exclude: tuple[str, ...] = _opt(
        (), "Leave out files whose path under SAMPLES matches (repeatable), e.g. 'kit2/*'.",
        multiple=True, metavar="GLOB",
    )
    threads: int | None = _opt(
        None, "CPU threads for torch (default: the recipe's fastest measured setting, 1 on small models).",
        type=int,
    )
    quiet: bool = _opt(False, "No progress bars.", flag=True, short="-q")


@dataclass(frozen=True)
class TrainerSpec:
    """A registered trainer: its name, the weights kind it makes, and where its class lives.

    ``target`` is ``"module:Class"``; the class (a ``cakfx.trainers.base.Trainer``) is imported
    only when a run starts, so listing trainers never imports torch.
    """

    name: str
    kind: str
    target: str
    summary: str = ""
    help: str = ""
    plugin: str = ""

    def load(self) -> type:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)
