"""``cak.texture`` as an effect node: the published texture pipeline (DESIGN §6), per channel.

Signal path for each channel at 44.1 kHz::

    X   = STFT(x)                        # n_fft 2048, hop 512, periodic Hann, centred, zero padded
    n   = normalise(|X|)                 # log-sqrt compression + training-set stats (dsp.py)
    n'  = n + conv3x3(n) * t * scale * sigmoid((t - 0.3) * 20)    # the CAK layer (model.py)
    Y   = denormalise(n') * X / |X|      # original phase kept
    y   = ISTFT(Y)[:len(x)]
    y   = tanh(0.95 * y * clip(rms(x) / rms(y), 0.1, 10)) / 0.95

One frame grid covers the whole signal followed by n_fft zeros (the original zero-pads its
chunks). The STFT, model and overlap-add run in blocks of frames: each block recomputes three
frames of overlap-add history and one frame of kernel context on each side, and adds the
overlapping frames in a fixed order, so block results equal the one-shot result (to float32
rounding: the FFT's batching can move the last bit) and memory stays bounded on long files.
Frames live as ``(channels, frames, bins)`` with the bins contiguous; the 3x3 kernel (with the
identity and the control folded in) is nine shifted multiply-adds. On the CPU, blocks run on
``torch.get_num_threads()`` Python threads with single-threaded torch ops
(``cakfx.dsp.threads.parallel_map``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cakfx.dsp.resample import resample
from cakfx.dsp.threads import parallel_map
from cakfx.errors import CakfxError
from cakfx.node import EffectNode
from cakfx.plugins.texture import dsp
from cakfx.plugins.texture.model import TextureCAK

MODEL_SR = 44100
N_FFT = 2048
HOP = 512
PIECES = N_FFT // HOP  # frames overlapping each hop-sized chunk of output
BINS = N_FFT // 2 + 1
#: frames per block: small blocks keep the CPU's working set in cache; accelerators like big ones
CPU_BLOCK = 96
ACCEL_BLOCK = 4096
CHUNK = 1 << 16  # samples per step of the loudness pass


class TextureNode(EffectNode):
    """The CAK texture processor on any number of channels at any sample rate.

    ``model`` is a ``TextureCAK``; ``stats`` holds ``global_low``/``global_high``
    (and optionally ``alpha``/``gamma``) from the training set.
    """

    name = "cak.texture"

    def __init__(
        self,
        model: TextureCAK,
        stats: dict,
        amount: float = 0.5,
        rms_match: bool = True,
        soft_clip: bool = True,
        device: torch.device | str = "cpu",
        block_frames: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.low, self.high, self.alpha, self.gamma = read_stats(stats)
        self.amount = float(amount)
        self.rms_match = bool(rms_match)
        self.soft_clip = bool(soft_clip)
        default_block = CPU_BLOCK if self.device.type == "cpu" else ACCEL_BLOCK
        self.block_frames = max(1, int(block_frames or default_block))

    def __repr__(self) -> str:
        return f"<cakfx {self.name} amount={self.amount:g}>"

    # -- the node protocol ---------------------------------------------------------------
    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if self.amount == 0.0:  # true bypass, bit for bit
            return audio.copy()
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if int(round(sample_rate)) == MODEL_SR:
            y = self.process_44k(x)
        else:  # one channel at a time: the whole-signal resampler needs a few copies of its input
            y = np.empty_like(x)
            for c in range(x.shape[0]):
                x44 = resample(torch.from_numpy(x[c : c + 1]), sample_rate, MODEL_SR)
                y44 = self.process_44k(x44.numpy())
                del x44
                y[c] = resample(torch.from_numpy(y44), MODEL_SR, sample_rate, length=x.shape[-1])[0].numpy()
                del y44
        self.finish(x, y)
        return y.astype(audio.dtype, copy=False)

    # -- the spectral part ---------------------------------------------------------------
    @torch.no_grad()
    def process_44k(self, x: np.ndarray) -> np.ndarray:
        """STFT -> model -> ISTFT of ``(C, N)`` float32 audio at 44.1 kHz, without loudness steps."""
        channels, length = x.shape
        out = np.empty_like(x)
        kernel, bias = self.model.effective_kernel(self.amount)
        kernel = kernel.tolist()
        window, synthesis, first_fix = _windows(self.device)
        # output chunk m holds padded samples [m*HOP, (m+1)*HOP); the signal starts at padded N_FFT//2
        first = (N_FFT // 2) // HOP
        last = (length - 1 + N_FFT // 2) // HOP
        src = torch.from_numpy(x)

        def run(m0: int) -> None:
            m1 = min(m0 + self.block_frames, last + 1)
            y = self._block(src, m0, m1, kernel, float(bias), window, synthesis, first_fix)
            start = m0 * HOP - N_FFT // 2  # first output sample of this block in signal time
            a, b = max(start, 0), min(start + y.shape[-1], length)
            out[:, a:b] = y[:, a - start : b - start].cpu().numpy()

        self._map(run, range(first, last + 1, self.block_frames))
        return out

    def _block(self, src, m0, m1, kernel, bias, window, synthesis, first_fix) -> torch.Tensor:
        """Output chunks ``[m0, m1)`` of every channel, ``(C, (m1 - m0) * HOP)``."""
        # frames m0-4 .. m1 (inclusive): chunk m sums frames m-3..m; the kernel wants one more each side
        f0, f1 = m0 - PIECES, m1 + 1
        frames = _frames(src, f0, f1, self.device) * window
        spec = torch.fft.rfft(frames)  # (C, K + 2, BINS), bins contiguous
        del frames
        parts = torch.view_as_real(spec)
        parts = parts * parts  # |X|^2 without complex abs (slow on CPU); pow(2) is slower than mul
        mag = torch.add(parts[..., 0], parts[..., 1]).sqrt_()  # a new, contiguous tensor
        del parts
        n = dsp.normalise(mag.clone(), self.low, self.high, self.alpha, self.gamma, inplace=True)
        missing = max(0, -f0)  # frames before the grid's frame 0: zero padding for the kernel
        if missing:
            n[:, :missing] = 0
        new_mag = _conv3x3(n, kernel, bias)  # frames f0+1 .. f1-1
        del n
        dsp.denormalise(new_mag, self.low, self.high, self.alpha, self.gamma, inplace=True)
        any_silent = float(mag.amin()) == 0.0
        inner, mag = spec[:, 1:-1], mag[:, 1:-1]  # views: the context frames are dropped below
        if any_silent:  # the original's angle(0) = 0: the new magnitude goes on the real axis
            silent = mag == 0
            inner.masked_fill_(silent, 1.0)
            mag.masked_fill_(silent, 1.0)
        inner.mul_(new_mag.div_(mag))
        del new_mag, mag
        if missing > 1:
            inner[:, : missing - 1] = 0
        # inverse FFT of every frame (contiguous input; two frames wasted) then the inner ones
        frames = torch.fft.irfft(spec, n=N_FFT)[:, 1:-1].mul_(synthesis)  # (C, M + 3, N_FFT)
        pieces = frames.unflatten(-1, (PIECES, HOP))
        count = m1 - m0
        at = [pieces[:, PIECES - 1 - j : PIECES - 1 - j + count, j] for j in range(PIECES)]
        y = torch.add(at[0], at[1])
        for j in range(2, PIECES):  # fixed order, whatever the block size
            y.add_(at[j])
        for m in range(m0, min(m1, PIECES - 1)):  # chunks the first frames do not fully cover
            y[:, m - m0].mul_(first_fix[m])
        return y.flatten(-2)

    # -- loudness --------------------------------------------------------------------------
    def finish(self, x: np.ndarray, y: np.ndarray) -> None:
        """RMS match then soft clip, in place on ``y``, per channel, in cache-sized chunks."""
        if not (self.rms_match or self.soft_clip):
            return
        src, out = torch.from_numpy(x), torch.from_numpy(y)
        gains = [1.0] * out.shape[0]
        if self.rms_match:
            for c in range(out.shape[0]):
                rms_in, rms_out = _rms(src[c]), _rms(out[c])
                gains[c] = min(max(rms_in / rms_out, 0.1), 10.0) if rms_out > 0 else 1.0

        def run(job: tuple[int, int]) -> None:
            c, a = job
            seg = out[c, a : a + CHUNK]
            if self.soft_clip:
                seg.mul_(0.95 * gains[c]).tanh_().div_(0.95)
            elif gains[c] != 1.0:
                seg.mul_(gains[c])

        self._map(run, [(c, a) for c in range(out.shape[0]) for a in range(0, out.shape[1], CHUNK)])

    def _map(self, fn, jobs) -> None:
        parallel_map(fn, jobs, self.device)


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


def _frames(src: torch.Tensor, f0: int, f1: int, device: torch.device) -> torch.Tensor:
    """Frames ``f0 .. f1-1`` of the centred, zero-padded signal: ``(C, f1 - f0, N_FFT)``."""
    start = f0 * HOP - N_FFT // 2  # signal time of frame f0's first sample
    stop = (f1 - 1) * HOP + N_FFT // 2
    length = src.shape[-1]
    a, b = max(start, 0), min(stop, length)
    seg = src[:, a:b].to(device)
    if a - start or stop - b:
        seg = torch.nn.functional.pad(seg, (a - start, stop - b))
    return seg.unfold(-1, N_FFT, HOP)


def _conv3x3(n: torch.Tensor, kernel: list, bias: float) -> torch.Tensor:
    """``out[t, f] = bias + sum_ij kernel[i][j] * n[t + j, f + i - 1]`` with zero padding over bins.

    ``n`` is ``(C, T + 2, F)`` (one context frame each side); returns ``(C, T, F)``. ``kernel[i][j]``
    indexes (frequency, time) like the model's ``(1, 1, 3, 3)`` detector weight.
    """
    frames = n.shape[1] - 2
    out = n[:, 1 : 1 + frames].mul(kernel[1][1]).add_(bias)
    for i in range(3):
        for j in range(3):
            if (i, j) == (1, 1):
                continue
            rows = n[:, j : j + frames]
            if i == 0:  # neighbour one bin below
                out[..., 1:].add_(rows[..., :-1], alpha=kernel[i][j])
            elif i == 1:
                out.add_(rows, alpha=kernel[i][j])
            else:
                out[..., :-1].add_(rows[..., 1:], alpha=kernel[i][j])
    return out


_window_cache: dict = {}


def _windows(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Analysis window, synthesis window (window / overlap envelope) and the first chunks' fix.

    The overlap-added squared window is periodic inside the signal; the first ``PIECES - 1``
    chunks lack frames before frame 0, and ``first_fix[m]`` rescales them to the true envelope
    (what ``torch.istft`` divides by).
    """
    key = str(device)
    if key not in _window_cache:
        w = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
        sq = (w * w).reshape(PIECES, HOP)
        full = sq.sum(0)
        synthesis = w / full.repeat(PIECES)
        fix = torch.ones(PIECES - 1, HOP, dtype=torch.float64)
        for m in range(PIECES - 1):  # chunk m gets pieces j = 0..m only
            fix[m] = full / sq[: m + 1].sum(0).clamp_min(1e-11)
        _window_cache[key] = tuple(t.to(device, torch.float32) for t in (w, synthesis, fix))
    return _window_cache[key]


def _rms(x: torch.Tensor) -> float:
    """Root mean square of a 1-D float32 tensor: float32 norms of chunks, summed in float64."""
    whole = x.shape[0] // CHUNK * CHUNK
    total = float(torch.linalg.vector_norm(x[:whole].view(-1, CHUNK), dim=-1).double().square().sum())
    total += float(torch.linalg.vector_norm(x[whole:]).double()) ** 2
    return math.sqrt(total / max(x.shape[0], 1))
