"""What the grain model asks for on one analysis window: the mel power it wants, in absolute dB.

Both reconstructions start here: ``"phase"`` (``node.py``) turns the ask into a
per-band gain on the complex STFT, ``"griffinlim"`` (``griffinlim.py``) rebuilds
audio from it as the original did.
"""

from __future__ import annotations

import math

import torch

from cakfx.dsp import mel

FLOOR_DB = (-80.0, -60.0)  # bands this far below the window's peak: the model saw its -80 dB floor there


def window_db(power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``power_to_db(ref=max, top_db=80)`` per window (last two dims) and each window's ref in dB."""
    ref_db = 10.0 * torch.log10(power.amax(dim=(-2, -1), keepdim=True).clamp_min(mel.AMIN))
    return mel.power_to_db(power, dim=(-2, -1)), ref_db


def level_match(asked_db: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """Shift each window's asked dB so its total mel power equals the input window's.

    The model only shapes the spectrum: its raw ask can sit hundreds of dB away
    from the input (at grain -3 its peaks reach +900 dB re the window max), and
    the original's RMS match threw that level away anyway. Matching per window
    keeps the input's dynamics from window to window and every value finite.
    """
    ln10 = math.log(10.0) / 10.0
    asked_total = torch.logsumexp((asked_db * ln10).flatten(-2), dim=-1) / ln10
    input_total = 10.0 * torch.log10(power.sum(dim=(-2, -1)).clamp_min(mel.AMIN))
    return asked_db + (input_total - asked_total)[..., None, None]


def floor_weight(db: torch.Tensor) -> torch.Tensor:
    """How much of the model's ask a band gets, from its input dB re the window's peak.

    The model sees everything below -80 dB as one floor value, so what it asks
    for there says nothing about the input: those bands keep the input (weight
    0), bands above -60 dB get the ask (weight 1), a linear ramp in between.
    Without this, empty regions (the air above a pad's partials, the broadband
    trace of an envelope's corner) were lifted 20-80 dB into audible noise and
    clicks.
    """
    low, high = FLOOR_DB
    return ((db - low) / (high - low)).clamp_(0.0, 1.0)


def window_targets(model, power: torch.Tensor, grain: float) -> torch.Tensor:
    """The mel power (in dB, absolute) the model asks for on windows ``power`` (``(B, n_mels, frames)``)."""
    db, _ = window_db(power)
    norm, low, high = mel.normalise_window(db)
    with torch.inference_mode():
        control = torch.full((power.shape[0],), float(grain), device=power.device)
        out = model(norm[:, None].contiguous(memory_format=torch.channels_last), control)[:, 0]
    asked = level_match(mel.denormalise_window(out, low, high), power)
    given = 10.0 * torch.log10(power.clamp_min(mel.AMIN))
    return given + floor_weight(db) * (asked - given)
