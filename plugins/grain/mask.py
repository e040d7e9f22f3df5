"""The ``"phase"`` reconstruction's mask: per-bin gains that give the mel power the model asked for.

Kept apart from the engine (``node.py``) that cuts the signal into segments and
windows: these functions see one block of frames and know nothing of streaming.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cakfx.dsp import mel
from cakfx.dsp.stft import HOP, N_FFT

REFINE_STEPS = 3
CORRECTION_LIMIT_DB = 10.0  # per band: a band the mask cannot reach must not drag its bins' neighbours
MAX_BOOST_DB = 36.0  # a bin is raised at most this much (the model's largest asks within its range, +34 dB)
MAX_CUT_DB = 60.0  # ... and lowered at most this much (below that it is gone anyway)
SLEW_UP_DB = 6.0  # a band's gain rises at most this much from one frame (11.6 ms) to the next ...
SLEW_DOWN_DB = 12.0  # ... and falls at most this much
BIN_FLOOR_DB = (-70.0, -50.0)  # bins this far below their frame's peak: raised not at all ... fully


def slew_limit(boost: torch.Tensor, previous: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Each band's gain (dB, ``(..., bands, frames)``) moved towards the asked ``boost`` by at most
    ``SLEW_UP_DB`` up / ``SLEW_DOWN_DB`` down per frame, from ``previous`` (the gain of the frame
    before); returns the limited gains and the last frame's.

    Bands below the model's floor keep the input (``floor_weight``), bands above it get the
    model's ask, often +20-30 dB: a hit whose highs rise out of the floor would otherwise jump
    from no gain to all of it in one frame, a click and a peak 20 dB above the input's (the
    limiter then pulled a hot mix's loudness down 7.5 LU). Ramped over a few frames, the hit
    keeps its attack and the ask arrives within ~60 ms.
    """
    # frames first, each one contiguous, and no allocation per frame: a Python step per frame is
    # what it costs (20 s of stereo: 1723 frames, 6 -> 3 ms)
    values = np.ascontiguousarray(np.moveaxis(boost.detach().cpu().numpy(), -1, 0))
    out = np.empty_like(values)
    prev = np.array(np.broadcast_to(np.asarray(previous, dtype=values.dtype), values.shape[1:]))
    bound = np.empty_like(prev)
    for value, limited in zip(values, out):
        np.maximum(value, np.subtract(prev, SLEW_DOWN_DB, out=bound), out=limited)
        np.minimum(limited, np.add(prev, SLEW_UP_DB, out=bound), out=limited)
        prev = limited
    return torch.from_numpy(np.moveaxis(out, 0, -1)).to(boost), prev.copy()


def bin_boost_cap(power: torch.Tensor) -> torch.Tensor:
    """The most a bin may be raised (dB), from its power re its frame's peak (``(..., bins, frames)``).

    ``MAX_BOOST_DB`` for bins within ``BIN_FLOOR_DB[1]`` dB of the frame's peak, none at
    ``BIN_FLOOR_DB[0]`` and below, a linear ramp between. A mel band's gain spreads over every bin
    it covers, also the ones its content barely reaches (a partial's skirt, the gaps between
    partials, the sub-bass under a pad): raised with the band, they came up ~20 dB as noise.
    """
    tiny = torch.finfo(power.dtype).tiny
    peak = power.amax(dim=-2, keepdim=True).clamp_min(tiny)
    low, high = BIN_FLOOR_DB
    # in place, one buffer: dB re the peak, then the ramp
    return power.clamp_min(tiny).div_(peak).log10_().mul_(10.0).sub_(low).div_(high - low).clamp_(0.0, 1.0) \
        .mul_(MAX_BOOST_DB)


def refine_mask(power: torch.Tensor, target: torch.Tensor, fb: mel.BandedFilterbank,
                steps: int = REFINE_STEPS, produced: torch.Tensor | None = None,
                cap_db: torch.Tensor | None = None) -> torch.Tensor:
    """Per-bin amplitude gain ``sqrt(G)`` with ``fb.mel(G * power)`` close to ``target`` (mel power):
    ``exp`` of ``refine_log_gain``."""
    return refine_log_gain(power, target, fb, steps, produced, cap_db).exp_()


