"""The level stage shared by the neural effects: loudness match, ceiling limiter, the originals' maths.

A neural node computes its raw output ``y_raw`` from its input ``x`` and hands both to one
``LevelStage``, built from the node's ``level`` and ``ceiling_db`` parameters::

    from cakfx.dsp.level import LevelStage

    class MyNode(EffectNode):
        def __init__(self, ..., level="match", ceiling_db=-1.0):
            self.level_stage = LevelStage(level, ceiling_db, original="texture")

        def process_channels(self, audio, sample_rate):          # offline: whole signal
            return self.level_stage.apply(audio, self.model_path(audio), sample_rate)

        def stream_channels(self, audio, sample_rate):           # streaming: block by block
            return self.level_stage.stream(audio, self.model_path_stream(audio), sample_rate)

        def latency_samples(self, sample_rate):                  # add the model path's own
            return self.level_stage.latency_samples(sample_rate) + ...

        # the measuring protocol is the stage's
        needs_measure = property(lambda self: self.level_stage.needs_measure)
        def begin_measure(self): self.level_stage.begin_measure()
        def end_measure(self): self.level_stage.end_measure()
        def forget_measure(self): self.level_stage.forget_measure()
        def reset(self): ...; self.level_stage.reset()   # keeps a fixed measurement

(``x`` and ``y_raw`` given to ``stream`` must be time-aligned with each other: delay ``x`` by the
model path's latency first, e.g. with ``cakfx.dsp.resample.DelayLine``.)

Modes
-----
``"match"`` (default): one gain for all channels so the output's integrated loudness (ITU-R
BS.1770, ``cakfx.dsp.loudness.integrated_loudness``; K-weighted RMS under 0.4 s) equals the
input's, within ±``MAX_GAIN_DB``; unity when either is silent (``-inf``). Nothing is scaled down
for a peak: only where the gained output's true peak would exceed ``ceiling_db`` does a
look-ahead limiter (``cakfx.dsp.limiter``: BS.1770 true-peak sidechain, so the ceiling holds on
the true-peak meter; 5 ms look-ahead, 25 ms hold, 100 ms release, unity gain exactly away from
the peaks)
act, on the peaks alone. Limiting costs loudness (a model that brightens a hot mix's hats 20 dB
leaves peaks 9 dB over the ceiling once matched: -3.5 LU), so where it would take more than
``DRIVE_TOLERANCE_LU`` the limiter is driven harder, as a mastering engineer raises a limiter's
input until the target loudness is met (to within that tolerance): the extra gain
(``limiter_drive_db``, at most ``MAX_DRIVE_DB``) is found from the output's per-64-sample
K-weighted power and peaks, which the measuring pass records, by estimating the limited
loudness (``cakfx.dsp.limiter.limited_loudness``).

A node whose model runs at 44.1 kHz passes the band above it through (``cakfx.dsp.resample``'s
``band_split`` / ``HighBand``) and gives that band to the stage as ``high``: the gain then acts on
the model band alone (``y_raw - high``, matched against ``x - high``) and ``high`` is added back
after it, so a 96 kHz file's 22-48 kHz content is not moved by the loudness match; the limiter
keeps out of it too: it acts on the model band with the ceiling lowered by ``high``'s true peak, so
the sum holds the ceiling (its decision takes the bound ``gain·peak(model band) + peak(high)``,
which a stream can measure before the gain is known).

``"original"``: the published pipelines' level stages, for fidelity tests against them.
``original="texture"``: per channel, gain ``rms(x) / rms(y)`` clipped to 0.1…10, then
``tanh(0.95·g·y) / 0.95``. ``original="grain"``: one gain ``rms(x) / rms(y)`` over all channels,
clipped to 0.01…100 (none if ``rms(y) ≤ 1e-9``), then the whole output scaled so its peak is at
most 0.95.

``"off"``: ``y_raw`` unchanged.

Offline and streaming
---------------------
``apply(x, y_raw, sr)`` measures the whole signals (any fixed measurement is ignored) and returns
output aligned with the input. ``stream(x_block, y_raw_block, sr)`` returns a block of the same
length, delayed by ``latency_samples(sr)``: for ``"match"`` the limiter's look-ahead plus its
true-peak filter's span (236 samples at 44.1 kHz, 256 at 48 kHz, 496 at 96 kHz), constant whether or
not the limiter acts; 0 for the other modes.

With a fixed measurement (``begin_measure()``, stream every block, ``end_measure()``; then
``reset()`` and stream again) ``stream`` reproduces ``apply`` delayed by the latency, to float
rounding. While measuring, ``stream`` returns ``y_raw`` delayed (unity gain): that pass is for
the meters. Without a measurement (live use) ``stream`` uses running estimates: the loudness of
input and output so far (through the end of the current block), the gain eased towards their
difference with a ``LIVE_SMOOTHING_S`` time constant (starting at unity), and the limiter always
on. It therefore differs from offline at the start (the first second or so, while the estimate
settles) and wherever the material changes character; measured on the demo drum loop + pad
through a darkening, -9 dB "effect": see tests/test_level.py::test_live_stream_is_close_to_offline.

>>> import numpy as np
>>> sr = 44100
>>> x = np.random.default_rng(0).normal(0, 0.1, (2, sr)).astype(np.float32)
>>> stage = LevelStage("match", ceiling_db=-1.0)
>>> y = stage.apply(x, 0.25 * x, sr)              # a 12 dB quieter "effect" output
>>> bool(np.allclose(y, x, atol=1e-5))              # matched back to the input's loudness
True
"""

