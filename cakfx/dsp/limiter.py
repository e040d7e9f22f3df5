"""A look-ahead true-peak limiter in vectorised numpy: the ceiling holds in BS.1770 true peak.

``TruePeakLimiter(ceiling_db, sample_rate, channels)`` streams: ``process`` takes blocks of any
size and returns as many samples, delayed by ``latency`` (look-ahead + 16 samples); ``limit``
is the offline form (aligned output). Streaming equals offline, delayed, to float rounding.

The gain (one for all channels) is computed in dB from a sidechain:

1. required reduction ``a[m] = max(0, peak(m) / ceiling in dB)``, where ``peak(m)`` is the sample
   magnitude and the 4x oversampled magnitudes of the BS.1770-4 true-peak filter within half a
   sample of ``m`` (``cakfx.dsp.loudness``'s filter, so its meter reads what the limiter saw);
   only ``SEGMENT``-sample stretches whose samples could reach the ceiling are oversampled;
2. hold: the largest ``a`` over the look-ahead window plus the filter's half span either side,
   and over ``hold_ms`` after (so a low sine's gain does not ripple between its peaks);
3. release: ``d[n] = max(hold[n], alpha·d[n-1] - floor·(1 - alpha))`` -- exponential in dB with
   time constant ``release_ms``, aimed ``RELEASE_FLOOR_DB`` below zero so it reaches unity gain
   in finite time (vectorised with a running maximum);
4. attack: two box filters whose lengths add up to the look-ahead (a triangular kernel: an
   S-shaped fade in dB that is fully down before the peak and stays down across the oversampling
   filter's span around it).

Where nothing is near the ceiling the gain is exactly 1 (the output is the input, delayed).
``limit`` computes the gain for the signal and its ring-out in one pass and applies it without
the delay line (what ``process`` gives, to float rounding).

>>> import numpy as np
>>> from cakfx.dsp.loudness import true_peak_db
>>> sr = 44100
>>> x = np.random.default_rng(0).normal(0, 0.5, (2, sr)).astype(np.float32)
>>> y = limit(x, -1.0, sr)
>>> y.shape == x.shape and true_peak_db(y) <= -1.0
True
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from cakfx.dsp.loudness import (
    FLOAT32_PEAK_BOUND,
    SEGMENT,
    TAPS_PER_PHASE,
    gated_loudness,
    oversampled_magnitude,
    segment_windows,
    segments_near,
)

LOOKAHEAD_MS = 5.0
RELEASE_MS = 100.0
HOLD_MS = 25.0  # a reduction is held this long after its peak: a 20 Hz cycle's gain does not ripple
RELEASE_FLOOR_DB = 0.1  # the release aims this far below 0 dB: it ends at unity, not near it
ROUNDING_DB = 0.001  # aimed this far under the ceiling: float32 output and sidechain round
HALF_SPAN = TAPS_PER_PHASE // 2  # the true-peak filter's reach either side of a sample
CHUNK = 1 << 15  # samples per internal step (bounds memory and alpha ** -k)
DENSE_SHARE = 0.5  # with more of a step's segments near the ceiling, one pass over all of it is cheaper
_NEG_DB_TO_LN = -math.log(10.0) / 20.0  # exp(-dB · this) is 10 ** (-dB / 20), several times faster
_DB_TO_LN_POWER = math.log(10.0) / 10.0


def lookahead_samples(sample_rate: float, lookahead_ms: float = LOOKAHEAD_MS) -> int:
    """The look-ahead in samples (even, at least 2)."""
    return max(2, 2 * round(lookahead_ms * 1e-3 * sample_rate / 2))


def limiter_latency(sample_rate: float, lookahead_ms: float = LOOKAHEAD_MS) -> int:
    """Delay of ``TruePeakLimiter.process``: the look-ahead plus the true-peak filter's span."""
    return lookahead_samples(sample_rate, lookahead_ms) + 2 * HALF_SPAN


