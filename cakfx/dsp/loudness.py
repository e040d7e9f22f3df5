"""Loudness and peaks: ITU-R BS.1770 integrated loudness, sample/true peak, clipped samples.

Whole-signal functions take ``(channels, samples)`` arrays (numpy, or CPU torch tensors; a 1-D
array is one channel) and return plain floats in dB:

>>> import numpy as np
>>> sr = 48000
>>> t = np.arange(10 * sr) / sr
>>> tone = 0.1 * np.sin(2 * np.pi * 997 * t)[None]     # a -20 dBFS sine, mono
>>> round(integrated_loudness(tone, sr), 2)     # BS.1770's check: -23.0 ± 0.1
-23.05
>>> round(sample_peak_db(tone), 1)
-20.0
>>> true_peak_exceeds(tone, -21.0), true_peak_exceeds(tone, -19.0)
(True, False)

``integrated_loudness`` is pyloudnorm's BS.1770-4 meter (K-weighting, 400 ms blocks with 75 %
overlap, -70 LUFS absolute and -10 LU relative gates). Two cases it cannot gate:

* material shorter than one 400 ms block: the K-weighted mean square of the whole signal, in
  the same scale (``-0.691 + 10·log10``), i.e. an RMS level that reads like LUFS;
* digital silence, or nothing above the gates: ``-inf``.

``LoudnessMeter`` and ``PeakMeter`` are the streaming forms: feed blocks of any size with
``process`` and read the result at any time; on any chunking they give the whole-signal result
(loudness within float rounding of pyloudnorm's, peaks exactly). The loudness meter keeps its
filter state and only the samples of blocks not yet complete, so memory does not grow with
length.

True peak follows BS.1770-4 Annex 2: 4x oversampling (a 64-tap Kaiser-windowed polyphase
low-pass) and the largest magnitude of the oversampled signal (never less than the sample peak).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyloudnorm
from scipy import signal

BLOCK_SECONDS = 0.400  # BS.1770 gating block
OVERLAP = 0.75
ABSOLUTE_GATE = -70.0  # LUFS
RELATIVE_GATE = -10.0  # LU below the absolutely gated loudness
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs; further channels count 1.0

OVERSAMPLE = 4
TAPS_PER_PHASE = 16
# Passes up to ~0.72 of the input's Nyquist flat, so program material's inter-sample peaks
# are found; the gain of OVERSAMPLE makes up for the zero-stuffing.
TRUE_PEAK_FIR = OVERSAMPLE * signal.firwin(
    OVERSAMPLE * TAPS_PER_PHASE, 1.0 / OVERSAMPLE, window=("kaiser", 7.0)
)
# An oversampled value is at most this times the largest input sample it is made of (1.91:
# the largest sum of a phase's |taps|; the margin covers rounding), so stretches of signal
# that low cannot hold a peak above one already found and are not oversampled at all.
PEAK_BOUND = max(float(np.abs(TRUE_PEAK_FIR[p::OVERSAMPLE]).sum()) for p in range(OVERSAMPLE)) * (1 + 1e-9)
FLOAT32_PEAK_BOUND = PEAK_BOUND * (1 + 1e-5)  # float32 oversampling may round a value up past PEAK_BOUND's
SEGMENT = 64  # oversampled outputs per segment judged by a bound
SHORT = 1 << 13  # up to this many outputs the float64 oversampling of everything is the cheaper
CHUNK = 1 << 16  # whole-signal functions measure this many samples per channel at a time


def _as_array(audio) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    return np.asarray(audio)


def _channels_first(audio) -> np.ndarray:
    """``audio`` as numpy, a 1-D signal as one channel (shape checked later, by ``_as_2d``)."""
    audio = _as_array(audio)
    return audio[None] if audio.ndim == 1 else audio


def _channel_count(audio: np.ndarray) -> int:
    return audio.shape[0] if audio.ndim == 2 else 1


def _chunks(audio: np.ndarray):
    """``CHUNK`` samples per channel at a time (at least one, maybe empty, chunk): the meters make
    float64 copies of one chunk, not of the whole signal."""
    return (audio[..., a : a + CHUNK] for a in range(0, max(audio.shape[-1], 1), CHUNK))


def _as_2d(audio, any_float: bool = False) -> np.ndarray:
    """``(C, N)`` float64 numpy view of a numpy array or torch tensor; rejects non-finite samples.
    ``any_float``: float32 stays float32 (for callers whose next step makes a float64 copy)."""
    x = _as_array(audio)
    if not (any_float and x.dtype == np.float32):
        x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"audio must be (channels, samples), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    return x


def _db(power_or_amp: float, scale: float) -> float:
    return scale * math.log10(power_or_amp) if power_or_amp > 0 else -math.inf


def _channel_gains(channels: int) -> np.ndarray:
    return np.array([CHANNEL_GAINS[c] if c < len(CHANNEL_GAINS) else 1.0 for c in range(channels)])


def integrated_loudness(audio, sample_rate: float) -> float:
    """Integrated loudness of ``audio`` (``(C, N)``) in LUFS, per ITU-R BS.1770-4 (pyloudnorm's
    filters, blocks and gates; equal to ``pyloudnorm.Meter(sample_rate).integrated_loudness``).

    Shorter than 400 ms: the K-weighted RMS level of the whole signal in the same scale.
    Digital silence (or nothing above the -70 LUFS gate): ``-inf``.
    """
    audio = _channels_first(audio)
    meter = LoudnessMeter(sample_rate, _channel_count(audio))
    for chunk in _chunks(audio):
        meter.process(chunk)
    return meter.loudness


def sample_peak_db(audio) -> float:
    """Largest absolute sample in dBFS (``-inf`` for silence)."""
    x = _as_2d(audio)
    return _db(float(np.abs(x).max(initial=0.0)), 20.0)


def true_peak_db(audio) -> float:
    """True peak in dBTP: the largest magnitude of the 4x oversampled signal (BS.1770-4 Annex 2)."""
    audio = _channels_first(audio)
    meter = PeakMeter(_channel_count(audio))
    for chunk in _chunks(audio):
        meter.process(chunk)
    return meter.true_peak_db


def true_peak_exceeds(audio, db: float) -> bool:
    """``true_peak_db(audio) > db``, answered without oversampling what cannot reach ``db``
    and from the first sample or inter-sample peak above it (a limiter's on/off decision)."""
    audio = _channels_first(audio)
    below = 10.0 ** (db / 20.0) * (1 - 1e-9)  # what cannot pass db is skipped; dB decides the rest
    history = np.zeros((_channel_count(audio), TAPS_PER_PHASE - 1))
    for chunk in _chunks(audio):
        x = _as_2d(chunk)
        joined = np.concatenate([history, x], axis=1)
        if _db(float(np.abs(x).max(initial=0.0)), 20.0) > db:
            return True
        if _db(_oversampled_peak(joined, below), 20.0) > db:
            return True
        history = joined[:, joined.shape[1] - (TAPS_PER_PHASE - 1) :]
    ring_out = np.concatenate([history, np.zeros_like(history)], axis=1)
    return _db(_oversampled_peak(ring_out, below), 20.0) > db


def clipped_samples(audio, limit: float = 1.0) -> int:
    """Number of samples (over all channels) whose magnitude exceeds ``limit``: what would clip
    when written to an integer format at full scale ``limit``."""
    x = _as_2d(audio)
    return int(np.count_nonzero(np.abs(x) > limit))


class LoudnessMeter:
    """Streaming BS.1770-4 integrated loudness: ``process`` blocks of any size, read ``loudness``.

    The K-weighting is pyloudnorm's (its filter coefficients, run as second-order sections with
    ``scipy.signal.sosfilt`` and carried state), the 400 ms blocks, their positions and the gates
    are pyloudnorm's, so the result on any chunking equals ``integrated_loudness`` of the whole
    signal.

    >>> import numpy as np
    >>> sr = 44100
    >>> x = np.random.default_rng(0).normal(0, 0.1, (2, 3 * sr))
    >>> meter = LoudnessMeter(sr, channels=2)
    >>> for a in range(0, x.shape[1], 1000):
    ...     meter.process(x[:, a : a + 1000])
    >>> abs(meter.loudness - integrated_loudness(x, sr)) < 1e-6
    True
    """

    def __init__(self, sample_rate: float, channels: int, record: int = 0) -> None:
        self.sample_rate = float(sample_rate)
        self.channels = int(channels)
        self.record = int(record)  # > 0: keep the power summed over every ``record`` samples
        self._sos, self._gain = k_weighting(self.sample_rate)
        self._gains = _channel_gains(self.channels)[:, None]
        self._unit_gains = bool((self._gains == 1.0).all())
        self._block_len = BLOCK_SECONDS * self.sample_rate  # float, as pyloudnorm's bounds
        self.reset()

    def __repr__(self) -> str:
        return f"LoudnessMeter(sample_rate={self.sample_rate:g}, channels={self.channels})"

    def reset(self) -> None:
        """Forget everything measured so far."""
        self._zi = np.zeros((self._sos.shape[0], self.channels, 2))
        self._pending = np.zeros(0)  # channel-weighted K-weighted power per sample, from _start on
        self._start = 0  # absolute index of _pending[0]: the start of the first block not yet complete
        self._samples = 0
        self._next = 0  # index of the first block not yet complete
        self._powers: list[float] = []  # mean-square power of each complete block
        self._recorded: list[np.ndarray] = []  # the record's complete sums
        self._record_tail = np.zeros(0)  # power of the samples after them

    @property
    def samples(self) -> int:
        """Samples per channel seen since the last reset."""
        return self._samples

    def _bounds(self, j: int) -> tuple[int, int]:
        step = 1.0 - OVERLAP  # exactly pyloudnorm's arithmetic, so the blocks fall on the same samples
        lo = int(BLOCK_SECONDS * (j * step) * self.sample_rate)
        return lo, int(BLOCK_SECONDS * (j * step + 1) * self.sample_rate)

    def process(self, block) -> None:
        """Add ``block`` (``(C, n)``) to the measurement."""
        y = _as_2d(block, any_float=True)  # sosfilt makes the float64 copy
        if y.shape[0] != self.channels:
            raise ValueError(f"LoudnessMeter expects {self.channels} channels, got {y.shape[0]}")
        if y.shape[1] == 0:
            return
        y, self._zi = signal.sosfilt(self._sos, y, axis=-1, zi=self._zi)
        if self._gain != 1.0:
            np.multiply(y, self._gain, out=y)  # in place: y is sosfilt's own array
        np.square(y, out=y)
        if not self._unit_gains:  # a weight of 1.0 is exact: skipped
            np.multiply(y, self._gains, out=y)
        power = y.sum(axis=0)
        self._pending = np.concatenate([self._pending, power])
        if self.record:
            joined = np.concatenate([self._record_tail, power])
            whole = joined.size // self.record * self.record
            self._recorded.append(joined[:whole].reshape(-1, self.record).sum(axis=1))
            self._record_tail = joined[whole:]
        self._samples += y.shape[1]
        while True:
            lo, hi = self._bounds(self._next)
            if hi > self._samples:
                break
            self._powers.append(self._block_power(lo, hi))
            self._next += 1
        lo = self._bounds(self._next)[0]
        self._pending = self._pending[lo - self._start :]
        self._start = lo

    def _block_power(self, lo: int, hi: int) -> float:
        return float(self._pending[lo - self._start : hi - self._start].sum()) / self._block_len

    @property
    def recorded_powers(self) -> np.ndarray:
        """With ``record = B``: the channel-weighted K-weighted power summed over each B samples
        so far (the last sum over fewer), for estimates of what a gain curve does to the loudness."""
        tail = [self._record_tail.sum(keepdims=True)] if self._record_tail.size else []
        return np.concatenate([np.zeros(0), *self._recorded, *tail])

    @property
    def block_loudness(self) -> np.ndarray:
        """Loudness (LUFS, ungated) of each complete 400 ms block so far."""
        with np.errstate(divide="ignore"):
            return -0.691 + 10.0 * np.log10(np.asarray(self._powers, dtype=np.float64))

    @property
    def loudness(self) -> float:
        """Integrated loudness of everything processed so far (LUFS; see ``integrated_loudness``)."""
        n = self._samples
        if n == 0:
            return -math.inf
        if n < self._block_len:  # too short to gate: K-weighted RMS of the whole signal
            return -0.691 + _db(float(self._pending.sum()) / n, 10.0)
        step = 1.0 - OVERLAP
        count = int(np.round((n / self.sample_rate - BLOCK_SECONDS) / (BLOCK_SECONDS * step))) + 1
        powers = list(self._powers[:count])
        for j in range(len(powers), count):  # pyloudnorm's last blocks may run past the end
            lo, hi = self._bounds(j)
            powers.append(self._block_power(lo, min(hi, n)))
        return gated_loudness(np.asarray(powers))


@functools.lru_cache(maxsize=16)
def k_weighting(sample_rate: float) -> tuple[np.ndarray, float]:
    """pyloudnorm's K-weighting (high shelf, then high pass) as second-order sections, one pass
    over the signal instead of two, and the product of its passband gains."""
    filters = pyloudnorm.Meter(sample_rate)._filters.values()
    sos = np.vstack([signal.tf2sos(f.b, f.a) for f in filters])
    return sos, math.prod(float(f.passband_gain) for f in filters)


def gated_loudness(powers: np.ndarray) -> float:
    """BS.1770 gating over block mean-square powers (channel-weighted): LUFS, ``-inf`` if none pass."""
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10.0 * np.log10(powers)
    above = powers[levels >= ABSOLUTE_GATE]
    if above.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(above.mean()) + RELATIVE_GATE
    kept = powers[(levels > relative) & (levels > ABSOLUTE_GATE)]
    if kept.size == 0:
        return -math.inf
    return -0.691 + _db(float(kept.mean()), 10.0)


class PeakMeter:
    """Streaming sample peak, true peak and clipped-sample count, over all channels.

    Equal on any chunking to ``sample_peak_db``, ``true_peak_db`` and ``clipped_samples`` of the
    whole signal (the oversampling filter carries its history; the true peak includes the
    filter's ring-out after the last sample).

    >>> import numpy as np
    >>> meter = PeakMeter(channels=1)
    >>> meter.process(np.array([[0.5, -1.25, 0.25]]))
    >>> meter.sample_peak_db > 1.9, meter.clipped
    (True, 1)
    """

    def __init__(self, channels: int, limit: float = 1.0) -> None:
        self.channels = int(channels)
        self.limit = float(limit)
        self.reset()

    def __repr__(self) -> str:
        return f"PeakMeter(channels={self.channels}, limit={self.limit:g})"

    def reset(self) -> None:
        """Forget everything measured so far."""
        self._history = np.zeros((self.channels, TAPS_PER_PHASE - 1))
        self._sample_peak = 0.0
        self._oversampled_peak = 0.0
        self.clipped = 0

    def process(self, block) -> None:
        """Add ``block`` (``(C, n)``) to the measurement."""
        x = _as_2d(block, any_float=True)  # float32 stays: the steps below are exact on it
        if x.shape[0] != self.channels:
            raise ValueError(f"PeakMeter expects {self.channels} channels, got {x.shape[0]}")
        n = x.shape[1]
        if n == 0:
            return
        peak = max(float(x.max()), -float(x.min()))  # two reductions, no |x| copy
        self._sample_peak = max(self._sample_peak, peak)
        if peak > self.limit:  # else none clipped
            self.clipped += int(np.count_nonzero(np.abs(x) > np.float64(self.limit)))
        for a in range(0, n, CHUNK):  # a whole file at once: 3x slower than in chunks (cache, page faults)
            joined = np.concatenate([self._history, x[:, a : a + CHUNK]], axis=1)
            known = max(self._sample_peak, self._oversampled_peak)
            self._oversampled_peak = max(self._oversampled_peak, _oversampled_peak(joined, known))
            self._history = joined[:, joined.shape[1] - (TAPS_PER_PHASE - 1) :]

    @property
    def sample_peak_db(self) -> float:
        """Largest absolute sample so far, dBFS."""
        return _db(self._sample_peak, 20.0)

    @property
    def true_peak_db(self) -> float:
        """True peak so far, dBTP (including the ring-out after the last sample)."""
        ring_out = np.concatenate([self._history, np.zeros_like(self._history)], axis=1)
        peak = max(self._sample_peak, self._oversampled_peak)
        return _db(max(peak, _oversampled_peak(ring_out, peak)), 20.0)


def _oversampled_peak(joined: np.ndarray, known: float = 0.0) -> float:
    """Largest magnitude of the oversampled signal at the positions after the first
    ``TAPS_PER_PHASE - 1`` samples of ``joined`` (its history), where it exceeds ``known``
    (else some value not above ``known``).

    Polyphase: phase ``p`` of the output is ``joined`` convolved with every ``OVERSAMPLE``-th
    tap from ``p``. Only segments whose input could reach past ``known`` (``PEAK_BOUND``) are
    oversampled, in float32 (8x faster than float64 in torch); the positions within float32's
    rounding of the largest are then computed again in float64, so the result is float64's.
    """
    channels, length = joined.shape
    outputs = length - (TAPS_PER_PHASE - 1)
    if outputs <= 0:
        return 0.0
    if outputs <= SHORT:  # a short block: all of it at once, without the bookkeeping
        if float(np.abs(joined).max()) * PEAK_BOUND <= known:
            return 0.0
        return float(oversampled_magnitude(joined).max())
    rows, segments = np.nonzero(segments_near(np.abs(joined), known))
    if rows.size == 0:
        return 0.0
    starts = segments * SEGMENT
    windows = segment_windows(joined, rows, segments)
    rough = oversampled_magnitude(windows, "float32")
    rough[np.arange(SEGMENT) >= (outputs - starts)[:, None]] = 0.0  # the last segment may be short
    top = float(rough.max())
    if top * (1 + _ROUGH) <= known:
        return top
    # float32 is within _ROUGH of float64 there: the positions that may hold the peak, exactly
    near, at = np.nonzero(rough >= top * (1 - _ROUGH))
    exact = windows[near[:, None], at[:, None] + np.arange(TAPS_PER_PHASE)] @ _PHASES.T
    return float(np.abs(exact).max())


def segments_near(magnitude: np.ndarray, threshold: float) -> np.ndarray:
    """``(R, S)`` mask of the ``SEGMENT``-position stretches of each row of ``magnitude`` (``(R, L)``,
    ``|signal|``; position ``i`` ends at column ``i + TAPS_PER_PHASE - 1``, as in
    ``oversampled_magnitude``) whose oversampled values could exceed ``threshold``: a value is at
    most ``PEAK_BOUND`` times the largest sample it is made of. A NaN sample counts as reaching it.
    The limiter's sidechain and the peak meters oversample only these."""
    positions = magnitude.shape[-1] - (TAPS_PER_PHASE - 1)
    count = -(-positions // SEGMENT)
    # segment s reads blocks s and s + 1 (it needs TAPS_PER_PHASE - 1 <= SEGMENT more samples)
    edges = np.arange(0, magnitude.shape[-1], SEGMENT)
    block_max = np.zeros((magnitude.shape[0], count + 1))
    block_max[:, : edges.size] = [np.maximum.reduceat(row, edges) for row in magnitude]  # per row: 5x faster
    return ~(np.maximum(block_max[:, :-1], block_max[:, 1:]) * FLOAT32_PEAK_BOUND <= threshold)


def segment_windows(joined: np.ndarray, rows: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """The input of segment ``segments[k]`` of row ``rows[k]`` of ``joined`` (float64, zeros past
    the end): ``oversampled_magnitude`` of it is that segment's ``SEGMENT`` positions."""
    count = -(-(joined.shape[-1] - (TAPS_PER_PHASE - 1)) // SEGMENT)
    padded = np.zeros((joined.shape[0], (count + 1) * SEGMENT))
    padded[:, : joined.shape[-1]] = joined
    return padded[rows[:, None], segments[:, None] * SEGMENT + np.arange(SEGMENT + TAPS_PER_PHASE - 1)]


_ROUGH = 1e-4  # float32's error on an oversampled value near the peak, relative (measured ~3e-6 at most)
# row r of a window times _PHASES[p], summed, is phase p of the oversampled value at the window's end
_PHASES = np.stack([TRUE_PEAK_FIR[p::OVERSAMPLE][::-1] for p in range(OVERSAMPLE)])


def oversampled_magnitude(rows: np.ndarray, dtype: str = "float64") -> np.ndarray:
    """``|oversampled signal|`` of each row of ``rows`` (``(K, L)``), the largest over the
    ``OVERSAMPLE`` phases, at the ``L - TAPS_PER_PHASE + 1`` positions whose taps lie in the row
    (position ``i`` ends at ``rows[:, i + TAPS_PER_PHASE - 1]``): one torch ``conv1d`` on this
    thread (4-5x numpy's ``convolve`` per phase). ``dtype="float32"``: twice as fast again."""
    import torch

    from cakfx.dsp.threads import serial_torch_ops

    with serial_torch_ops():
        x = torch.from_numpy(np.ascontiguousarray(rows, dtype=dtype))[:, None]
        return torch.nn.functional.conv1d(x, _phase_taps(dtype)).abs_().amax(dim=1).numpy()


@functools.cache
def _phase_taps(dtype: str):
    """conv1d weights ``(OVERSAMPLE, 1, TAPS_PER_PHASE)``: each phase's taps, reversed (conv1d correlates)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(_PHASES[:, None], dtype=dtype))