from __future__ import annotations

import math

import numpy as np

from cakfx.dsp.limiter import (
    BlockPeaks,
    TruePeakLimiter,
    held_block_peaks,
    limit,
    limited_loudness,
    limiter_latency,
)
from cakfx.dsp.loudness import LoudnessMeter, PeakMeter, integrated_loudness, true_peak_db, true_peak_exceeds
from cakfx.dsp.resample import DelayLine

MODES = ("match", "original", "off")
ORIGINALS = ("texture", "grain")
CEILING_RANGE = (-24.0, 0.0)
MAX_GAIN_DB = 24.0  # a loudness match never moves the output more than this
LIVE_SMOOTHING_S = 0.3  # time constant of the live gain
TEXTURE_GAIN_LIMITS = (0.1, 10.0)
GRAIN_GAIN_LIMITS = (0.01, 100.0)
GRAIN_PEAK = 0.95
DRIVE_BLOCK = 64  # samples per block of the envelope the limiter's drive is estimated from
MAX_DRIVE_DB = 6.0  # the most the limiter is driven to make up what it takes
# a limiter that takes less than this is not driven, and one that takes more is driven only until
# it takes this much: each dB of drive squashes transients, and a loss this small is not heard as a
# level change (texture-subtle's median spectral change went 1.20 -> 1.67 dB driving to 0.05 LU)
DRIVE_TOLERANCE_LU = 0.5
# nor driven more than this many dB per LU it takes: where the drive buys little back (a one-shot
# whose attack is all its loudness; the estimate also reads low there: a kick +0.7 LU over at 6 dB)
# squashing it further is not worth the loudness
DRIVE_PER_LOSS = 2.0


def _to_numpy(a) -> tuple[np.ndarray, object]:
    if hasattr(a, "detach"):
        import torch

        like = a
        arr = a.detach().cpu().numpy()
        return arr, lambda y: torch.from_numpy(np.ascontiguousarray(y)).to(like.device, like.dtype)
    return np.asarray(a), lambda y: y


def _rms(a: np.ndarray, axis=None) -> np.ndarray | float:
    return np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=axis))


def _finite_copy(a: np.ndarray, dtype=None) -> np.ndarray:
    """A copy of ``a`` with NaN and infinities as 0 (the check alone where all are finite: 10x
    cheaper than ``nan_to_num``)."""
    a = np.asarray(a, dtype=dtype)
    if np.isfinite(a).all():
        return a.copy()
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)


def _db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _model_band(x: np.ndarray, y: np.ndarray, high) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(x - high, y - high, high)``: the model band of input and raw output, and the band above
    it that both carry unchanged (``high`` None: ``(x, y, None)``)."""
    if high is None:
        return x, y, None
    h = _finite_copy(_to_numpy(high)[0], y.dtype)
    return x - h.astype(x.dtype, copy=False), y - h, h


def _measured(y: np.ndarray, sample_rate: float) -> LoudnessMeter:
    """A loudness meter that has heard ``y`` and kept its envelope for the limiter's drive."""
    meter = LoudnessMeter(sample_rate, y.shape[0], record=DRIVE_BLOCK)
    for a in range(0, max(y.shape[-1], 1), 1 << 16):
        meter.process(y[:, a : a + (1 << 16)])
    return meter


