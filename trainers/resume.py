"""The training checkpoint ``--resume`` reads: models, optimisers, random state and history.

Written every ``--checkpoint-every`` epochs and on Ctrl-C, as ``torch.save`` of tensors and plain
containers only, and read back with ``weights_only=True`` (never unpickling code).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cakfx.errors import CakfxError
from cakfx.trainers.base import Trainer

FILENAME = "checkpoint.pt"


def save_checkpoint(path: Path, trainer: Trainer, epoch: int, history: list[dict], info: dict) -> None:
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


def load_checkpoint(path: Path, trainer: Trainer) -> tuple[int, list[dict]]:
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
