"""What the grain model asks for on one analysis window: the mel power it wants, in absolute dB.

Both reconstructions start here: ``"phase"`` (``node.py``) turns the ask into a
per-band gain on the complex STFT, ``"griffinlim"`` (``griffinlim.py``) rebuilds
audio from it as the original did.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from cakfx.dsp import mel
from cakfx.dsp.stft import MODEL_SR

FLOOR_DB = (-80.0, -60.0)  # bands this far below the window's peak: the model saw its -80 dB floor there
# with bounded: bands centred below LOW_BAND_HZ[0] are cut at most LOW_CUT_DB (the bound fading
# out by LOW_BAND_HZ[1]), and a window's K-weighted power rises at most MAX_RISE_DB
LOW_BAND_HZ = (150.0, 300.0)
LOW_CUT_DB = 2.0
MAX_RISE_DB = 3.0
SMOOTH_FRAMES = 4  # with bounded: each band's change is smoothed over this many frames either side


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


def low_cut_bound(n_mels: int, sr: float, device=None) -> torch.Tensor:
    """The largest cut (dB, ``(n_mels, 1)``) a band may get: ``LOW_CUT_DB`` for bands centred below
    ``LOW_BAND_HZ[0]``, rising (in log frequency) to unbounded at ``LOW_BAND_HZ[1]``.

    Flattening a spectrum can raise its valleys or cut its peaks; the model does both, and on a
    drum loop at grain +1.5 it cut the kick 10 dB, which the loudness match then took another
    7.5 dB lower (the brightened hats now carried the loudness): the kick was gone. Bounding the
    cut in the low end keeps the body; the highs still rise, the level stage takes less away.
    """
    centres = np.maximum(mel.band_edges(sr, n_mels)[1:-1], 1.0)
    low, high = LOW_BAND_HZ
    open_ = np.clip(np.log(centres / low) / np.log(high / low), 0.0, 1.0)  # 0: bounded ... 1: free
    bound = LOW_CUT_DB / np.maximum(1.0 - open_, 1e-6)
    return torch.as_tensor(np.minimum(bound, 1e6), dtype=torch.float32, device=device)[:, None]


def window_targets(model, power: torch.Tensor, grain: float, bounded: bool = False) -> torch.Tensor:
    """The mel power (in dB, absolute) the model asks for on windows ``power`` (``(B, n_mels, frames)``).

    ``bounded`` (the default path; off for fidelity to the original pipeline): each band's change
    smoothed in time where the band is quiet (``smooth_in_time``), the low end cut at most
    ``low_cut_bound`` dB, and the boosts scaled to bound the loudness rise (``cap_loudness_rise``).
    """
    db, _ = window_db(power)
    norm, low, high = mel.normalise_window(db)
    with torch.inference_mode():
        control = torch.full((power.shape[0],), float(grain), device=power.device)
        out = model(norm[:, None].contiguous(memory_format=torch.channels_last), control)[:, 0]
    asked = level_match(mel.denormalise_window(out, low, high), power)
    given = 10.0 * torch.log10(power.clamp_min(mel.AMIN))
    weight = floor_weight(db)
    change = weight * (asked - given)
    if bounded:
        change = smooth_in_time(change, power, weight)
        change = torch.maximum(change, -low_cut_bound(power.shape[-2], MODEL_SR, power.device).to(change))
        change = cap_loudness_rise(change, power)
    return given + change


@functools.lru_cache(maxsize=8)
def _loudness_weights(n_mels: int, sr: float) -> np.ndarray:
    """Per mel band, the weight of its mel power in the K-weighted power: the band's width (a
    Slaney band's mel power is its mean power per bin) times the K-weighting's power gain."""
    from scipy import signal

    from cakfx.dsp.loudness import k_weighting

    edges = mel.band_edges(sr, n_mels)
    sos, _ = k_weighting(sr)
    _, response = signal.sosfreqz(sos, worN=edges[1:-1], fs=sr)
    return 0.5 * (edges[2:] - edges[:-2]) * np.abs(response) ** 2


def smooth_in_time(change: torch.Tensor, power: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each band's ``change`` (dB, ``(B, n_mels, frames)``) averaged over ``SMOOTH_FRAMES`` frames
    either side (Hann weights), each frame weighted by the band's power there: a quiet frame takes
    the gain of the loud frames near it, a loud frame keeps its own.

    At grain +1.5 the model shapes time as well as the spectrum: on a drum loop it cut the hats'
    decays between the hits 7-9 dB and raised the hits, a gain step of ~10 dB at every onset
    (bench/quality.py's excess: 6-11 dB) that the per-frame slew limit could not ramp (the step sits
    on the onset). Power-weighted, the gain moves where the band is quiet (in the gap, 30-40 dB
    under the hit) instead of at the onset; the hits keep theirs, nothing is smeared. ``weight``
    (``floor_weight``) scales the result per band: bands under the floor keep the input.
    The whole window is at hand here, so looking ahead costs no latency.
    """
    n = SMOOTH_FRAMES
    kernel = torch.hann_window(2 * n + 3, periodic=False, dtype=torch.float64, device=power.device)[1:-1]
    w = power.double().clamp_min(1e-30)
    t = change.shape[-1]

    def spread(values: torch.Tensor) -> torch.Tensor:
        # shifted sums, one per tap: conv1d on float64 takes torch's slow path (1.6 ms against 0.3)
        padded = torch.nn.functional.pad(values, (n, n))
        out = padded[..., : t] * kernel[0]
        for k in range(1, 2 * n + 1):
            out.add_(padded[..., k : k + t], alpha=float(kernel[k]))
        return out

    smooth = (spread(w * change.double()) / spread(w).clamp_min(1e-300)).to(change)
    return change + weight * (smooth - change)


