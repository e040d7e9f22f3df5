"""Texture weights: building ``TextureCAK`` from a weights file, importing the research checkpoint.

Our safetensors hold ``detector_weight`` (1x1x3x3), ``detector_bias`` (1), ``scale`` (1) and
optionally ``threshold`` (scalar); the metadata's ``stats`` hold ``global_low``,
``global_high``, ``alpha`` and ``gamma`` (DESIGN §5-6).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

import torch

from cakfx.checkpoints import load_research_checkpoint
from cakfx.errors import CakfxError
from cakfx.plugins.texture.model import TextureCAK
from cakfx.weights import WeightsFile

KIND = "cak.texture"
#: published generator key -> our tensor name and shape
RESEARCH_KEYS = {
    "cak.detector.conv.weight": ("detector_weight", (1, 1, 3, 3)),
    "cak.detector.conv.bias": ("detector_bias", (1,)),
    "cak.scale": ("scale", (1,)),
}
STATS_KEYS = ("global_low", "global_high", "alpha", "gamma")


def model_from_tensors(tensors: dict[str, torch.Tensor], where: str = "weights") -> TextureCAK:
    """A ``TextureCAK`` (eval mode, CPU) holding ``tensors``; errors name ``where``."""
    model = TextureCAK()
    state = {}
    for name, shape in RESEARCH_KEYS.values():
        if name not in tensors:
            raise CakfxError(f"{where}: texture weights lack the tensor {name!r}")
        value = tensors[name].detach().to(torch.float32)
        if value.numel() != math.prod(shape):
            raise CakfxError(f"{where}: tensor {name!r} has shape {tuple(value.shape)}, expected {shape}")
        state[name] = value.reshape(shape)
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise CakfxError(f"{where}: texture weights contain NaN or infinite values")
    with torch.no_grad():
        for name, value in state.items():
            getattr(model, name).copy_(value)
    if "threshold" in tensors:
        model.threshold = float(tensors["threshold"].reshape(()))
    return model.eval()


def load_model(weights_file: WeightsFile, device: torch.device) -> TextureCAK:
    """``cakfx.load_model`` hook: the texture CAK layer in eval mode on ``device``."""
    return model_from_tensors(weights_file.tensors, str(weights_file.path)).to(device).eval()


def import_checkpoint(checkpoint_path: Path, stats_path: Path | None) -> tuple[dict, dict, dict]:
    """Read the published texture checkpoint (``generator`` dict) and its stats JSON safely.

    Returns ``(tensors, stats, training)`` for ``cakfx.weights.save_weights``.
    """
    checkpoint_path = Path(checkpoint_path)
    if stats_path is None:
        raise CakfxError(
            f"{checkpoint_path}: texture checkpoints need their normalisation stats: "
            "pass --stats global_normalization_stats.json"
        )
    stats = read_stats_json(Path(stats_path))
    data = load_research_checkpoint(checkpoint_path)
    generator = data.get("generator")
    if not isinstance(generator, dict) or not all(k in generator for k in RESEARCH_KEYS):
        found = ", ".join(sorted(map(str, data))[:6])
        hint = " (this looks like a grain checkpoint: use --kind grain)" if "processor" in data else ""
        raise CakfxError(
            f"{checkpoint_path}: not a CAK texture checkpoint: expected 'generator' with "
            f"{', '.join(RESEARCH_KEYS)}; found keys {found}{hint}"
        )
    tensors = {ours: generator[key].detach().float().clone() for key, (ours, _) in RESEARCH_KEYS.items()}
    if "cak.threshold" in generator:
        tensors["threshold"] = generator["cak.threshold"].detach().to(torch.float32).reshape(())
    model_from_tensors(tensors, str(checkpoint_path))  # shapes and values check out
    epoch = generator.get("cak.epoch")
    training = {
        "trainer": "research (AuGAN, Gloame AI)",
        "source": "imported from the research checkpoint",
        "checkpoint": checkpoint_path.name,
        "stats_file": Path(stats_path).name,
        "epochs": int(epoch) + 1 if isinstance(epoch, torch.Tensor) and epoch.numel() == 1 else None,
        "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return tensors, stats, training


def read_stats_json(path: Path) -> dict:
    """The texture stats JSON (``global_low``, ``global_high``, ``alpha``, ``gamma``, STFT settings)."""
    try:
        stats = json.loads(path.read_text())
    except FileNotFoundError:
        raise CakfxError(f"stats file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CakfxError(f"{path}: not a JSON stats file ({exc})") from None
    if not isinstance(stats, dict) or any(k not in stats for k in STATS_KEYS):
        raise CakfxError(f"{path}: stats JSON must hold {', '.join(STATS_KEYS)}")
    for key in STATS_KEYS:
        if isinstance(stats[key], bool) or not isinstance(stats[key], (int, float)):
            raise CakfxError(f"{path}: stats value {key!r} must be a number, got {stats[key]!r}")
    for key, expected in (("n_fft", 2048), ("hop_length", 512), ("sample_rate", 44100)):
        if key in stats and stats[key] != expected:
            raise CakfxError(f"{path}: stats are for {key}={stats[key]}, the texture model uses {expected}")
    return stats
