"""``cak.limiter``: the look-ahead true-peak limiter of ``cakfx.dsp.limiter`` as a chain effect."""

from __future__ import annotations

import numpy as np

from cakfx.dsp import limiter as dsp
from cakfx.hookspecs import hookimpl
from cakfx.node import EffectNode
from cakfx.params import Param

SUMMARY = "Look-ahead true-peak limiter: holds its ceiling on the BS.1770 meter, unity gain elsewhere."

DESCRIPTION = """\
A brickwall limiter whose sidechain is the ITU-R BS.1770-4 true-peak filter (4x oversampled),
so the output's true peak, as `cakfx measure` and any BS.1770 meter read it, never exceeds
`ceiling_db`. Away from peaks the gain is exactly 1: material under the ceiling passes bit for
bit (delayed, when streaming). One gain for all channels (the stereo image stays); any sample
rate and channel count.

The gain is held from `lookahead_ms` before a peak to 25 ms after it, fades in over the
look-ahead (an S-curve in dB, fully down before the peak) and recovers with time constant
`release_ms` (exponential in dB).

Offline (`reset=True`, the default) the output is aligned with the input. Streaming
(`reset=False`) any block sizes give the offline output delayed by `latency_samples(sr)`: the
look-ahead plus 16 samples (236 samples, 5.4 ms, at 44.1 kHz with the defaults); chains
compensate it like any node's. A change of sample rate or channel count starts a new stream.
Setting `ceiling_db` or `release_ms` mid-stream takes effect from the next block; a new
`lookahead_ms` (a new latency) starts the stream again.

Example:

    >>> import numpy as np, cakfx
    >>> from cakfx.dsp.loudness import true_peak_db
    >>> limiter = cakfx.create_effect("cak.limiter", ceiling_db=-1.0)
    >>> limiter
    <cakfx.Limiter ceiling_db=-1 release_ms=100 lookahead_ms=5>
    >>> t = np.arange(44100) / 44100
    >>> loud = (1.5 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    >>> bool(true_peak_db(limiter(loud, 44100)) <= -1.0)
    True
    >>> quiet = 0.5 * loud
    >>> bool(np.array_equal(limiter(quiet, 44100), quiet))
    True
"""


class Limiter(EffectNode):
    """``cak.limiter`` (see ``DESCRIPTION``): ``Limiter(ceiling_db=-1.0, release_ms=100.0,
    lookahead_ms=5.0)``, called like a pedalboard plugin."""

    name = "cak.limiter"
    params = (
        Param("ceiling_db", "float", -1.0, "Ceiling in true peak (BS.1770), dBTP.", -60.0, 0.0),
        Param("release_ms", "float", dsp.RELEASE_MS,
              "Time constant of the recovery after a peak (exponential in dB), ms.", 1.0, 5000.0),
        Param("lookahead_ms", "float", dsp.LOOKAHEAD_MS,
              "Look-ahead: how long the gain takes to fade down before a peak, ms (also the latency).",
              0.1, 100.0),
    )

    def __init__(self, ceiling_db: float = -1.0, release_ms: float = dsp.RELEASE_MS,
                 lookahead_ms: float = dsp.LOOKAHEAD_MS) -> None:
        self.ceiling_db, self.release_ms, self.lookahead_ms = ceiling_db, release_ms, lookahead_ms
        self._stream: dsp.TruePeakLimiter | None = None

    def _limiter(self, sample_rate: float, channels: int) -> dsp.TruePeakLimiter:
        return dsp.TruePeakLimiter(self.ceiling_db, sample_rate, channels,
                                   lookahead_ms=self.lookahead_ms, release_ms=self.release_ms)

    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        return dsp.limit(audio, self.ceiling_db, sample_rate,
                         lookahead_ms=self.lookahead_ms, release_ms=self.release_ms)

    def stream_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        stream = self._stream
        if stream is None or stream.lookahead != dsp.lookahead_samples(sample_rate, self.lookahead_ms):
            # a new look-ahead is a new latency: the stream starts again, as after reset()
            stream = self._stream = self._limiter(sample_rate, audio.shape[0])
        elif (stream.ceiling_db, stream.release_ms) != (self.ceiling_db, self.release_ms):
            stream.retune(self.ceiling_db, self.release_ms)  # live, from this block on, as pedalboard's
        return stream.process(audio)

    def latency_samples(self, sample_rate: float) -> int:
        return dsp.limiter_latency(sample_rate, self.lookahead_ms)

    def reset(self) -> None:
        self._stream = None


@hookimpl
def register_effects(register):
    register("cak.limiter", Limiter, list(Limiter.params), summary=SUMMARY, description=DESCRIPTION)


__all__ = ["Limiter"]