class TruePeakLimiter:
    """Streaming look-ahead limiter holding ``ceiling_db`` in true peak (see the module docstring)."""

    def __init__(self, ceiling_db: float, sample_rate: float, channels: int,
                 lookahead_ms: float = LOOKAHEAD_MS, release_ms: float = RELEASE_MS,
                 hold_ms: float = HOLD_MS) -> None:
        self.sample_rate, self.channels = float(sample_rate), int(channels)
        self.lookahead = lookahead_samples(sample_rate, lookahead_ms)
        self.latency = self.lookahead + 2 * HALF_SPAN
        # odd: the look-ahead and the filter span either side, then held for hold_ms after
        self._hold = self.lookahead + 2 * HALF_SPAN + 1 + 2 * round(hold_ms * 1e-3 * sample_rate / 2)
        self._boxes = (self.lookahead // 2 + 1, self.lookahead - self.lookahead // 2 + 1)
        self.retune(ceiling_db, release_ms)
        self.reset()

    def retune(self, ceiling_db: float, release_ms: float) -> None:
        """Set the ceiling and the release, also mid-stream: the next block uses them (the
        look-ahead, and so the latency, stays)."""
        self.ceiling_db, self.release_ms = float(ceiling_db), float(release_ms)
        self.ceiling = 10.0 ** ((self.ceiling_db - ROUNDING_DB) / 20.0)
        release = max(release_ms * 1e-3 * self.sample_rate, 1.0)
        self._alpha = math.exp(-1.0 / release)
        self._step = int(min(CHUNK, 500 * release))  # alpha ** -step stays far from overflow

    def __repr__(self) -> str:
        return f"TruePeakLimiter(ceiling_db={self.ceiling_db:g}, latency={self.latency})"

    def reset(self) -> None:
        """Forget the signal so far (as if it had been silence)."""
        self._x = np.zeros((self.channels, 2 * HALF_SPAN))  # input the sidechain still needs
        self._a = np.zeros(self._hold - 1)  # required reduction the hold window still needs
        self._e = RELEASE_FLOOR_DB  # release state: d + floor
        self._d = [np.zeros(b - 1) for b in self._boxes]  # inputs the box filters still need
        self._delay = np.zeros((self.channels, self.latency))
        self.reduction_db = 0.0  # the largest gain reduction applied so far (for reports)

    def process(self, block: np.ndarray) -> np.ndarray:
        """The next ``(C, n)`` block; returns ``n`` samples delayed by ``latency``."""
        block = np.asarray(block)
        if block.shape[-1] == 0:
            return block.copy()
        gain_db = self._gain_db(block, block.shape[-1])
        joined = np.concatenate([self._delay, block.astype(self._delay.dtype, copy=False)], axis=1)
        out, self._delay = joined[:, : block.shape[-1]], joined[:, block.shape[-1] :]
        return _apply_gain(out, gain_db, block.dtype)

    def _gain_db(self, signal: np.ndarray, length: int) -> np.ndarray:
        """Gain reduction (dB) for the next ``length`` input samples: ``signal`` followed by
        zeros (``limit`` runs its tail in the same pass), in steps of at most ``_step``."""
        gain_db = np.empty(length)
        for a in range(0, length, self._step):
            b = min(a + self._step, length)
            # the sidechain's input: the history it keeps, then this step's samples (zeros past the end)
            xs = np.zeros((self.channels, 2 * HALF_SPAN + b - a))
            xs[:, : 2 * HALF_SPAN] = self._x
            xs[:, 2 * HALF_SPAN : 2 * HALF_SPAN + max(0, min(b, signal.shape[-1]) - a)] = signal[:, a:b]
            gain_db[a:b] = self._smooth(self._release(self._held(self._required(xs))))
        if length:
            self.reduction_db = max(self.reduction_db, float(gain_db.max()))
        return gain_db

    def _required(self, xs: np.ndarray) -> np.ndarray:
        """dB over the ceiling around each new sample of ``xs`` (the kept history, then the new
        input), ``HALF_SPAN`` samples behind the newest input."""
        self._x = xs[:, xs.shape[1] - 2 * HALF_SPAN :].copy()
        n = xs.shape[1] - 2 * HALF_SPAN
        magnitude = np.abs(xs).max(axis=0)
        # oversampled values at xs[15 + k] (k = 0..n) lie 7.125-7.875 samples back: around
        # xs[8 + k] they are those of k and k + 1; only where a bound puts them near the ceiling
        peak = magnitude[HALF_SPAN : HALF_SPAN + n]
        oversampled = _oversampled_near(xs, magnitude, self.ceiling)
        if oversampled is not None:
            peak = np.maximum(peak, np.maximum(oversampled[:-1], oversampled[1:]))
        over = (peak > self.ceiling) & (peak < np.inf)  # a non-finite sample passes, the gain ignores it
        required = np.zeros(n)
        required[over] = 20.0 * np.log10(peak[over] / self.ceiling)
        return required

    def _held(self, required: np.ndarray) -> np.ndarray:
        """The largest requirement over the look-ahead and the filter span either side."""
        joined = np.concatenate([self._a, required])
        self._a = joined[required.size :]
        if not joined.any():
            return np.zeros(required.size)
        half = self._hold // 2
        return maximum_filter1d(joined, self._hold)[half : half + required.size]

    def _release(self, held: np.ndarray) -> np.ndarray:
        d, self._e = release_curve(held, self._alpha, self._e)
        return d

    def _smooth(self, d: np.ndarray) -> np.ndarray:
        for i, length in enumerate(self._boxes):
            joined = np.concatenate([self._d[i], d])
            self._d[i] = joined[d.size :]
            if not joined.any():
                d = np.zeros(d.size)
                continue
            # the mean of joined[j : j + length] for each new sample j (a running sum, in C)
            d = uniform_filter1d(joined, length)[length // 2 : length // 2 + d.size]
            d[d < 1e-9] = 0.0  # rounding left over after a peak: unity gain exactly
        return d


def _apply_gain(audio: np.ndarray, gain_db: np.ndarray, dtype) -> np.ndarray:
    """``audio`` times the gain ``-gain_db`` dB, computed in float64, as ``dtype`` (a new array
    unless ``audio`` is float64 already and no gain applies); columns at 0 dB are untouched."""
    active = np.count_nonzero(gain_db)
    if active == 0:
        return audio.astype(dtype, copy=False)
    out = np.empty(audio.shape, dtype)
    if active < audio.shape[-1] // 64:  # a few short peaks: scale only their neighbourhoods (more: slower)
        at = np.flatnonzero(gain_db)
        out[...] = audio
        out[:, at] = audio[:, at] * np.exp(gain_db[at] * _NEG_DB_TO_LN)
        return out
    for a in range(0, audio.shape[-1], CHUNK):  # in cache-sized steps: 20 % faster on a whole file
        # float64 products (as float64 input times the gain), rounded once into the output
        np.multiply(audio[:, a : a + CHUNK], np.exp(gain_db[a : a + CHUNK] * _NEG_DB_TO_LN),
                    out=out[:, a : a + CHUNK], dtype=np.float64, casting="unsafe")
    return out


def _oversampled_near(xs: np.ndarray, magnitude: np.ndarray, ceiling: float) -> np.ndarray | None:
    """The oversampled magnitude (largest over channels and phases) at the ``n + 1`` positions of
    ``xs`` (``n`` new samples after ``2 * HALF_SPAN`` of history) where it could exceed ``ceiling``,
    0 where it cannot; None where it cannot anywhere.

    A position's value is at most ``PEAK_BOUND`` times the largest sample it is made of, so only
    ``SEGMENT``-position stretches whose input peaks above ``ceiling / PEAK_BOUND`` are computed
    (float32: 1e-7 of a peak is far below any ceiling's precision, and twice as fast).
    """
    positions = magnitude.size - 2 * HALF_SPAN + 1
    if positions <= 4 * SEGMENT:  # a short block (streaming): all of it or none, without the bookkeeping
        if magnitude.max() * FLOAT32_PEAK_BOUND <= ceiling:  # NaN: computed
            return None
        return oversampled_magnitude(xs, "float32").max(axis=0).astype(np.float64)
    near = segments_near(magnitude[None], ceiling)[0]
    if not near.any():
        return None
    if near.mean() > DENSE_SHARE:
        return oversampled_magnitude(xs, "float32").max(axis=0).astype(np.float64)
    segments = np.flatnonzero(near)
    rows = np.repeat(np.arange(xs.shape[0]), segments.size)
    values = oversampled_magnitude(segment_windows(xs, rows, np.tile(segments, xs.shape[0])), "float32")
    out = np.zeros((near.size, SEGMENT))
    out[near] = values.reshape(xs.shape[0], segments.size, SEGMENT).max(axis=0)
    return out.ravel()[:positions]


def release_curve(held: np.ndarray, alpha: float,
                  state: float = RELEASE_FLOOR_DB) -> tuple[np.ndarray, float]:
    """``d[n] = max(held[n], alpha·d[n-1] - floor·(1 - alpha))`` (dB, ``held >= 0``) and the state
    to carry to the next block (``d + floor``, ``RELEASE_FLOOR_DB`` at rest), vectorised through
    ``e = d + floor``: ``e[n] = max(held[n] + floor, alpha·e[n-1])`` is a running maximum of
    ``(held + floor)·alpha^-k`` times ``alpha^k``. ``held`` no longer than ``500/-ln(alpha)``."""
    floor = RELEASE_FLOOR_DB
    if not held.any() and state == floor:
        return held, state
    decay = _decay(alpha, held.size)
    d = np.add(held, floor)
    np.divide(d, decay, out=d)
    np.maximum(d, state, out=d)
    np.maximum.accumulate(d, out=d)
    np.multiply(d, decay, out=d)
    d[0] = max(held[0] + floor, alpha * state)  # the first sample exactly
    np.subtract(d, floor, out=d)
    d[d < 1e-9] = 0.0  # rounding left over from the decay: unity gain exactly
    return d, (float(d[-1] + floor) if d[-1] > 0 else floor)


_decays: dict[float, np.ndarray] = {}


def _decay(alpha: float, size: int) -> np.ndarray:
    """``alpha ** [1 .. size]``, kept per ``alpha`` (the same values: each power is computed alone)."""
    decay = _decays.get(alpha)
    if decay is None or decay.size < size:
        if len(_decays) > 16:  # a few release settings at a time; a sweep of them starts afresh
            _decays.clear()
        decay = _decays[alpha] = alpha ** np.arange(1, max(size, 1024) + 1)
        decay.flags.writeable = False
    return decay[:size]


class BlockPeaks:
    """Streaming sample peak (over channels, dB) of every ``block`` samples: with a
    ``LoudnessMeter(record=block)`` what ``limited_loudness`` estimates from."""

    def __init__(self, block: int) -> None:
        self.block, self._peaks, self._tail = int(block), [], np.zeros(0)

    def process(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio)
        if audio.dtype not in (np.float32, np.float64):
            audio = audio.astype(np.float64)
        # the largest magnitude over channels, in the input's precision (exact either way)
        joined = np.concatenate([self._tail, np.abs(audio).max(axis=0, initial=0.0)])
        whole = joined.size // self.block * self.block
        if whole:  # reduceat: 3x faster than a reshaped max over short rows
            self._peaks.append(np.maximum.reduceat(joined[:whole], np.arange(0, whole, self.block)))
        self._tail = joined[whole:]

    @property
    def peaks_db(self) -> np.ndarray:
        tail = [self._tail.max(keepdims=True)] if self._tail.size else []
        peaks = np.concatenate([np.zeros(0), *self._peaks, *tail])
        with np.errstate(divide="ignore"):
            return 20.0 * np.log10(peaks)


def held_block_peaks(peaks_db: np.ndarray, sample_rate: float, block: int) -> np.ndarray:
    """Per-``block`` peaks held from the look-ahead before each to ``HOLD_MS`` after it, as the
    limiter holds its requirement (the hold commutes with the gain and the ceiling, so a search
    over gains holds the peaks once)."""
    if not peaks_db.size:
        return peaks_db
    ahead = -(-lookahead_samples(sample_rate) // block)
    after = round(HOLD_MS * 1e-3 * sample_rate / block)
    centred = maximum_filter1d(peaks_db, ahead + after + 1)
    shift = (ahead + after) // 2 - ahead  # held[i] = centred[i - shift]: the span [i - after, i + ahead]
    return centred[np.clip(np.arange(peaks_db.size) - shift, 0, peaks_db.size - 1)]


def limited_loudness(powers: np.ndarray, peaks_db: np.ndarray, gain_db: float, ceiling_db: float,
                     sample_rate: float, block: int, held: bool = False) -> float:
    """Estimated integrated loudness (LUFS) of ``gain_db`` applied and then this limiter, from
    per-``block`` K-weighted power sums and sample peaks of the signal before the gain (the gain
    computer run on the blocks: held, released; BS.1770's 400 ms blocks and gates on the sums).
    ``ceiling_db = inf``: the gain alone. ``held``: ``peaks_db`` are ``held_block_peaks`` already.
    Within 0.1 LU of the real limiter's on a hot mix."""
    reduction = np.zeros(powers.size)
    if math.isfinite(ceiling_db) and powers.size:
        if not held:
            peaks_db = held_block_peaks(peaks_db, sample_rate, block)
        required = np.maximum(0.0, gain_db + peaks_db - ceiling_db)
        alpha = math.exp(-block / (RELEASE_MS * 1e-3 * sample_rate))
        step, state = max(1, int(500 * (RELEASE_MS * 1e-3 * sample_rate) / block)), RELEASE_FLOOR_DB
        for a in range(0, required.size, step):
            reduction[a : a + step], state = release_curve(required[a : a + step], alpha, state)
    limited = powers * np.exp((gain_db - reduction) * _DB_TO_LN_POWER)  # 10 ** (dB / 10), 4x faster
    per_sub = 0.1 * sample_rate / block  # BS.1770's 100 ms steps, in blocks
    edges = np.round(np.arange(int(limited.size / per_sub) + 1) * per_sub).astype(int)
    if edges.size < 5:  # under 400 ms: the mean square, as the meter does
        return -0.691 + 10.0 * math.log10(max(float(limited.sum()) / (limited.size * block), 1e-300))
    sums = np.diff(np.concatenate([[0.0], np.cumsum(limited)])[edges])
    windows = sums[:-3] + sums[1:-2] + sums[2:-1] + sums[3:]
    return gated_loudness(windows / (0.4 * sample_rate))


def limit(audio: np.ndarray, ceiling_db: float, sample_rate: float, **kwargs) -> np.ndarray:
    """``audio`` (``(C, N)``) limited to ``ceiling_db`` true peak, aligned with the input."""
    audio = np.asarray(audio)
    limiter = TruePeakLimiter(ceiling_db, sample_rate, audio.shape[0], **kwargs)
    if audio.shape[-1] == 0:
        return audio.copy()
    # the gain for the signal and the ring-out after it in one pass, applied without the delay line
    gain_db = limiter._gain_db(audio, audio.shape[-1] + limiter.latency)[limiter.latency :]
    if not gain_db.any():
        return audio.copy()
    return _apply_gain(audio, gain_db, audio.dtype)