def refine_log_gain(power: torch.Tensor, target: torch.Tensor, fb: mel.BandedFilterbank,
                    steps: int = REFINE_STEPS, produced: torch.Tensor | None = None,
                    cap_db: torch.Tensor | None = None) -> torch.Tensor:
    """Per-bin log amplitude gain ``log sqrt(G)`` with ``fb.mel(G * power)`` close to ``target``.

    Each step compares the mel power ``G`` produces with the target, band by
    band, and moves every bin's log gain by its bands' log ratios, weighted by
    the filterbank normalised per bin (a geometric mean, so one band asking for
    a huge boost does not swamp a bin it shares with a quiet neighbour). The
    first step is the one-shot mask; ``steps`` more refine it. A bin's gain
    stays within ``-MAX_CUT_DB ... +MAX_BOOST_DB`` (``cap_db``: a per-bin
    boost limit, ``bin_boost_cap``). ``produced`` may pass in ``fb.mel(power)``.
    Kept as a log until the spectrum is masked: each ``exp``/``log`` costs as much as
    a mel projection.
    """
    min_log, max_log = (d * math.log(10.0) / 10.0 for d in (-MAX_CUT_DB, MAX_BOOST_DB))
    if cap_db is not None:
        max_log = cap_db * (math.log(10.0) / 10.0)
    tiny = torch.finfo(power.dtype).tiny
    log_target = target.clamp_min(tiny).log()
    log_gain = None
    for step in range(steps + 1):
        if step or produced is None:
            produced = fb.mel(power if log_gain is None else torch.exp(log_gain).mul_(power))
        step_gain = fb.spread(log_target - produced.clamp_min(tiny).log())
        log_gain = step_gain if log_gain is None else log_gain.add_(step_gain)
        log_gain = log_gain.clamp_(min_log, MAX_BOOST_DB * math.log(10.0) / 10.0)
        if cap_db is not None:
            log_gain = torch.minimum(log_gain, max_log, out=log_gain)
    return log_gain.mul_(0.5)


def correct_mask(spec: torch.Tensor, log_gain: torch.Tensor, target: torch.Tensor, fb: mel.BandedFilterbank,
                 e0: int, frames: slice, cap_db: torch.Tensor | None = None) -> torch.Tensor:
    """One correction of the log amplitude gain ``log_gain`` against the mel power the output really has.

    The masked spectrum is not the STFT of any signal: its inverse, analysed
    again, comes out smoother than the mask (most in the narrow low bands and
    where the ask changes fast). This rebuilds the segment's audio once, takes
    its mel power on ``frames`` (global frame numbers; ``spec`` starts at frame
    ``e0`` and covers their neighbours) and moves the gain of those frames by
    the spread log ratio target / actual, each band's ratio limited to
    ``CORRECTION_LIMIT_DB`` (one band out of reach, e.g. empty at the input,
    would otherwise pull up the loud bins it shares with its neighbours and
    make a steady tone flutter). Returns the log gain for ``frames``.
    """
    n_fft, hop = N_FFT, HOP
    signal, norm = mel.overlap_add(spec * torch.exp(log_gain), n_fft, hop)
    signal = torch.where(norm > 1e-11, signal / norm.clamp_min(1e-11), signal)
    # the real output is zero before the signal: zero the centring pad as a fresh analysis would
    if e0 * hop < n_fft // 2:
        signal[..., : n_fft // 2 - e0 * hop] = 0.0
    first, last = frames.start - e0, frames.stop - e0
    again = mel.stft_block(signal, first, last, n_fft, hop)
    actual = fb.mel(again.real.square() + again.imag.square())
    tiny = torch.finfo(actual.dtype).tiny
    limit = CORRECTION_LIMIT_DB * math.log(10.0) / 10.0
    log_ratio = (target.clamp_min(tiny).log() - actual.clamp_min(tiny).log()).clamp_(-limit, limit)
    min_log, max_log = (d * math.log(10.0) / 20.0 for d in (-MAX_CUT_DB, MAX_BOOST_DB))  # amplitude
    corrected = fb.spread(log_ratio).mul_(0.5).add_(log_gain[..., first:last])
    corrected = corrected.clamp_(min_log, max_log)
    if cap_db is not None:  # ``cap_db`` covers ``frames``
        corrected = torch.minimum(corrected, cap_db * (math.log(10.0) / 20.0), out=corrected)
    return corrected