def limiter_drive_db(powers: np.ndarray, peaks_db: np.ndarray, gain_db: float, ceiling_db: float,
                     sample_rate: float) -> float:
    """Extra gain into the limiter so its output keeps the matched loudness: what a mastering
    engineer does, raising a limiter's input until the target is met (0…``MAX_DRIVE_DB``).

    ``powers``/``peaks_db``: the model band's K-weighted power and sample peak per ``DRIVE_BLOCK``
    samples, before ``gain_db``; the loudness after limiting is estimated from them
    (``cakfx.dsp.limiter.limited_loudness``) and the drive found by bisection. A limiter that
    takes under ``DRIVE_TOLERANCE_LU`` is not driven, one that takes more is driven until it takes
    that much, and none is driven by more than ``DRIVE_PER_LOSS`` dB per LU it takes undriven.
    """
    def shortfall(drive: float) -> float:
        estimate = limited_loudness(powers, held_peaks, gain_db + drive, ceiling_db, sample_rate, DRIVE_BLOCK,
                                    held=True)
        return estimate - (target - DRIVE_TOLERANCE_LU)

    held_peaks = held_block_peaks(peaks_db, sample_rate, DRIVE_BLOCK)  # once for the whole search
    target = limited_loudness(powers, peaks_db, gain_db, math.inf, sample_rate, DRIVE_BLOCK)
    loss = DRIVE_TOLERANCE_LU - shortfall(0.0) if math.isfinite(target) else 0.0
    if loss <= DRIVE_TOLERANCE_LU:
        return 0.0
    most = min(MAX_DRIVE_DB, DRIVE_PER_LOSS * loss)
    if shortfall(most) <= 0.0:
        return most
    low, high = 0.0, most
    for _ in range(12):  # to 0.0015 dB
        mid = 0.5 * (low + high)
        low, high = (mid, high) if shortfall(mid) < 0.0 else (low, mid)
    return 0.5 * (low + high)


def _model_ceiling_db(ceiling_db: float, high_peak_db: float) -> float | None:
    """The ceiling left to the model band when the band above it passes through untouched, even
    by the limiter (``gain·model + high`` then cannot exceed ``ceiling_db``); None where the high
    band takes (nearly) all of it: the limiter then acts on the sum."""
    room = _db_to_gain(ceiling_db) - _db_to_gain(high_peak_db)
    return 20.0 * math.log10(room) if room > _db_to_gain(CEILING_RANGE[0]) else None


def _peak_bound_db(gain_db: float, model_peak_db: float, high_peak_db: float = -math.inf) -> float:
    """True peak that ``gain * model_band + high`` cannot exceed (exact without a high band).

    The limiter decision takes this bound, not the sum's own true peak, because a stream must
    decide it from what its measuring pass saw before the gain was known (the two bands' peaks).
    """
    if high_peak_db == -math.inf:
        return gain_db + model_peak_db
    peak = _db_to_gain(gain_db + model_peak_db) + _db_to_gain(high_peak_db)
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def _peak_bound_exceeds(model: np.ndarray, gain_db: float, high_peak_db: float, ceiling_db: float) -> bool:
    """``_peak_bound_db(gain_db, true_peak_db(model), high_peak_db) > ceiling_db``, asked of the
    model band's true peak directly (``true_peak_exceeds``: it stops at the first peak over)."""
    room = _db_to_gain(ceiling_db) - _db_to_gain(high_peak_db)
    if room <= 0.0:  # the high band alone reaches the ceiling
        return _peak_bound_db(gain_db, true_peak_db(model), high_peak_db) > ceiling_db
    return true_peak_exceeds(model, 20.0 * math.log10(room) - gain_db)