def cap_loudness_rise(change: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """``change`` (dB, ``(B, n_mels, frames)``) with its boosts scaled down where they would raise
    a window's K-weighted power by more than ``MAX_RISE_DB`` (cuts stay).

    The loudness match after the model takes back whatever the boosts add: at grain +1.5 the
    brightened hats of a drum loop raised its loudness 7.5 dB, and the match took that off the
    kick (whose cut is bounded here, ``low_cut_bound``) and off the hats between the hits.
    """
    weights = torch.as_tensor(_loudness_weights(power.shape[-2], MODEL_SR), device=power.device)
    weighted = (power.double() * weights[:, None]).flatten(-2)
    total = weighted.sum(-1).clamp_min(1e-30)
    up, down = change.clamp_min(0.0).double().flatten(-2), change.clamp_max(0.0).double().flatten(-2)
    ln10 = math.log(10.0) / 10.0

    def rise(scale: torch.Tensor) -> torch.Tensor:
        return torch.log10((weighted * ((down + scale[:, None] * up) * ln10).exp()).sum(-1) / total) * 10.0

    capped = rise(torch.ones_like(total)) > MAX_RISE_DB
    if not bool(capped.any()):  # no window rises too much (every darkening one): nothing to scale
        return change
    if not bool(capped.all()):  # only the windows over the limit: ``rise`` reads these rows now
        weighted, total, up, down = weighted[capped], total[capped], up[capped], down[capped]
    scale = torch.ones(capped.shape, dtype=total.dtype, device=total.device)
    scale[capped] = _bisection_result(rise, crossing(weighted, total, down * ln10, up * ln10))
    return change.clamp_max(0.0) + scale.to(change)[:, None, None] * change.clamp_min(0.0)


BISECTION_STEPS = 14  # a window's boosts are scaled by a multiple of 2^-14


def crossing(weighted: torch.Tensor, total: torch.Tensor, log_down: torch.Tensor,
             log_up: torch.Tensor) -> torch.Tensor:
    """Near the scale ``s`` of each window's boosts (rows; ``log_down``, ``log_up``: the cuts and
    boosts as natural-log power ratios) where the weighted power ``sum(weighted * exp(log_down +
    s log_up))`` is ``MAX_RISE_DB`` over ``total``: Newton's method on its log, from 1 (over the
    limit). The log of the sum is convex in ``s``, so the steps only fall and stay above it."""
    goal = torch.log(total) + MAX_RISE_DB * math.log(10.0) / 10.0
    scale = torch.ones_like(total)
    for _ in range(12):
        terms = weighted * (log_down + scale[:, None] * log_up).exp()
        summed = terms.sum(-1).clamp_min(1e-300)
        step = (summed.log() - goal) / ((terms * log_up).sum(-1) / summed).clamp_min(1e-12)
        scale = (scale - step).clamp(0.0, 1.0)
        if float(step.abs().max()) < 1e-3:  # quadratic convergence: ~1e-6 or closer now
            break
    return scale


def _bisection_result(rise, near: torch.Tensor) -> torch.Tensor:
    """What ``BISECTION_STEPS`` halvings of [0, 1] find for each row's scale with ``rise(scale) <=
    MAX_RISE_DB`` (``rise`` grows with the scale; over the limit at 1): the largest grid point
    ``k / 2^steps`` under the limit. Checked with ``rise`` itself at the grid points around
    ``near`` (``crossing``: 2 evaluations instead of 14); if that fails, all rows are bisected."""
    grid = 2.0 ** BISECTION_STEPS
    k = (near * grid).floor().clamp(0.0, grid - 1.0)
    for _ in range(3):  # ``near`` a hair off a grid point: the neighbour is the one
        under = (k == 0) | (rise(k / grid) <= MAX_RISE_DB)  # 0 always is (cuts only)
        over = (k == grid - 1.0) | (rise((k + 1.0) / grid) > MAX_RISE_DB)  # 1 is (the row is capped)
        if bool((under & over).all()):
            return k / grid
        k = torch.where(under, k + (~over).to(k), k - 1.0)
    low, high = torch.zeros_like(near), torch.ones_like(near)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (low + high)
        over = rise(mid) > MAX_RISE_DB
        high, low = torch.where(over, mid, high), torch.where(over, low, mid)
    return low
