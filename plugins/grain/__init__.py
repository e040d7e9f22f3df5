"""The ``cak.grain`` effect plugin: the CAK grain processor (DESIGN §7)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cakfx.errors import CakfxError
from cakfx.hookspecs import hookimpl
from cakfx.neural import NeuralEffect
from cakfx.params import Param

if TYPE_CHECKING:  # torch is imported when a model is built, not when the effect registers
    import torch

SUMMARY = "Neural grain processor: brightens and flattens (grain > 0) or darkens (grain < 0) the spectrum"
DESCRIPTION = (
    "The CAK grain processor (three conditioning-aware kernel layers on a 128-band mel spectrogram). "
    "Measured on real material (bench/quality.py): positive grain makes the spectrum brighter and "
    "flatter (centroid +0.6 / +1.2 kHz at +0.5 / +1.5), negative grain darker. The bundled weights "
    "are trained on both signs (-3…+3); the published checkpoint and the paper recipe only on "
    "g >= 0. 0 is a true bypass. The "
    "model's change to the mel spectrogram is applied as a refined per-band gain on the original STFT "
    "with its phase kept (reconstruction='phase'); 'griffinlim' rebuilds the audio as the original "
    "research code did. Every channel is processed; any sample rate (the model runs at 44.1 kHz; above "
    "it the band the model cannot see passes through unchanged). Streams (reset=False) with a latency "
    "of about 3.9 s (its 3 s analysis windows): not for live use."
)


def load_model(weights_file, device: torch.device) -> torch.nn.Module:
    """The ``GrainProcessor`` in ``weights_file``, in eval mode on ``device``."""
    from cakfx.plugins.grain.model import GrainProcessor

    model = GrainProcessor()
    try:
        model.load_state_dict(weights_file.tensors)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        raise CakfxError(f"{weights_file.path}: not grain model weights ({reason[-1].strip()})") from None
    return model.to(device).eval()


def import_checkpoint(checkpoint_path: Path, stats_path: Path | None = None):
    """Tensors, stats and training record from a research grain checkpoint (``processor``).

    ``stats_path`` is ignored: the grain model normalises each window itself.
    """
    import torch

    from cakfx.checkpoints import load_research_checkpoint
    from cakfx.plugins.grain.model import GrainProcessor

    data = load_research_checkpoint(checkpoint_path)
    state = data.get("processor")
    expected = GrainProcessor().state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        found = ", ".join(sorted(str(k) for k in data)[:6])
        raise CakfxError(
            f"{checkpoint_path}: not a CAK grain checkpoint (no grain 'processor'; found: {found})"
        )
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[key].shape:
            raise CakfxError(f"{checkpoint_path}: not a CAK grain checkpoint ({key} has the wrong shape)")
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}
    training = {"source": "research checkpoint", "checkpoint": Path(checkpoint_path).name}
    history = data.get("history")
    if isinstance(history, dict):
        lengths = {len(v) for v in history.values() if hasattr(v, "__len__")}
        if lengths:
            training["epochs"] = max(lengths)
    return tensors, {}, training


def _expected_shapes(stats: dict) -> dict[str, tuple[int, ...]]:
    """The published ``processor`` state dict, tensor by tensor (checked on install and validate)."""
    conv = {"conv1": (8, 1, 3, 3), "conv2": (16, 8, 5, 5), "conv3": (8, 16, 3, 3), "conv4": (1, 8, 1, 1)}
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in ("cak1", "cak2", "cak3"):
        for name, shape in conv.items():
            shapes[f"{layer}.pattern_detector.{name}.weight"] = shape
            shapes[f"{layer}.pattern_detector.{name}.bias"] = (shape[0],)
        shapes[f"{layer}.scale"] = (1,)
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"output_norm.{name}"] = (1,)
    shapes["output_norm.num_batches_tracked"] = ()
    return shapes


EFFECT = NeuralEffect(
    "cak.grain",
    default_weights="cak-grain-default",
    params=[
        Param("grain", "float", 1.0, "grain control: positive brightens the spectrum, negative darkens it "
              "(the bundled weights are trained on -3…+3, both directions), 0 is bypass", min=-3.0, max=3.0),
        Param("reconstruction", "choice", "phase", "'phase': gain mask on the original STFT (fast, keeps "
              "the phase); 'griffinlim': the original's Griffin-Lim (slow)", choices=("phase", "griffinlim")),
        Param("level", "choice", "match", "output level: 'match' the input's integrated loudness (a limiter "
              "only where peaks would pass ceiling_db), 'original' (the original's RMS match and peak "
              "scaling to 0.95), 'off'", choices=("match", "original", "off")),
        Param("ceiling_db", "float", -1.0, "true-peak ceiling of level='match' (dBTP)", min=-24.0, max=0.0),
    ],
    weights_help="grain model weights (a name or a .safetensors path)",
    node="cakfx.plugins.grain.node:GrainNode",
    load_model=load_model,
    summary=SUMMARY,
    description=DESCRIPTION,
    missing_hint="import the published model: cakfx weights import final_true_cak.pt --kind grain "
    "-n cak-grain-default",
    import_checkpoint=import_checkpoint,
    expected_shapes=_expected_shapes,
)


@hookimpl
def register_effects(register):
    EFFECT.register(register)


__all__ = ["EFFECT", "import_checkpoint", "load_model"]