class LevelStage:
    """The output level stage of a neural effect (see the module docstring for the manual).

    ``mode``: ``"match"``, ``"original"`` or ``"off"``; ``ceiling_db``: the limiter's ceiling
    (dBTP, -24…0; ``"match"`` only); ``original``: which published pipeline ``"original"``
    reproduces (``"texture"`` or ``"grain"``).
    """

    def __init__(self, mode: str = "match", ceiling_db: float = -1.0, original: str = "texture") -> None:
        if mode not in MODES:
            raise ValueError(f"level must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
        if original not in ORIGINALS:
            raise ValueError(f"original must be one of {', '.join(map(repr, ORIGINALS))}, got {original!r}")
        ceiling_db = float(ceiling_db)
        if not CEILING_RANGE[0] <= ceiling_db <= CEILING_RANGE[1]:
            raise ValueError(f"ceiling_db must be between {CEILING_RANGE[0]:g} and {CEILING_RANGE[1]:g} dB, "
                             f"got {ceiling_db:g}")
        self.mode, self.ceiling_db, self.original = mode, ceiling_db, original
        self._fixed: dict | None = None  # the measurement streaming uses, when one is fixed
        self._measuring: dict | None = None  # the meters of a measurement under way
        self._state: dict | None = None  # streaming state, built on the first block
        self.last: dict = {}  # what the last apply() measured and did (for reports)

    def __repr__(self) -> str:
        return f"LevelStage(mode={self.mode!r}, ceiling_db={self.ceiling_db:g}, original={self.original!r})"

    # -- offline ---------------------------------------------------------------------------
    def apply(self, x, y_raw, sample_rate: float, high=None):
        """Level ``y_raw`` (``(C, N)``, numpy or torch) against the input ``x``; aligned output.

        ``high``: the input's band above the model's (``cakfx.dsp.resample.band_split``), which
        ``y_raw`` carries unchanged; ``"match"`` then levels only the model band (``y_raw - high``
        against ``x - high``) and adds ``high`` back untouched, also by the limiter.
        """
        xa, _ = _to_numpy(x)
        ya, back = _to_numpy(y_raw)
        ya = _finite_copy(ya)
        if self.mode == "off":
            return back(ya)
        if self.mode == "original":
            peak = float(np.abs(ya).max(initial=0.0))
            gains, scale = self._original_gains(_rms(xa, -1), _rms(ya, -1), peak)
            return back(self._original_apply(ya, gains, scale))
        xa, ya, ha = _model_band(xa, ya, high)
        high_peak_db = -math.inf if ha is None else true_peak_db(ha)
        meter = _measured(ya, sample_rate)
        gain_db = self._match_gain_db(integrated_loudness(xa, sample_rate), meter.loudness)
        out = ya * np.asarray(_db_to_gain(gain_db), dtype=ya.dtype)
        if ha is None:
            limiting = true_peak_exceeds(out, self.ceiling_db)
        else:
            # the bound a stream can measure too, so offline and streamed renders decide alike
            limiting = _peak_bound_exceeds(ya, gain_db, high_peak_db, self.ceiling_db)
        drive = 0.0
        if limiting:
            peaks = BlockPeaks(DRIVE_BLOCK)
            peaks.process(ya)
            drive = limiter_drive_db(meter.recorded_powers, peaks.peaks_db, gain_db, self.ceiling_db,
                                     sample_rate)
            if drive:
                out = ya * np.asarray(_db_to_gain(gain_db + drive), dtype=ya.dtype)
        model_ceiling = None if ha is None else _model_ceiling_db(self.ceiling_db, high_peak_db)
        if limiting and model_ceiling is not None:  # the high band stays out of the limiter
            out = limit(out, model_ceiling, sample_rate).astype(ya.dtype, copy=False)
        if ha is not None:
            out = out + ha
        if limiting and model_ceiling is None:
            out = limit(out, self.ceiling_db, sample_rate).astype(ya.dtype, copy=False)
        self.last = {"gain_db": gain_db + drive, "limiting": bool(limiting), "drive_db": drive}
        return back(out)

    @staticmethod
    def _match_gain_db(loudness_in: float, loudness_out: float) -> float:
        if not (math.isfinite(loudness_in) and math.isfinite(loudness_out)):
            return 0.0  # silence in or out: leave the level alone
        return float(np.clip(loudness_in - loudness_out, -MAX_GAIN_DB, MAX_GAIN_DB))

    def _original_gains(self, rms_in, rms_out, peak_out: float) -> tuple[np.ndarray | float, float]:
        """Texture: per-channel gains (rms per channel given). Grain: one gain and the peak scale."""
        if self.original == "texture":
            rms_in, rms_out = np.broadcast_arrays(np.atleast_1d(rms_in), np.atleast_1d(rms_out))  # mono in
            ratio = np.divide(rms_in, rms_out, out=np.ones_like(rms_in), where=rms_out > 0)
            return np.where(rms_out > 0, np.clip(ratio, *TEXTURE_GAIN_LIMITS), 1.0), 1.0
        # grain: RMS over all channels together (the mean of the per-channel mean squares)
        total_in = math.sqrt(float(np.mean(np.square(rms_in))))
        total_out = math.sqrt(float(np.mean(np.square(rms_out))))
        if total_out <= 1e-9:
            return 1.0, 1.0
        gain = float(np.clip(total_in / total_out, *GRAIN_GAIN_LIMITS))
        top = gain * peak_out
        return gain, (GRAIN_PEAK / top if top > GRAIN_PEAK else 1.0)

    def _original_apply(self, y: np.ndarray, gains, scale: float) -> np.ndarray:
        if self.original == "texture":
            g = (0.95 * np.asarray(gains, dtype=np.float64))[:, None].astype(y.dtype)
            return (np.tanh(y * g) / np.asarray(0.95, dtype=y.dtype)).astype(y.dtype, copy=False)
        out = y * np.asarray(gains, dtype=y.dtype)
        return out * np.asarray(scale, dtype=y.dtype) if scale != 1.0 else out

    # -- streaming -------------------------------------------------------------------------
    def latency_samples(self, sample_rate: float) -> int:
        """Delay of ``stream`` output: the limiter's for ``"match"``, else 0."""
        return limiter_latency(sample_rate) if self.mode == "match" else 0

    @property
    def needs_measure(self) -> bool:
        """True where the level needs the whole signal (``"match"``, ``"original"``)."""
        return self.mode != "off"

    def begin_measure(self) -> None:
        """Forget any previous measurement; accumulate from the blocks streamed from now on."""
        self._fixed = None
        self._measuring = {}
        self._state = None

    def end_measure(self) -> None:
        """Fix the gain (and whether the limiter acts) from what was accumulated."""
        m, self._measuring = self._measuring, None
        if not m:
            self._fixed = {"gain_db": 0.0, "limiting": False, "gains": 1.0, "scale": 1.0}
        elif self.mode == "match":
            gain_db = self._match_gain_db(m["in"].loudness, m["out"].loudness)
            high_peak = m["peak_high"].true_peak_db if "peak_high" in m else -math.inf
            limiting = _peak_bound_db(gain_db, m["peak"].true_peak_db, high_peak) > self.ceiling_db
            drive = limiter_drive_db(m["out"].recorded_powers, m["blocks"].peaks_db, gain_db, self.ceiling_db,
                                     m["out"].sample_rate) if limiting else 0.0
            self._fixed = {"gain_db": gain_db + drive, "limiting": limiting, "drive_db": drive,
                           "model_ceiling_db": None if "peak_high" not in m else
                           _model_ceiling_db(self.ceiling_db, high_peak)}
        else:
            n = max(m["n"], 1)
            gains, scale = self._original_gains(np.sqrt(m["sq_in"] / n), np.sqrt(m["sq_out"] / n),
                                                m["peak_out"])
            self._fixed = {"gains": gains, "scale": scale}
        self._state = None

    def forget_measure(self) -> None:
        """Drop the fixed measurement: streaming goes back to the live running estimate."""
        self._fixed = None
        self._measuring = None
        self._state = None

    @property
    def measurement(self) -> dict | None:
        """The fixed measurement, or None. ``"match"``: ``gain_db`` (the gain applied: the match
        plus ``drive_db``), ``limiting``, ``drive_db`` and ``model_ceiling_db`` (the limiter's
        ceiling for the model band when a high band passes outside it, else None)."""
        return None if self._fixed is None else dict(self._fixed)

    def reset(self) -> None:
        """Clear streaming state (delay lines, limiter, live estimates); keeps a fixed measurement."""
        self._state = None

    def stream(self, x_block, y_raw_block, sample_rate: float, high_block=None):
        """Level the next block; output delayed by ``latency_samples(sample_rate)``.

        ``high_block``: the block of the untouched band (as ``apply``'s ``high``), aligned with
        ``x_block`` and ``y_raw_block``; give it on every block of a stream or on none.
        """
        xa, _ = _to_numpy(x_block)
        ya, back = _to_numpy(y_raw_block)
        ya = _finite_copy(ya, np.float32)
        sr = int(round(sample_rate))
        state = self._state
        xa = np.asarray(xa)
        shape = (sr, ya.shape[0], xa.shape[0])
        if state is None or state["shape"] != shape:
            state = self._state = self._new_state(*shape)
        if self.mode == "off":
            return back(ya)
        if self.mode == "original":
            if self._measuring is not None:
                self._accumulate(xa, ya, None, sr)
                return back(ya)
            return back(self._stream_original(xa, ya, state))
        xa, ya, ha = _model_band(xa, ya, high_block)
        if self._measuring is not None:
            self._accumulate(xa, ya, ha, sr)
            return back(state["delay"].process(ya if ha is None else ya + ha))
        if self._fixed is not None:
            out = ya * np.float32(_db_to_gain(self._fixed["gain_db"]))
            stage = state["limiter"] if self._fixed["limiting"] else state["delay"]
            if ha is not None and "high_delay" in state and self._fixed["limiting"]:  # high band kept out
                return back(stage.process(out) + state["high_delay"].process(ha))
        else:
            out, stage = self._live_gain(xa, ya, state), state["limiter"]
        return back(stage.process(out if ha is None else out + ha))

    def _new_state(self, sr: int, channels: int, in_channels: int) -> dict:
        state = {"shape": (sr, channels, in_channels), "sr": sr}
        if self.mode == "match":
            model_ceiling = (self._fixed or {}).get("model_ceiling_db")
            state["limiter"] = TruePeakLimiter(self.ceiling_db if model_ceiling is None else model_ceiling,
                                               sr, channels)
            if model_ceiling is not None:
                state["high_delay"] = DelayLine(channels, state["limiter"].latency)
            state["delay"] = DelayLine(channels, state["limiter"].latency)
            state["in"] = LoudnessMeter(sr, in_channels)
            state["out"] = LoudnessMeter(sr, channels)
            state["gain_db"] = 0.0
        else:
            state.update(n=0, sq_in=np.zeros(in_channels), sq_out=np.zeros(channels), peak_out=0.0)
        return state

    def _accumulate(self, x: np.ndarray, y: np.ndarray, high: np.ndarray | None, sr: int) -> None:
        m = self._measuring
        if not m:
            channels = y.shape[0]
            if self.mode == "match":
                m.update({"in": LoudnessMeter(sr, x.shape[0]),
                          "out": LoudnessMeter(sr, channels, record=DRIVE_BLOCK),
                          "peak": PeakMeter(channels), "blocks": BlockPeaks(DRIVE_BLOCK)})
            else:
                m.update(n=0, sq_in=np.zeros(x.shape[0]), sq_out=np.zeros(channels), peak_out=0.0)
        if self.mode == "match":
            m["in"].process(x)
            m["out"].process(y)
            m["peak"].process(y)
            m["blocks"].process(y)
            if high is not None:
                m.setdefault("peak_high", PeakMeter(high.shape[0])).process(high)
        else:
            self._add_rms(m, x, y)

    @staticmethod
    def _add_rms(m: dict, x: np.ndarray, y: np.ndarray) -> None:
        m["n"] += y.shape[1]
        m["sq_in"] = m["sq_in"] + np.square(x, dtype=np.float64).sum(axis=-1)
        m["sq_out"] = m["sq_out"] + np.square(y, dtype=np.float64).sum(axis=-1)
        m["peak_out"] = max(m["peak_out"], float(np.abs(y).max(initial=0.0)))

    def _stream_original(self, x: np.ndarray, y: np.ndarray, state: dict) -> np.ndarray:
        if self._fixed is not None:
            return self._original_apply(y, self._fixed["gains"], self._fixed["scale"])
        self._add_rms(state, x, y)  # live: the RMS (and for grain the peak) so far
        n = max(state["n"], 1)
        gains, scale = self._original_gains(np.sqrt(state["sq_in"] / n), np.sqrt(state["sq_out"] / n),
                                            state["peak_out"])
        return self._original_apply(y, gains, scale)

    def _live_gain(self, x: np.ndarray, y: np.ndarray, state: dict) -> np.ndarray:
        state["in"].process(x)
        state["out"].process(y)
        target = self._match_gain_db(state["in"].loudness, state["out"].loudness)
        if not math.isfinite(state["in"].loudness) or not math.isfinite(state["out"].loudness):
            target = state["gain_db"]  # nothing to go on yet: hold
        t = np.arange(1, y.shape[1] + 1)
        ramp = target + (state["gain_db"] - target) * np.exp(-t / (LIVE_SMOOTHING_S * state["sr"]))
        if y.shape[1]:
            state["gain_db"] = float(ramp[-1])
        return (y * (10.0 ** (ramp / 20.0))).astype(np.float32)
