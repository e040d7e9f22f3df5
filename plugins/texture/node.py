"""``cak.texture`` as an effect node: the published texture pipeline (DESIGN §6), per channel.

Signal path for each channel at 44.1 kHz::

    X   = STFT(x)                        # n_fft 2048, hop 512, periodic Hann, centred, zero padded
    n   = normalise(|X|)                 # log-sqrt compression + training-set stats (dsp.py)
    n'  = n + conv3x3(n) * t * scale * sigmoid((t - 0.3) * 20)    # the CAK layer (model.py)
    Y   = denormalise(n') * X / |X|      # original phase kept
    y   = ISTFT(Y)[:len(x)]
    y   = level(x, y)                    # cakfx.dsp.level.LevelStage ("match", "original", "off")

One frame grid covers the whole signal followed by n_fft zeros (the original zero-pads its
chunks). The STFT, model and overlap-add run in blocks of frames: each block recomputes three
frames of overlap-add history and one frame of kernel context on each side, and adds the
overlapping frames in a fixed order, so block results equal the one-shot result (to float32
rounding: the FFT's batching can move the last bit) and memory stays bounded on long files.
Frames live as ``(channels, frames, bins)`` with the bins contiguous; the 3x3 kernel (with the
identity and the control folded in) is nine shifted multiply-adds. On the CPU, blocks run on
``torch.get_num_threads()`` Python threads with single-threaded torch ops
(``cakfx.dsp.threads.parallel_map``). An output hop whose whole support (the nine hops of
input its frames and their kernel context read) is digital silence is exactly zero, so
silence stays silent.

Other rates: the model sees ``d = resample(x, sr, 44100)`` and the output is
``x + resample(P(d) - d, 44100, sr)``: a complementary band split, so what lies above the
model's band (22.05 kHz and up at 88.2/96 kHz) passes through unchanged.

Streaming (``reset=False``): the same blocks, computed as soon as their frames are complete,
so any chunking gives the offline output delayed by ``latency_samples(sr)``: n_fft + hop - 1
= 2559 samples at 44.1 kHz (a hop's worth of frames, each needing the next frame as kernel
context); at other rates add what the two streaming resamplers hold back. The offline path at
other rates is the streaming path run on the whole signal, so the two agree by construction.
A measuring pass (``begin_measure``) keeps the model path's output (``cakfx.streaming.KeptPass``);
the render pass after it reads that back, then carries on with the pass's stream state, so a
streamed file runs the model once (same samples: the blocks are computed the same way).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch

from cakfx.dsp.resample import DelayLine, HighBand, high_band
from cakfx.dsp.stft import HOP, MODEL_SR, N_FFT, hann
from cakfx.dsp.threads import parallel_map, serial_torch_ops
from cakfx.errors import CakfxError
from cakfx.neural import NeuralNode
from cakfx.plugins.texture import EFFECT, dsp
from cakfx.plugins.texture.model import TextureCAK, conv3x3
from cakfx.streaming import KeptPass

PIECES = N_FFT // HOP  # frames overlapping each hop-sized chunk of output
BINS = N_FFT // 2 + 1
FIRST_CHUNK = (N_FFT // 2) // HOP  # output chunk m covers signal [m*HOP - N_FFT//2, (m+1)*HOP - N_FFT//2)
#: samples a stream holds back at 44.1 kHz: chunk m needs input up to frame m + 1's end
LATENCY_44 = N_FFT + HOP - 1
#: frames per block: small blocks keep the CPU's working set in cache; accelerators like big ones
CPU_BLOCK = 96
ACCEL_BLOCK = 4096


class TextureNode(NeuralNode):
    """The CAK texture processor on any number of channels at any sample rate.

    ``model`` is a ``TextureCAK``; ``stats`` holds ``global_low``/``global_high``
    (and optionally ``alpha``/``gamma``) from the training set. ``level`` and ``ceiling_db``
    configure the shared level stage (``cakfx.dsp.level.LevelStage``). The parameters
    (``amount``, ``level``, ``ceiling_db``) are validated properties declared once in
    ``cakfx.plugins.texture.EFFECT``; a change applies from the next call.
    """

    effect = EFFECT

    def __init__(
        self,
        model: TextureCAK,
        stats: dict,
        amount: float = 0.5,
        level: str = "match",
        ceiling_db: float = -1.0,
        device: torch.device | str = "cpu",
        block_frames: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.low, self.high, self.alpha, self.gamma = read_stats(stats)
        self.amount = amount
        self.level = level
        self.ceiling_db = ceiling_db
        default_block = CPU_BLOCK if self.device.type == "cpu" else ACCEL_BLOCK
        self.block_frames = max(1, int(block_frames or default_block))
        self._stage = None  # the level stage, built for (level, ceiling_db) when first needed
        self._stage_key = None
        self._stream: _RawStream | None = None
        self._x_delay: _Fifo | None = None
        self._high: tuple | None = None  # (HighBand, DelayLine) streaming the band above the model's
        # the measuring pass's model output and final stream state, kept for the render pass (_raw)
        self._kept = KeptPass()
        self._priming = 0  # stream samples still to come before the signal's first (offline) sample

    @classmethod
    def from_weights(cls, weights_file, model, device, **settings) -> TextureNode:
        """The node for weights loaded by ``EFFECT``: the model plus the weights' stats."""
        return cls(model, weights_file.stats, device=device, **settings)

    # -- the node protocol ---------------------------------------------------------------
    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """Offline: the whole signal, output aligned with the input."""
        if self.amount == 0.0:  # true bypass, bit for bit
            return audio.copy()
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if int(round(sample_rate)) == MODEL_SR:
            y = self.process_44k(x)
        else:  # the streaming path on the whole signal, flushed: offline and streamed agree
            raw = _RawStream(self, sample_rate, x.shape[0])
            lat = raw.latency
            y = raw.push(np.concatenate([x, np.zeros((x.shape[0], lat), np.float32)], axis=1))[:, lat:]
        stage = self._level_stage()
        if stage is not None:  # the level stage levels the model band; the band above stays as it is
            high = high_band(x, sample_rate) if int(round(sample_rate)) > MODEL_SR else None
            y = stage.apply(x, y, sample_rate, high=high)
        return np.asarray(y).astype(audio.dtype, copy=False)

    def stream_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """Streaming: continues the previous call; the offline output delayed by ``latency_samples``."""
        if self.amount == 0.0:
            return audio.copy()
        x = np.ascontiguousarray(audio, dtype=np.float32)
        channels = x.shape[0]
        stream = self._stream
        if stream is None or (stream.sample_rate, stream.channels) != (sample_rate, channels):
            self._start_stream(float(sample_rate), channels)  # a new stream (process() resets too)
        stage = self._level_stage()
        y, high = self._raw(x, stage is not None)
        if stage is not None:
            self._x_delay.push(x)
            xd = self._x_delay.pop(x.shape[1])
            if self._kept.measuring:  # the meters see the signal as offline does: no priming zeros first
                skip = min(self._priming, x.shape[1])
                self._priming -= skip
                if skip < x.shape[1]:
                    high = None if high is None else high[:, skip:]
                    stage.stream(xd[:, skip:], y[:, skip:], sample_rate, high)
                return np.zeros_like(audio)  # a measuring pass drops its output
            y = stage.stream(xd, y, sample_rate, high)
        return np.asarray(y).astype(audio.dtype, copy=False)

    def _start_stream(self, sample_rate: float, channels: int) -> None:
        """The model path's stream state: the measuring pass's, kept, where a render pass replays
        it (``KeptPass``); else new."""
        kept = self._kept.resume(lambda state: (state[0].sample_rate, state[0].channels)
                                 == (sample_rate, channels))
        if kept is not None:
            self._stream, self._high = kept
        else:
            self._stream = _RawStream(self, sample_rate, channels)
            self._high = None
            if int(round(sample_rate)) > MODEL_SR:  # the band above the model's, aligned with y
                band = HighBand(sample_rate, channels)
                self._high = (band, DelayLine(channels, self._stream.latency - band.latency))
        self._x_delay = _Fifo(channels, self._stream.latency)
        self._priming = self._stream.latency

    def _raw(self, x: np.ndarray, with_high: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The model path's output for block ``x`` and (``with_high``) the band above the model's.

        A render pass after a measuring pass reads what that pass kept, then carries on with its
        stream state; a measuring pass keeps what it computes (``cakfx.streaming.KeptPass``)."""
        channels, n = x.shape
        high_rows = with_high and self._high is not None
        parts = []
        kept = self._kept.take(n)
        if kept is not None:  # then the stream carries on from where the measuring pass left it
            parts.append(kept)
            x = x[:, kept.shape[1] :]
        if x.shape[1]:
            y = self._stream.push(x)
            if high_rows:
                y = np.concatenate([y, self._high[1].process(self._high[0].stream(x)[1])])
            self._kept.record(y)
            parts.append(y)
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return (rows[:channels], rows[channels:]) if high_rows else (rows, None)

    def latency_samples(self, sample_rate: float) -> int:
        """Samples a stream (``reset=False``) lags the offline output at ``sample_rate``."""
        if self.amount == 0.0:
            return 0
        stage = self._level_stage()
        return raw_latency(sample_rate) + (stage.latency_samples(sample_rate) if stage is not None else 0)

    def reset(self) -> None:
        """Forget the stream (a kept level measurement stays, as the protocol says; so does the
        measuring pass's output until a render pass has begun reading it)."""
        self._stream = None
        self._x_delay = None
        self._high = None
        self._kept.reset()  # a replay begun is stale, a measuring pass that starts over keeps nothing
        if self._stage is not None:
            self._stage.reset()

    # -- the level stage and its measuring protocol ----------------------------------------
    def _level_stage(self):
        if self.level == "off":
            return None
        key = (self.level, self.ceiling_db)
        if self._stage_key != key:
            from cakfx.dsp.level import LevelStage

            self._stage = LevelStage(mode=self.level, ceiling_db=self.ceiling_db, original="texture")
            self._stage_key = key
        return self._stage

    @property
    def needs_measure(self) -> bool:
        stage = self._level_stage()
        return self.amount != 0.0 and stage is not None and bool(stage.needs_measure)

    def begin_measure(self) -> None:
        self._kept.begin()
        stage = self._level_stage()
        if stage is not None:
            stage.begin_measure()

    def end_measure(self) -> None:
        self._kept.end(None if self._stream is None else (self._stream, self._high))
        stage = self._level_stage()
        if stage is not None:
            stage.end_measure()

    def forget_measure(self) -> None:
        self._kept.forget()
        stage = self._level_stage()
        if stage is not None:
            stage.forget_measure()

    # -- the spectral part ---------------------------------------------------------------
    @torch.inference_mode()  # no autograd bookkeeping per op: 8 % of a 0.1 s file's model path
    def process_44k(self, x: np.ndarray) -> np.ndarray:
        """STFT -> model -> ISTFT of ``(C, N)`` float32 audio at 44.1 kHz, without the level stage."""
        length = x.shape[-1]
        out = np.empty_like(x)
        last = (length - 1 + N_FFT // 2) // HOP  # the last chunk holding a signal sample
        self._render(torch.from_numpy(x), 0, FIRST_CHUNK, last + 1, out, 0)
        return out

    def _render(
        self, src: torch.Tensor, origin: int, m0: int, m1: int, out: np.ndarray, out_origin: int
    ) -> None:
        """Output chunks ``[m0, m1)`` into ``out`` (clipped to it), block-parallel.

        ``src`` holds signal samples from signal index ``origin`` (zeros before 0 and after its
        end); ``out[:, 0]`` is signal index ``out_origin``.
        """
        kernel, bias = self.model.effective_kernel(self.amount)
        kernel = kernel.tolist()
        window, synthesis, first_fix = _windows(self.device)

        def run(b0: int) -> None:
            b1 = min(b0 + self.block_frames, m1)
            y = self._block(src, origin, b0, b1, kernel, float(bias), window, synthesis, first_fix)
            start = b0 * HOP - N_FFT // 2 - out_origin  # first sample of this block in out
            a, b = max(start, 0), min(start + y.shape[-1], out.shape[-1])
            if b > a:
                out[:, a:b] = y[:, a - start : b - start].cpu().numpy()

        jobs = range(m0, m1, self.block_frames)
        if len(jobs) == 1 and self.device.type == "cpu":  # a streamed block: still no OpenMP barriers
            with serial_torch_ops():
                run(jobs[0])
        else:
            parallel_map(run, jobs, self.device)

    def _block(self, src, origin, m0, m1, kernel, bias, window, synthesis, first_fix) -> torch.Tensor:
        """Output chunks ``[m0, m1)`` of every channel, ``(C, (m1 - m0) * HOP)``."""
        # frames m0-4 .. m1 (inclusive): chunk m sums frames m-3..m; the kernel wants one more each side
        f0, f1 = m0 - PIECES, m1 + 1
        seg = _segment(src, origin, f0, f1, self.device)  # (C, (f1 - f0 + 3) * HOP)
        count = m1 - m0
        # chunk k reads hops k .. k+8 of seg (its frames and their kernel context)
        hops = seg.reshape(seg.shape[0], -1, HOP)
        loud = (hops.amin(-1) != 0) | (hops.amax(-1) != 0)  # two passes, no copy: 18x faster than aminmax
        silent = torch.nn.functional.max_pool1d(loud.float()[:, None], 9, 1)[:, 0] == 0  # (C, count)
        if bool(silent.all()):
            return torch.zeros(seg.shape[0], count * HOP, device=seg.device)
        frames = seg.unfold(-1, N_FFT, HOP) * window
        spec = torch.fft.rfft(frames)  # (C, K + 2, BINS), bins contiguous
        del frames, seg
        parts = torch.view_as_real(spec)
        parts = parts * parts  # |X|^2 without complex abs (slow on CPU); pow(2) is slower than mul
        mag = torch.add(parts[..., 0], parts[..., 1]).sqrt_()  # a new, contiguous tensor
        del parts
        n = dsp.normalise(mag.clone(), self.low, self.high, self.alpha, self.gamma, inplace=True)
        missing = max(0, -f0)  # frames before the grid's frame 0: zero padding for the kernel
        if missing:
            n[:, :missing] = 0
        new_mag = conv3x3(n, kernel, bias)  # frames f0+1 .. f1-1
        del n
        dsp.denormalise(new_mag, self.low, self.high, self.alpha, self.gamma, inplace=True)
        inner, mag = spec[:, 1:-1], mag[:, 1:-1]  # views: the context frames are dropped below
        holed = mag.amin(-1) == 0  # (C, frames) holding a zero bin: the padding's, a silence's
        if bool(holed.any()):  # the original's angle(0) = 0: the new magnitude goes on the real axis
            zero = mag[holed] == 0  # on those frames only (a file's first block always has some)
            inner[holed] = inner[holed].masked_fill_(zero, 1.0)
            mag[holed] = mag[holed].masked_fill_(zero, 1.0)
        inner.mul_(new_mag.div_(mag))
        del new_mag, mag
        if missing > 1:
            inner[:, : missing - 1] = 0
        # inverse FFT of every frame (contiguous input; two frames wasted) then the inner ones
        frames = torch.fft.irfft(spec, n=N_FFT)[:, 1:-1].mul_(synthesis)  # (C, M + 3, N_FFT)
        pieces = frames.unflatten(-1, (PIECES, HOP))
        at = [pieces[:, PIECES - 1 - j : PIECES - 1 - j + count, j] for j in range(PIECES)]
        y = torch.add(at[0], at[1])
        for j in range(2, PIECES):  # fixed order, whatever the block size
            y.add_(at[j])
        for m in range(m0, min(m1, PIECES - 1)):  # chunks the first frames do not fully cover
            y[:, m - m0].mul_(first_fix[m])
        if bool(silent.any()):
            y[silent] = 0
        return y.flatten(-2)


def raw_latency(sample_rate: float) -> int:
    """Latency of the level-free path at ``sample_rate``: the 44.1 kHz frames plus what the
    streaming resamplers hold back (a bound measured on soxr for chunks of 1 sample, where it
    holds back most, with a margin)."""
    sr = int(round(sample_rate))
    if sr == MODEL_SR:
        return LATENCY_44
    down = _resampler_holdback(sr, MODEL_SR)  # in 44.1 kHz samples
    up = _resampler_holdback(MODEL_SR, sr)  # in output samples
    return int(math.ceil(up + (down + LATENCY_44) * sr / MODEL_SR)) + 2


def _resampler_holdback(orig: int, new: int) -> int:
    """An upper bound of the output samples a soxr stream (quality HQ) withholds, any chunking."""
    return int(math.ceil(1200 * new / min(orig, new))) + 16


class _Fifo:
    """A first-in first-out queue of ``(channels, n)`` float32 blocks."""

    def __init__(self, channels: int, zeros: int = 0) -> None:
        self.parts: deque[np.ndarray] = deque()
        self.size = 0
        if zeros:
            self.push(np.zeros((channels, zeros), np.float32))

    def push(self, block: np.ndarray) -> None:
        if block.shape[1]:
            self.parts.append(block)
            self.size += block.shape[1]

    def pop(self, n: int) -> np.ndarray:
        if n > self.size:  # the latency bound was wrong: a bug, not bad input
            raise RuntimeError(f"cak.texture stream underflow: {n} samples asked, {self.size} held")
        out = []
        while n:
            head = self.parts[0]
            if head.shape[1] <= n:
                out.append(self.parts.popleft())
                n -= head.shape[1]
            else:
                out.append(head[:, :n])
                self.parts[0] = head[:, n:]
                n = 0
        self.size -= sum(o.shape[1] for o in out)
        if len(out) == 1:
            return out[0]
        return np.concatenate(out, axis=1) if out else np.zeros((0, 0), np.float32)


class _RawStream:
    """Streaming state of the level-free path for one stream (channels, sample rate).

    ``push(block)`` returns a block of the same length: the offline output delayed by
    ``latency`` samples.
    """

    def __init__(self, node: TextureNode, sample_rate: float, channels: int) -> None:
        self.node, self.sample_rate, self.channels = node, float(sample_rate), channels
        self.latency = raw_latency(sample_rate)
        self.out = _Fifo(channels, self.latency)
        # the 44.1 kHz frame stream: input from signal index `start`, not yet joined parts after it
        self.buf = np.zeros((channels, 0), np.float32)
        self.start = 0
        self.pending: list[np.ndarray] = []
        self.received = 0
        self.next_chunk = FIRST_CHUNK
        sr = int(round(sample_rate))
        self.resampling = sr != MODEL_SR
        if self.resampling:
            import soxr

            # one mono stream per channel: rows go in and come out contiguous (no interleaving)
            self.down = [
                soxr.ResampleStream(sr, MODEL_SR, 1, dtype="float32", quality="HQ") for _ in range(channels)
            ]
            self.up = [
                soxr.ResampleStream(MODEL_SR, sr, 1, dtype="float32", quality="HQ") for _ in range(channels)
            ]
            self.x_fifo = _Fifo(channels)  # input waiting for the model's difference
            self.d_fifo = _Fifo(channels)  # model input waiting for the model's output

    def push(self, x: np.ndarray) -> np.ndarray:
        if not self.resampling:
            self.out.push(self.frames(x))
            return self.out.pop(x.shape[1])
        self.x_fifo.push(x)
        d = _resample_rows(self.down, x)
        if d.shape[1]:
            self.d_fifo.push(d)
            p = self.frames(d)
            if p.shape[1]:
                diff = p - self.d_fifo.pop(p.shape[1])  # the model's change, in the model's band only
                e = _resample_rows(self.up, diff)
                if e.shape[1]:
                    self.out.push(self.x_fifo.pop(e.shape[1]) + e)
        return self.out.pop(x.shape[1])

    def frames(self, x: np.ndarray) -> np.ndarray:
        """Take 44.1 kHz input; return every output sample that is now complete, in order."""
        self.pending.append(x)
        self.received += x.shape[1]
        last = (self.received - N_FFT // 2) // HOP  # chunks before `last` have all their frames
        if last <= self.next_chunk:
            return np.zeros((self.channels, 0), np.float32)
        self.buf = np.concatenate([self.buf, *self.pending], axis=1)
        self.pending = []
        m0 = self.next_chunk
        out = np.empty((self.channels, (last - m0) * HOP), np.float32)
        with torch.inference_mode():
            self.node._render(torch.from_numpy(self.buf), self.start, m0, last, out, m0 * HOP - N_FFT // 2)
        self.next_chunk = last
        keep = max((last - PIECES) * HOP - N_FFT // 2, self.start)  # the next block's first frame
        self.buf = self.buf[:, keep - self.start :]
        self.start = keep
        return out


#: samples per row from which the rows of a block resample on parallel threads (soxr releases the
#: GIL; a 20 s stereo file's four row passes take 22 -> 12 ms where a core is free), below it in turn
PARALLEL_ROWS = 1 << 15


def _resample_rows(streams: list, block: np.ndarray) -> np.ndarray:
    """Each row of ``(channels, n)`` through its own soxr stream; every stream emits the same count."""
    rows: list = [None] * len(streams)

    def run(i: int) -> None:
        rows[i] = streams[i].resample_chunk(block[i])

    if block.shape[1] >= PARALLEL_ROWS:
        parallel_map(run, range(len(streams)))
    else:
        for i in range(len(streams)):
            run(i)
    return rows[0][None] if len(rows) == 1 else np.stack(rows)


def read_stats(stats: dict) -> tuple[float, float, float, float]:
    """``(low, high, alpha, gamma)`` from stats with ``global_low``/``global_high`` (or ``low``/``high``)."""
    try:
        low = float(stats["global_low"] if "global_low" in stats else stats["low"])
        high = float(stats["global_high"] if "global_high" in stats else stats["high"])
        alpha = float(stats.get("alpha", dsp.ALPHA))
        gamma = float(stats.get("gamma", dsp.GAMMA))
    except (KeyError, TypeError, ValueError):
        raise CakfxError(
            "texture weights lack normalisation stats (global_low, global_high, alpha, gamma) "
            f"in their metadata; got keys {sorted(stats)}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low and alpha > 0 and gamma > 0):
        raise CakfxError(
            f"texture weights have unusable stats: low={low}, high={high}, alpha={alpha}, gamma={gamma}"
        )
    return low, high, alpha, gamma


def _segment(src: torch.Tensor, origin: int, f0: int, f1: int, device: torch.device) -> torch.Tensor:
    """Samples of frames ``f0 .. f1-1`` of the centred, zero-padded signal, ``(C, (f1 - f0 + 3) * HOP)``.

    ``src`` holds signal samples from signal index ``origin``; anything outside it reads as zero.
    """
    start = f0 * HOP - N_FFT // 2 - origin  # frame f0's first sample in src
    stop = (f1 - 1) * HOP + N_FFT // 2 - origin
    length = src.shape[-1]
    a, b = min(max(start, 0), length), max(min(stop, length), 0)
    seg = src[:, a : max(a, b)].to(device)
    if a - start or stop - max(a, b):
        seg = torch.nn.functional.pad(seg, (a - start, stop - max(a, b)))
    return seg


_window_cache: dict = {}


def _windows(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Analysis window, synthesis window (window / overlap envelope) and the first chunks' fix.

    The overlap-added squared window is periodic inside the signal; the first ``PIECES - 1``
    chunks lack frames before frame 0, and ``first_fix[m]`` rescales them to the true envelope
    (what ``torch.istft`` divides by).
    """
    key = str(device)
    if key not in _window_cache:
        w = hann(N_FFT, dtype=torch.float64)
        sq = (w * w).reshape(PIECES, HOP)
        full = sq.sum(0)
        synthesis = w / full.repeat(PIECES)
        fix = torch.ones(PIECES - 1, HOP, dtype=torch.float64)
        for m in range(PIECES - 1):  # chunk m gets pieces j = 0..m only
            fix[m] = full / sq[: m + 1].sum(0).clamp_min(1e-11)
        _window_cache[key] = tuple(t.to(device, torch.float32) for t in (w, synthesis, fix))
    return _window_cache[key]
