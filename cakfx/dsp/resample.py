"""Resampling (libsoxr) and the band split that keeps a high-rate file's top octave.

``resample(x, orig_sr, new_sr, length=None)`` works on numpy arrays or torch tensors shaped
``(..., samples)`` and returns the same kind (dtype and device kept). It is time-aligned (zero
phase offset: output sample ``k`` is the signal at time ``k / new_sr``) and returns exactly
``ceil(n * new_sr / orig_sr)`` samples, or ``length`` (trimmed, or zero-padded past the end).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(2, 96000)).astype(np.float32)
>>> resample(x, 96000, 44100).shape
(2, 44100)
>>> resample(resample(x, 96000, 44100), 44100, 96000, length=96000).shape
(2, 96000)

``StreamResampler`` is the block-by-block form: its output is the offline output delayed by
``latency`` output samples (a constant fixed at construction; the first ``latency`` samples of a
stream are zeros), bit for bit on any chunking.

The 44.1 kHz models only know the band below 22.05 kHz. ``band_split(x, sr)`` returns
``(low, high)``: ``low`` is what the model path sees after resampling to 44.1 kHz and back,
``high = x - low`` the rest (at 88.2/96 kHz: everything above ~20-22 kHz). A node adds ``high``
back to its processed ``low`` so the top octave passes through unchanged; at or below 44.1 kHz
``high`` is all zeros. ``HighBand`` is its streaming form.
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np
import soxr

MODEL_SR = 44100
QUALITY = "HQ"  # libsoxr's 20-bit quality: images and aliases stay below -100 dB
PIECE = 256  # input samples per soxr call: bounds how much output soxr holds back
FEED = 4096  # input samples per soxr call while streaming: soxr's output is the same on any
# chunking and it holds back less on big calls than on PIECE (measured: _stream_lag), so the
# latency set from PIECE stays enough; a 60 s 48 kHz HighBand stream takes 0.37 -> 0.24-0.29 s
LEAD = 256  # at least this many zeros go in before the signal: soxr's first ~50 outputs are not
# those of an LTI filter, and offline and streamed (chained) resamplers must agree everywhere


def _to_numpy(x) -> tuple[np.ndarray, object]:
    """``x`` as a numpy array (float32 or float64) and a function turning a result back."""
    if hasattr(x, "detach"):  # a torch tensor: compute on CPU, return on x's device and dtype
        import torch

        like = x
        arr = x.detach().cpu().numpy()
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float32)
        return arr, lambda y: torch.from_numpy(y).to(device=like.device, dtype=like.dtype)
    arr = np.asarray(x)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    return arr, lambda y: y


def output_length(n: int, orig_sr: float, new_sr: float) -> int:
    """``ceil(n * new / orig)`` in exact integer arithmetic."""
    orig, new = int(round(orig_sr)), int(round(new_sr))
    return -(-n * new // orig)


def resample(x, orig_sr: float, new_sr: float, length: int | None = None):
    """Resample ``x`` (``(..., samples)``, numpy or torch) from ``orig_sr`` to ``new_sr`` with libsoxr.

    Time-aligned; ``ceil(n * new / orig)`` samples, or ``length`` if given.
    """
    orig, new = int(round(orig_sr)), int(round(new_sr))
    arr, back = _to_numpy(x)
    n = arr.shape[-1]
    out_len = output_length(n, orig, new) if length is None else int(length)
    if orig == new:
        y = arr
    elif n == 0:
        y = np.zeros((*arr.shape[:-1], 0), dtype=arr.dtype)
    else:
        flat = arr.reshape(-1, n)
        # zeros before (see LEAD), and a few past the end so the last (fractional) output sample
        # is computed, not padded
        lead, skip = _lead(orig, new)
        pad = -(-orig // new) + 1
        frames = np.zeros((lead + n + pad, flat.shape[0]), dtype=arr.dtype)
        frames[lead : lead + n] = flat.T
        y = soxr.resample(frames, orig, new, quality=QUALITY)[skip : skip + output_length(n, orig, new)]
        y = y.T.reshape(*arr.shape[:-1], -1)
    if y.shape[-1] >= out_len:
        y = y[..., :out_len]
    else:
        y = np.concatenate([y, np.zeros((*y.shape[:-1], out_len - y.shape[-1]), dtype=y.dtype)], axis=-1)
    return back(np.ascontiguousarray(y))


def _lead(orig: int, new: int) -> tuple[int, int]:
    """Zeros fed before the signal (a whole number of rate periods) and the outputs they make."""
    period_in = orig // math.gcd(orig, new)
    lead = -(-LEAD // period_in) * period_in
    return lead, lead * new // orig


def _open_stream(orig: int, new: int, channels: int, dtype: np.dtype):
    """A soxr stream already fed its lead of zeros, and how many of its outputs to discard."""
    stream = soxr.ResampleStream(orig, new, channels, dtype=dtype.name, quality=QUALITY)
    lead, skip = _lead(orig, new)
    zeros = np.zeros((PIECE, channels), dtype)
    for a in range(0, lead, PIECE):
        skip -= stream.resample_chunk(zeros[: min(PIECE, lead - a)]).shape[0]
    return stream, skip


@functools.cache
def _stream_lag(orig: int, new: int) -> int:
    """The most output samples soxr held back (behind ``floor(input * new / orig)``), measured on
    noise fed in pieces of ``PIECE``, of 37 and of ``FEED`` samples; the latency is this plus a margin."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (max(16384, orig // 4), 1)).astype(np.float32)
    lag = 0
    for piece in (PIECE, 37, FEED):
        stream, skip = _open_stream(orig, new, 1, np.dtype(np.float32))
        produced = -skip
        for a in range(0, x.shape[0], piece):
            produced += stream.resample_chunk(x[a : a + piece]).shape[0]
            lag = max(lag, min(a + piece, x.shape[0]) * new // orig - produced)
    return lag


class StreamResampler:
    """Block-by-block resampling: ``process(block)`` → the offline ``resample`` output delayed by
    ``latency`` output samples (on any chunking; the first ``latency`` samples are zeros).

    After ``k`` input samples in all, ``floor(k * new / orig)`` output samples have come out, or
    exactly ``frames`` if a call asks for them (at most ``margin`` more than that; a band split
    uses it to return as many samples as it was given).

    ``latency`` is a multiple of ``new / gcd(orig, new)`` output samples (a whole number of input
    samples), so resamplers chained there and back delay by a whole number of samples. Measured
    (soxr HQ): 96 kHz→44.1 kHz 882 samples (20 ms), 44.1→96 kHz 2240 (23 ms), 88.2→44.1 kHz 960,
    44.1→88.2 kHz 1888; a 96 kHz ``HighBand`` round trip 4160 samples (43 ms).

    >>> import numpy as np
    >>> rs = StreamResampler(96000, 44100, channels=2)
    >>> out = [rs.process(np.zeros((2, 960), np.float32)) for _ in range(10)]
    >>> sum(o.shape[1] for o in out)
    4410
    """

    def __init__(self, orig_sr: float, new_sr: float, channels: int, dtype=np.float32) -> None:
        self.orig, self.new = int(round(orig_sr)), int(round(new_sr))
        self.channels = int(channels)
        self.dtype = np.dtype(dtype)
        self.period = self.new // math.gcd(self.orig, self.new)
        self.margin = -(-self.new // self.orig) + 1  # output samples a `frames` request may run ahead
        if self.orig == self.new:
            self.latency = 0
        else:
            need = _stream_lag(self.orig, self.new) + self.margin + 32
            self.latency = -(-need // self.period) * self.period
        self.reset()

    def __repr__(self) -> str:
        return (f"StreamResampler(orig_sr={self.orig}, new_sr={self.new}, channels={self.channels}, "
                f"latency={self.latency})")

    def reset(self) -> None:
        """Start a new stream (the next output begins with ``latency`` zeros)."""
        self._stream, self._skip = None, 0
        if self.orig != self.new:
            self._stream, self._skip = _open_stream(self.orig, self.new, self.channels, self.dtype)
        self._fifo: deque[np.ndarray] = deque([np.zeros((self.channels, self.latency), self.dtype)])
        self._buffered = self.latency
        self._taken = 0
        self._inputs = 0

    def process(self, block, frames: int | None = None) -> np.ndarray:
        """Resample the next ``(C, n)`` block; returns ``(C, m)`` (``m = frames`` if given)."""
        x = np.asarray(block, dtype=self.dtype)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"StreamResampler expects ({self.channels}, samples) blocks, got {x.shape}")
        self._inputs += x.shape[1]
        if self._stream is None:
            self._fifo.append(x.copy())
            self._buffered += x.shape[1]
        else:
            frames_in = np.ascontiguousarray(x.T)
            for a in range(0, frames_in.shape[0], FEED):
                y = self._stream.resample_chunk(frames_in[a : a + FEED])
                if self._skip:  # the rest of the lead's outputs
                    drop = min(self._skip, y.shape[0])
                    y, self._skip = y[drop:], self._skip - drop
                if y.shape[0]:
                    self._fifo.append(np.ascontiguousarray(y.T))
                    self._buffered += y.shape[0]
        want = self._inputs * self.new // self.orig - self._taken if frames is None else int(frames)
        if want > self._buffered:
            raise RuntimeError(f"StreamResampler {self.orig}->{self.new}: {want} samples asked, "
                               f"{self._buffered} ready (latency {self.latency} too small)")
        return self._take(want)

    def _take(self, count: int) -> np.ndarray:
        out = np.empty((self.channels, count), self.dtype)
        filled = 0
        while filled < count:
            head = self._fifo[0]
            k = min(count - filled, head.shape[1])
            out[:, filled : filled + k] = head[:, :k]
            filled += k
            if k == head.shape[1]:
                self._fifo.popleft()
            else:
                self._fifo[0] = head[:, k:]
        self._buffered -= count
        self._taken += count
        return out


class DelayLine:
    """Delays ``(C, n)`` blocks by a fixed number of samples (zeros first)."""

    def __init__(self, channels: int, samples: int, dtype=np.float32) -> None:
        self.channels, self.samples, self.dtype = int(channels), int(samples), np.dtype(dtype)
        self.reset()

    def __repr__(self) -> str:
        return f"DelayLine(channels={self.channels}, samples={self.samples})"

    def reset(self) -> None:
        self._buffer = np.zeros((self.channels, self.samples), self.dtype)

    def process(self, block) -> np.ndarray:
        joined = np.concatenate([self._buffer, np.asarray(block, dtype=self.dtype)], axis=1)
        n = joined.shape[1] - self.samples
        self._buffer = joined[:, n:]
        return joined[:, :n]


def band_split(x, sample_rate: float, model_sr: float = MODEL_SR, down=None):
    """``(low, high)`` of ``x`` (``(..., N)``): ``low`` = ``x`` resampled to ``model_sr`` and back
    (what a model at ``model_sr`` can see and return), ``high = x - low`` (the band above it).

    ``low + high`` equals ``x`` (to float rounding). At or below ``model_sr``, ``high`` is zeros.
    ``down``: ``resample(x, sample_rate, model_sr)`` if the caller has it already. A node::

        x44 = resample(x, sr, 44100)
        y = resample(model(x44), 44100, sr, length=x.shape[-1]) + band_split(x, sr, down=x44)[1]
    """
    if int(round(sample_rate)) <= int(round(model_sr)):
        return x, x * 0
    if down is None:
        down = resample(x, sample_rate, model_sr)
    low = resample(down, model_sr, sample_rate, length=x.shape[-1])
    return low, x - low


def high_band(x: np.ndarray, sample_rate: float, model_sr: float = MODEL_SR) -> np.ndarray:
    """The band above ``model_sr`` of ``(C, N)`` ``x`` as ``HighBand`` streams it (run over ``x``
    and flushed), aligned with ``x``: ``band_split(x)[1]`` but for the last ~100 samples, where
    ``band_split`` ends the low band with the signal and a stream hears its filters ring on.
    For a node whose offline path is its streaming path run on the whole signal (``cak.texture``).
    """
    band = HighBand(sample_rate, x.shape[0], model_sr)
    if not band.active:
        return np.zeros_like(x)
    x = np.asarray(x, np.float32)
    n, total = x.shape[1], x.shape[1] + band.latency  # the stream is flushed with `latency` zeros
    flushed = np.concatenate([x, np.zeros((x.shape[0], band.latency), np.float32)], 1)
    # what the two StreamResamplers return for the whole flushed signal in one block: their
    # latency's zeros, then the offline resampling (bit for bit), computed by one soxr call each
    # instead of PIECE-sample stream calls (four times faster on a 20 s file)
    down, up = band.down, band.up
    d = _delayed(resample(flushed, down.orig, down.new), down.latency, total * down.new // down.orig)
    low = _delayed(resample(d, up.orig, up.new), up.latency, total)
    return x - low[:, band.latency : band.latency + n]


def _delayed(y: np.ndarray, latency: int, count: int) -> np.ndarray:
    """The first ``count`` samples of ``y`` after ``latency`` zeros (``(C, N)``)."""
    out = np.zeros((y.shape[0], count), y.dtype)
    take = max(0, min(count - latency, y.shape[1]))
    out[:, latency : latency + take] = y[:, :take]
    return out


class HighBand:
    """Streaming ``band_split``: ``stream(block)`` → ``(low, high)`` blocks of the block's length,
    each equal to the offline ``band_split`` delayed by ``latency_samples`` samples.

    A node whose model runs at 44.1 kHz streams with the two resamplers it holds (``down``,
    ``up``; ``up.process(y44, frames=n)`` returns exactly ``n`` samples) and delays the input by
    the same total as its model path (``DelayLine``) before taking ``x - low``; ``stream`` does
    exactly this with an identity model, and is the reference for that bookkeeping.
    """

    def __init__(self, sample_rate: float, channels: int, model_sr: float = MODEL_SR) -> None:
        self.sample_rate, self.model_sr = int(round(sample_rate)), int(round(model_sr))
        self.channels = int(channels)
        self.active = self.sample_rate > self.model_sr
        self.down = StreamResampler(self.sample_rate, self.model_sr, channels)
        self.up = StreamResampler(self.model_sr, self.sample_rate, channels)
        self.latency = 0
        if self.active:  # the down latency is a whole number of samples at both rates
            self.latency = self.down.latency * self.sample_rate // self.model_sr + self.up.latency
        self.delay = DelayLine(channels, self.latency)

    def __repr__(self) -> str:
        return (f"HighBand(sample_rate={self.sample_rate}, channels={self.channels}, "
                f"model_sr={self.model_sr}, latency={self.latency})")

    def latency_samples(self, sample_rate: float | None = None) -> int:
        return self.latency

    def reset(self) -> None:
        self.down.reset()
        self.up.reset()
        self.delay.reset()

    def stream(self, block) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(block, dtype=np.float32)
        if not self.active:
            return x, np.zeros_like(x)
        low = self.up.process(self.down.process(x), frames=x.shape[1])
        return low, self.delay.process(x) - low
