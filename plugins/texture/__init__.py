"""``cak.texture``: the CAK texture processor (Gloame AI's published AuGAN model) as an effect."""

from __future__ import annotations

from cakfx.hookspecs import hookimpl
from cakfx.neural import NeuralEffect
from cakfx.params import Param

# torch is imported only when a node, a model or an import is asked for (registration stays torch-free)
SUMMARY = "Learned spectral texture (CAK): smears transients and thickens dense material."

DESCRIPTION = """\
The CAK texture processor: an 11-number Conditioning-Aware Kernel trained adversarially
(AuGAN) to add the spectral texture of the training set. Each channel's STFT magnitude
(n_fft 2048, hop 512, at 44.1 kHz) is log-compressed and normalised, a learned 3x3
time-frequency kernel adds its pattern scaled by `amount`, and the audio is rebuilt with the
original phase. Every channel is processed on its own (the original downmixed to mono);
output length and rate match the input.

What it does to sound: transients smear (attacks soften and spread over neighbouring
frames); dense mid-range material can turn chorus- or comb-like. The gate
sigmoid((amount - 0.3) * 20) keeps it nearly off below about 0.3 (12 % open at 0.2, half at
0.3) and fully open from about 0.5; 1.0 is the top of the trained range and up to 2
extrapolates. Amount 0 returns the input unchanged, bit for bit. Measured direction (default
weights, level off, amount 0.3 ... 2): the spectrum gets flatter (noisier) - flatness x1.03 ...
x1.08 on a drum loop, x2 ... x19 on a harmonic pad - and brighter on drums (centroid +80 ...
+310 Hz); the raw output is quieter (-0.6 ... -1 LU on drums, -1 ... -2.4 LU on the pad, about
-7 LU on a loud pure tone, whose bins above the training set's range are clipped).

Level (`level`): "match" (default) gives the output the input's integrated loudness
(ITU-R BS.1770; RMS under 0.4 s), one gain for all channels, and a look-ahead limiter acts
only where the result would exceed `ceiling_db`; "original" is the published pipeline's
per-channel RMS match (gain 0.1 ... 10) and soft clip tanh(0.95 x) / 0.95; "off" keeps the
raw spectral change. Digital silence stays exactly silent.

Sample rates: the model runs at 44.1 kHz; at other rates only the model's change, resampled
(soxr), is added to the input, so at 88.2/96 kHz everything above 22 kHz passes through
unchanged.

Streaming (`reset=False`): any chunking gives the offline result delayed by
`latency_samples(sr)`: 2559 samples at 44.1 kHz (58 ms), 5434 at 48 kHz, plus the limiter's
look-ahead in "match" mode. For live use the level stage uses a running loudness estimate
(see cakfx.dsp.level); cakfx.streaming.render_stream measures each file first, so a
streamed file comes out as offline.

Weights: the default name cak-texture-default, any weights name, or a .safetensors path
of kind cak.texture. Import the published checkpoint with
`cakfx weights import final_wgan_grain.pt --kind texture --stats global_normalization_stats.json --name NAME`.
"""

def load_model(weights_file, device):
    """``cakfx.load_model`` hook: the texture CAK layer in eval mode on ``device``."""
    from cakfx.plugins.texture.checkpoint import load_model as load

    return load(weights_file, device)


def import_checkpoint(checkpoint_path, stats_path):
    from cakfx.plugins.texture.checkpoint import import_checkpoint as do_import

    return do_import(checkpoint_path, stats_path)


def _expected_shapes(stats: dict) -> dict[str, tuple[int, ...]]:
    """What a texture weights file holds (checked on install and ``presets validate``)."""
    return {
        "detector_weight": (1, 1, 3, 3),
        "detector_bias": (1,),
        "scale": (1,),
        "threshold?": (),
    }


def _analyse(weights_file, out_png):
    # matplotlib is optional (viz extra): import the drawing code only when asked
    from cakfx.plugins.texture.analysis import draw

    return draw(weights_file, out_png)


EFFECT = NeuralEffect(
    "cak.texture",
    default_weights="cak-texture-default",
    params=[
        Param("amount", "float", 0.5, "Texture control: 0 is a true bypass, 1 the trained top.", 0.0, 2.0),
        Param(
            "level",
            "choice",
            "match",
            "Level stage: match (loudness of the input, limiter only above the ceiling), original "
            "(the published RMS match + tanh soft clip), off (the raw spectral change).",
            choices=("match", "original", "off"),
        ),
        Param("ceiling_db", "float", -1.0, "Peak ceiling of the match mode's limiter, dBFS.", -24.0, 0.0),
    ],
    weights_help="Weights name or .safetensors path (kind cak.texture).",
    node="cakfx.plugins.texture.node:TextureNode",
    load_model=load_model,
    summary=SUMMARY,
    description=DESCRIPTION,
    missing_hint="import the published model: cakfx weights import final_wgan_grain.pt --kind texture "
    "--stats global_normalization_stats.json -n cak-texture-default",
    import_checkpoint=import_checkpoint,
    expected_shapes=_expected_shapes,
    analyse=_analyse,
)


@hookimpl
def register_effects(register):
    EFFECT.register(register)


def __getattr__(name: str):
    if name == "TextureNode":  # lazily: it imports torch
        from cakfx.plugins.texture.node import TextureNode

        return TextureNode
    raise AttributeError(name)


__all__ = ["EFFECT", "TextureNode", "import_checkpoint", "load_model"]
