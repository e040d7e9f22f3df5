"""``reconstruction = "griffinlim"``: the original grain pipeline's reconstruction, for comparison.

As the research code did it: 3 s chunks, each with its own mel analysis and
model run (on all 259 frames of a chunk: the original cropped to the 256 it
was trained on; the model is convolutional and takes any width). Each chunk's
ask is level-matched like the phase path's windows, then goes back to linear
power by non-negative least squares through the filterbank
(``librosa.feature.inverse.mel_to_stft``), then Griffin-Lim
(``librosa.griffinlim``: 32 iterations, momentum 0.99, random initial phase,
seeded) to audio; chunks crossfade linearly over 0.5 s; the node then matches
the RMS to the input and scales peaks above 0.95 down to 0.95.
"""

from __future__ import annotations

import torch

from cakfx.dsp import mel
from cakfx.dsp.stft import MODEL_SR, istft, stft
from cakfx.plugins.grain.asks import level_match, window_db

CHUNK_SECONDS = 3.0
CROSSFADE_SECONDS = 0.5
ITERATIONS = 32
MOMENTUM = 0.99
NNLS_STEPS = 20
PEAK = 0.95
SEED = 0


def mel_to_linear(target: torch.Tensor, fb: torch.Tensor, steps: int = NNLS_STEPS) -> torch.Tensor:
    """Non-negative ``X`` (linear power) minimising ``|fb @ X - target|^2``.

    Lee & Seung's multiplicative update for non-negative least squares,
    ``X *= fb^T target / fb^T fb X``, from the target spread over the bins.
    """
    tiny = torch.finfo(target.dtype).tiny
    x = mel.bin_weights(fb).T @ target
    numerator = fb.T @ target
    for _ in range(steps):
        x = x * numerator / (fb.T @ (fb @ x)).clamp_min(tiny)
    return x


def griffin_lim(magnitude: torch.Tensor, length: int, generator: torch.Generator,
                iterations: int = ITERATIONS, momentum: float = MOMENTUM) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013), as ``librosa.griffinlim``.

    Returns audio of ``length`` samples whose STFT magnitude approaches ``magnitude``.
    """
    phase = torch.rand(magnitude.shape, generator=generator, dtype=torch.float64).to(magnitude.device)
    angles = torch.polar(torch.ones_like(magnitude), (2 * torch.pi * phase).to(magnitude.dtype))
    rebuilt = torch.zeros_like(angles)
    eps = torch.finfo(magnitude.dtype).eps
    for _ in range(iterations):
        previous = rebuilt
        rebuilt = stft(istft(magnitude * angles, length))
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + eps)
    return istft(magnitude * angles, length)


def chunk_target(model, chunk: torch.Tensor, grain: float) -> torch.Tensor:
    """Mel power the model asks for on one chunk ``(C, samples)``: one window per chunk, as the original."""
    power = mel.mel_power(chunk, MODEL_SR)
    norm, low, high = mel.normalise_window(window_db(power)[0])
    with torch.inference_mode():
        out = model(norm[:, None], torch.full((chunk.shape[0],), float(grain), device=chunk.device))[:, 0]
    return mel.db_to_power(level_match(mel.denormalise_window(out, low, high), power))


def griffinlim_process(model, x: torch.Tensor, grain: float, seed: int = SEED) -> torch.Tensor:
    """The original pipeline on ``x`` (``(C, samples)`` at 44.1 kHz), up to the level stage.

    The node then matches the RMS and limits peaks to ``PEAK``, as the original did.
    """
    samples = x.shape[-1]
    size = int(CHUNK_SECONDS * MODEL_SR)
    fade = int(CROSSFADE_SECONDS * MODEL_SR)
    generator = torch.Generator().manual_seed(seed)
    fb = mel.mel_filterbank(MODEL_SR, dtype=x.dtype, device=x.device)
    out = torch.zeros_like(x)
    weight = torch.zeros(samples, dtype=x.dtype, device=x.device)
    for start in range(0, max(samples - fade, 1), size - fade):
        chunk = x[:, start : start + size]
        n = chunk.shape[-1]
        magnitude = mel_to_linear(chunk_target(model, chunk, grain), fb).sqrt()
        audio = griffin_lim(magnitude, n, generator)
        # linear crossfade: ramps where this chunk overlaps its neighbours, normalised below
        w = torch.ones(n, dtype=x.dtype, device=x.device)
        ramp = (torch.arange(fade, dtype=x.dtype, device=x.device) + 0.5) / fade
        if start > 0:
            w[: min(fade, n)] = ramp[: min(fade, n)]
        if start + n < samples:
            w[-fade:] = torch.minimum(w[-fade:], ramp.flip(0))
        out[:, start : start + n] += audio * w
        weight[start : start + n] += w
    return out / weight.clamp_min(1e-8)
