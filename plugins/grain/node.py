"""``cak.grain``: the grain processor as an effect node, with phase-preserving reconstruction.

Signal path, for every channel at 44.1 kHz (other rates are resampled there
and back; above 44.1 kHz the band the model cannot see passes through
unchanged, ``cakfx.dsp.resample.band_split``):

1. One centred STFT frame grid (n_fft 2048, hop 512) from the signal's first
   sample, the signal taken as followed by silence; mel power through the
   Slaney filterbank (``cakfx.dsp.mel``), two weights per bin (``BandedFilterbank``).
2. Analysis windows of 3 s as the original's chunks: 259 frames (a centred
   STFT of 3 s has 1 + 132300 // 512 frames), one every 216 frames (2.5 s),
   from frame 0, until the signal is covered (the last one reaches into the
   silence after it, which is what a stream sees there too). The original
   cropped each chunk's 259 frames to the 256 the model was trained on and
   lost the rest; the model is convolutional, so it gets all 259. Per window:
   ``power_to_db`` (ref = the window's max, top_db 80), min-max to [-1, 1],
   the model, and back to dB with the same window's min/max: the mel power
   the model asks for. Bands the input has more than 60 dB below the window's
   peak keep the input (``floor_weight``): the model sees everything under
   -80 dB as one floor value, and following its ask there lifted empty regions
   20-80 dB into hiss and made an envelope's corner click.
   Except on the fidelity path (``level="original"``) the asks are bounded
   (``asks.window_targets(bounded=True)``): each band's change is smoothed in
   time, weighted by its power (the model cut the gaps between hits and raised
   the hits: a ~10 dB gain step at every onset); bands below ~150 Hz are cut at
   most ``LOW_CUT_DB``, and a window's boosts are scaled so its K-weighted
   loudness rises at most ``MAX_RISE_DB`` (the loudness match takes back what
   the boosts add: at grain +1.5 it took it off a drum loop's kick, -17.5 dB).
3. Windows overlap by 43 frames (0.5 s, the original's crossfade) and their
   asks crossfade there (raised-cosine weights, in dB), so there are no level
   steps at window borders. Then, frame by frame in order, each band's change
   (target over input, dB) moves towards the ask by at most ``SLEW_UP_DB`` up
   and ``SLEW_DOWN_DB`` down per frame (``slew_limit``): a hit whose highs rise
   out of the floor got its whole ask (+20-30 dB) in one frame, a click and a
   peak that made the limiter pull a hot mix down 7.5 LU. The signal's first
   frame takes its ask whole (nothing precedes it to step from). A frame whose window
   runs into digital silence (a file's end, a cut: ``runs_into_silence``) asks
   for no change: the model fills that drop (+20 dB in a file's last frames),
   and the cut clicked.
4. ``"phase"`` (default): the per-band ratio target / input becomes a gain on
   the linear STFT bins (each bin takes its filters' log ratios, weighted by
   the normalised filterbank), refined ``REFINE_STEPS`` times against the mel
   power the masked spectrum really has (multiplicative update, no inverse
   STFT in the loop); then, ``CORRECTIONS`` times, the masked STFT is inverted, analysed again,
   and the gain moved by the remaining log ratio (a masked STFT is not the
   STFT of any signal, so its inverse comes out smoother than the mask). The
   gain is applied to the complex STFT with the original phase, inverse STFT.
   Each window's ask is first shifted to the input window's total mel power:
   the model shapes the spectrum, its raw level is meaningless (at grain -3
   its peaks sit ~900 dB above the window max). A bin's gain stays within
   ``-MAX_CUT_DB ... +MAX_BOOST_DB``, and a bin far under its frame's peak is
   raised less (``bin_boost_cap``: none 70 dB under it): a band's gain spread
   over the skirts and gaps its content barely reaches lifted them ~20 dB.
   ``"griffinlim"``: as the original did it (``plugins/grain/griffinlim.py``).
5. The level stage (``cakfx.dsp.level.LevelStage``, parameters ``level`` and
   ``ceiling_db``): ``"match"`` matches the integrated loudness of the model
   band and adds the band above it back untouched, ``"original"`` the
   original's RMS match and peak scaling to 0.95, ``"off"`` nothing.

The reconstruction runs in segments of ``SEGMENT`` frames on a grid fixed at
the signal's start (``GrainEngine``), on the CPU several at once on Python
threads (``cakfx.dsp.threads.parallel_map``). Offline and streamed calls run
the same segments, so a stream (``reset=False``) equals the offline output
delayed by ``latency_samples``: about 3.9 s at 44.1 kHz (a segment, one whole
analysis window and the STFT's overlap), which makes the effect unfit for live
use. A measuring pass (``begin_measure``) keeps the model path's output
(``cakfx.streaming.KeptPass``); the render pass reads it back and carries on
with the pass's stream state, so a streamed file runs the model once.
``grain = 0`` returns the input unchanged.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch

from cakfx.device import resolve_device
from cakfx.dsp import mel
from cakfx.dsp.level import LevelStage
from cakfx.dsp.resample import HighBand, StreamResampler, band_split, resample
from cakfx.dsp.stft import HOP, MODEL_SR, N_FFT
from cakfx.dsp.threads import parallel_map, serial_torch_ops
from cakfx.errors import CakfxError
from cakfx.neural import NeuralNode
from cakfx.plugins.grain import EFFECT
from cakfx.plugins.grain.asks import window_targets
from cakfx.plugins.grain.mask import bin_boost_cap, correct_mask, refine_log_gain, slew_limit
from cakfx.streaming import KeptPass

WINDOW_FRAMES = 1 + 3 * MODEL_SR // HOP  # 259 frames: 3 s, the original's chunk
WINDOW_HOP = 216  # 2.5 s -> 43 frames (0.5 s) of crossfade between neighbouring windows
WINDOW_BATCH = 2  # windows per model call, at most: 1-2 measured fastest per window (4: +10 %, 8: +35 %), and
# small jobs let an idle block thread take over a busy core's share
SEGMENT = 72  # frames per reconstruction segment (0.84 s): the unit of parallel work and of streaming
SEGMENTS_PER_ROUND = 8  # segments worked on at once offline: bounds memory (20 s stereo: peak RSS
# 576 -> 516 MB against 32) at no cost in time (8 jobs keep 2 block threads busy)
MARGIN = N_FFT // HOP - 1  # frames overlapping a frame on each side
# passes against the real output's mel power (each one more inverse + forward STFT per segment):
# mel error 1.007 dB after one, 0.963 after two (+6 % time), 0.944 after three (+25 %)
CORRECTIONS = 2
SILENT_TAIL = 64  # a frame whose window ends in this many exact zeros runs into digital silence


def crossfade_weights(length: int, fade_in: bool, fade_out: bool, fade: int) -> torch.Tensor:
    """Raised-cosine ramps at the window's shared edges: neighbours' weights sum to one."""
    w = torch.ones(length, dtype=torch.float64)
    fade = min(fade, length // 2)
    if fade > 0:
        ramp = torch.sin(0.5 * math.pi * (torch.arange(fade, dtype=torch.float64) + 0.5) / fade).square()
        if fade_in:
            w[:fade] = ramp
        if fade_out:
            w[-fade:] = ramp.flip(0)
    return w


def window_batches(jobs: list, workers: int) -> list[list]:
    """``jobs`` in model calls of at most ``WINDOW_BATCH`` windows, as even as can be and, where
    there are jobs enough, as many calls as a multiple of ``workers``: each block thread then gets
    the same number of windows (3 calls of 2 on 2 threads left one idle a third of the time)."""
    count = -(-len(jobs) // WINDOW_BATCH)
    count = max(1, min(len(jobs), -(-count // workers) * workers))
    size, extra = divmod(len(jobs), count)
    starts = [b * size + min(b, extra) for b in range(count + 1)]
    return [jobs[a:b] for a, b in zip(starts, starts[1:])]


def runs_into_silence(padded: torch.Tensor) -> torch.Tensor:
    """Per channel and frame (frames of ``stft_block(padded, 0, ...)``): True where the window has
    sound and ends in digital silence (its last ``SILENT_TAIL`` samples exactly zero)."""
    frames = padded.unfold(-1, N_FFT, HOP)  # (C, F, N_FFT), a view
    tail_silent = frames[..., -SILENT_TAIL:].abs().amax(-1) == 0
    return (tail_silent & (frames.abs().amax(-1) > 0)).cpu()


def _ola_norm(n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Summed squared window at padded samples ``0 .. n_fft-1`` of a frame grid starting at 0;
    from ``n_fft - hop`` on the sum repeats every ``hop`` samples."""
    window = mel.hann(n_fft, None, torch.float32).square()
    norm = torch.zeros(n_fft)
    for start in range(0, n_fft, hop):
        norm[start:] += window[: n_fft - start]
    return norm


def engine_latency(segment: int | None = None) -> int:
    """Samples (at 44.1 kHz) a streamed ``GrainEngine`` needs to run behind its input.

    Segment ``j`` (frames ``S j .. S (j+1) - 1``) can be built once every
    window touching its frames and their STFT neighbours has all its input;
    until then only the samples before it are final. The worst case over the
    segment/window grid, plus the frames' reach (``n_fft / 2`` either side).
    """
    segment = SEGMENT if segment is None else segment
    worst = 0
    period = segment * WINDOW_HOP // math.gcd(segment, WINDOW_HOP)
    for j in range(2 * period // segment + 1):
        last_frame = segment * (j + 1) + MARGIN - 1
        needed = max(last_frame, WINDOW_HOP * (last_frame // WINDOW_HOP) + WINDOW_FRAMES - 1)
        arrives = HOP * needed + N_FFT // 2  # input samples needed before the segment can be built
        final = max(0, HOP * segment * j - N_FFT // 2)  # samples final before it is
        worst = max(worst, arrives - final)
    return worst


class GrainEngine:
    """The ``"phase"`` reconstruction at 44.1 kHz, segment by segment, for offline and streamed use.

    ``feed(x)`` appends input samples (``(C, n)`` float32 numpy); ``run(final)``
    builds every segment whose input has arrived (``final=True``: the input
    has ended, what follows is silence) and returns the samples that became
    final, in order from the signal's first sample. Offline calls feed the
    whole signal and run with ``final=True`` until it is covered; a stream runs
    after every block and is ``engine_latency()`` samples behind at worst.
    """

    def __init__(self, model, grain: float, channels: int, device: torch.device,
                 bounded: bool = False) -> None:
        self.model, self.grain, self.channels, self.device = model, float(grain), int(channels), device
        self.bounded = bounded  # the asks smoothed and bounded (``asks.window_targets``)
        self.fb = mel.banded_filterbank(MODEL_SR, dtype=torch.float32, device=device)
        self.workers = 1  # block threads of the running ``run`` (``parallel_map``'s count)
        self.head_norm = _ola_norm().to(device)
        self.reset()

    def reset(self) -> None:
        self.pending: list[np.ndarray] = []  # fed, not yet joined
        self.x = np.zeros((self.channels, 0), np.float32)  # joined input from signal sample x0
        self.x0 = 0
        self.received = 0
        self.frames = 0  # frames [f0, frames) are in spec/power
        self.f0 = 0
        self.spec = torch.zeros(self.channels, N_FFT // 2 + 1, 0, dtype=torch.complex64, device=self.device)
        self.power = torch.zeros(self.channels, mel.N_MELS, 0, device=self.device)
        self.ending = torch.zeros(self.channels, 0, dtype=torch.bool)  # frames running into digital silence
        self.windows = 0  # windows [0, windows) have added their asks to target
        self.t0 = 0  # target covers frames [t0, t0 + target.shape[-1])
        self.target = torch.zeros(self.channels, mel.N_MELS, 0, dtype=torch.float64, device=self.device)
        self.segments = 0  # segments built
        self.slewed = 0  # target frames [0, slewed) have their rate of change limited (slew_limit)
        self.boost = np.zeros((self.channels, mel.N_MELS))  # the limited gain (dB) of frame slewed - 1
        self.out = torch.zeros(self.channels, 0, device=self.device)  # overlap-add, padded samples from o0
        self.o0 = 0
        self.emitted = 0  # signal samples returned so far

    def feed(self, x: np.ndarray) -> None:
        if x.shape[-1]:
            self.pending.append(np.asarray(x, dtype=np.float32))
            self.received += x.shape[-1]

    def run(self, final: bool = False, until: int | None = None) -> np.ndarray:
        """Build what is ready; returns the newly final output samples ``(C, n)``.

        With ``final``, the input is complete: build segments until ``until``
        samples (default: all received) are final.
        """
        until = self.received if until is None else until
        parts = []
        # the glue between the parallel steps runs torch ops too: on one thread, so that none of
        # them waits at an OpenMP barrier for a descheduled thread (a busy machine's 5x spread)
        with serial_torch_ops() as self.workers:
            while True:
                target_segments = self._segments_ready(final, until)
                if target_segments <= self.segments:
                    break
                stop = min(target_segments, self.segments + SEGMENTS_PER_ROUND)
                parts.append(self._build(stop, final))
        if not parts:
            return np.zeros((self.channels, 0), np.float32)
        return np.concatenate(parts, axis=-1)

    # -- readiness --------------------------------------------------------------------------
    def _frames_available(self, final: bool) -> int:
        """Frames whose input has fully arrived (unbounded once the input is final)."""
        if final:
            return 1 << 60
        return max(0, (self.received - N_FFT // 2) // HOP + 1)

    def _segments_ready(self, final: bool, until: int) -> int:
        if final:  # enough segments to make samples [0, until) final
            return max(self.segments, -(-(until + N_FFT // 2) // (HOP * SEGMENT)))
        frames = self._frames_available(False)
        j = self.segments
        while True:
            last = SEGMENT * (j + 1) + MARGIN - 1
            needed = max(last, WINDOW_HOP * (last // WINDOW_HOP) + WINDOW_FRAMES - 1)
            if needed >= frames:
                return j
            j += 1

    # -- the work ---------------------------------------------------------------------------
    def _input(self, start: int, stop: int) -> np.ndarray:
        """Signal samples ``start .. stop-1`` (zeros before 0 and after what arrived)."""
        if self.pending:
            self.x = np.concatenate([self.x, *self.pending], axis=-1)
            self.pending = []
        out = np.zeros((self.channels, stop - start), np.float32)
        a, b = max(start, self.x0), min(stop, self.x0 + self.x.shape[-1])
        if b > a:
            out[:, a - start : b - start] = self.x[:, a - self.x0 : b - self.x0]
        return out

    def _compute_frames(self, stop: int) -> None:
        """Spectra and mel power of frames ``self.frames .. stop-1``, in parallel pieces."""
        if stop <= self.frames:
            return
        kept = self.frames - self.f0
        # the pieces are written in place by the block threads: joining them afterwards was a
        # serial copy of every spectrum (~8 ms on 20 s of stereo)
        spec, power, ending = (
            torch.cat([old, old.new_empty(*old.shape[:-1], stop - self.frames)], dim=-1)
            for old in (self.spec, self.power, self.ending))

        def work(a: int) -> None:
            b = min(stop, a + SEGMENT)
            signal = torch.from_numpy(self._input(a * HOP - N_FFT // 2, (b - 1) * HOP + N_FFT // 2))
            piece = spec[..., kept + a - self.frames : kept + b - self.frames]
            piece.copy_(mel.stft_block(signal.to(self.device), 0, b - a))
            power[..., kept + a - self.frames : kept + b - self.frames] = self.fb.mel(
                piece.real.square() + piece.imag.square())
            ending[..., kept + a - self.frames : kept + b - self.frames] = runs_into_silence(signal)

        self._input(0, 0)  # joins the pending input once, before the threads read it
        parallel_map(work, range(self.frames, stop, SEGMENT), self.device)
        self.spec, self.power, self.ending = spec, power, ending
        self.frames = stop

    def _compute_windows(self, stop: int) -> None:
        """Add the asks of windows ``self.windows .. stop-1`` to ``target`` (crossfaded)."""
        if stop <= self.windows:
            return
        jobs = [(k, c) for k in range(self.windows, stop) for c in range(self.channels)]
        self._compute_frames(WINDOW_HOP * (stop - 1) + WINDOW_FRAMES)
        end = WINDOW_HOP * (stop - 1) + WINDOW_FRAMES
        grow = end - (self.t0 + self.target.shape[-1])
        if grow > 0:
            self.target = torch.cat([self.target, self.target.new_zeros(self.channels, mel.N_MELS, grow)], -1)
        batches = window_batches(jobs, self.workers)
        asks: dict[int, torch.Tensor] = {}

        def work(index: int) -> None:
            power = torch.stack([self.power[c, :, WINDOW_HOP * k - self.f0 :][:, :WINDOW_FRAMES]
                                 for k, c in batches[index]])
            asks[index] = window_targets(self.model, power, self.grain, self.bounded)

        parallel_map(work, range(len(batches)), self.device)
        fade = WINDOW_FRAMES - WINDOW_HOP
        for index, batch_jobs in enumerate(batches):
            for (k, c), ask in zip(batch_jobs, asks[index]):
                w = crossfade_weights(WINDOW_FRAMES, k > 0, True, fade).to(self.target)
                s = WINDOW_HOP * k - self.t0
                self.target[c, :, s : s + WINDOW_FRAMES] += ask.to(self.target) * w
        self.windows = stop

    def _slew(self, stop: int) -> None:
        """Limit the rate of change of target frames ``self.slewed .. stop-1`` (final by now), in order."""
        if stop <= self.slewed:
            return
        a, b = self.slewed - self.t0, stop - self.t0
        power = self.power[..., self.slewed - self.f0 : stop - self.f0]
        given = (10.0 * torch.log10(power.clamp_min(mel.AMIN))).to(self.target)
        asked = self.target[..., a:b] - given
        # a frame whose window runs into digital silence (a file's end, a sound's cut) asks for no
        # change: the model fills the drop there (+20 dB at a file's last frames) and the cut clicked
        asked.masked_fill_(self.ending[:, None, self.slewed - self.f0 : stop - self.f0].to(asked.device), 0.0)
        if self.slewed == 0 and asked.shape[-1]:
            # the signal's first frame takes its ask whole: nothing comes before it to step from (a ramp
            # from no change missed the ask by up to 30 dB over the first frames: mel error 1.055 -> 1.007)
            self.boost = asked[..., 0].cpu().numpy().astype(self.boost.dtype)
        boost, self.boost = slew_limit(asked, self.boost)
        self.target[..., a:b] = given + boost
        self.slewed = stop

    def _build(self, stop: int, final: bool) -> np.ndarray:
        """Build segments ``self.segments .. stop-1``; return the samples that became final."""
        first = self.segments
        last_frame = SEGMENT * stop + MARGIN - 1
        self._compute_windows(last_frame // WINDOW_HOP + 1)
        self._compute_frames(last_frame + 1)
        self._slew(last_frame + 1)
        results: dict[int, torch.Tensor] = {}

        def work(j: int) -> None:
            f0, f1 = SEGMENT * j, SEGMENT * (j + 1)
            e0, e1 = max(0, f0 - MARGIN), f1 + MARGIN
            spec = self.spec[..., e0 - self.f0 : e1 - self.f0]
            power = spec.real.square() + spec.imag.square()
            target = mel.db_to_power(self.target[..., e0 - self.t0 : e1 - self.t0]).to(power.dtype)
            cap = bin_boost_cap(power)
            log_gain = refine_log_gain(power, target, self.fb, cap_db=cap,
                                       produced=self.power[..., e0 - self.f0 : e1 - self.f0])
            inner = slice(f0 - e0, f1 - e0)
            for _ in range(CORRECTIONS):
                log_gain[..., inner] = correct_mask(spec, log_gain, target[..., inner], self.fb, e0,
                                                    slice(f0, f1), cap[..., inner])
            results[j] = mel.overlap_add(spec[..., inner] * log_gain[..., inner].exp())[0]

        parallel_map(work, range(first, stop), self.device)
        # overlap-add in padded samples (signal sample n is padded n + n_fft/2)
        end = HOP * SEGMENT * (stop - 1) + HOP * (SEGMENT - 1) + N_FFT
        grow = end - (self.o0 + self.out.shape[-1])
        if grow > 0:
            self.out = torch.cat([self.out, self.out.new_zeros(self.channels, grow)], -1)
        for j in range(first, stop):
            s = HOP * SEGMENT * j - self.o0
            self.out[:, s : s + results[j].shape[-1]] += results[j]
        self.segments = stop
        # padded samples below HOP * SEGMENT * stop get nothing more
        done = HOP * SEGMENT * stop - N_FFT // 2  # signal samples [0, done) are final
        start = self.emitted
        out = self.out[:, start + N_FFT // 2 - self.o0 : done + N_FFT // 2 - self.o0]
        result = (out / self._ola_norm(start + N_FFT // 2, done + N_FFT // 2)).cpu().numpy()
        self.emitted = max(start, done)
        self._trim()
        return result

    def _ola_norm(self, a: int, b: int) -> torch.Tensor:
        """The summed squared window at padded samples ``a .. b-1``: ``head_norm``, then its last
        ``HOP`` values repeated (an index per sample cost 1.5 ms a round on 20 s of stereo)."""
        head = self.head_norm[a:b]
        a = max(a, N_FFT)
        if b <= a:
            return head
        offset = (a - N_FFT) % HOP
        period = self.head_norm[N_FFT - HOP :]
        tail = period.repeat(-(-(offset + b - a) // HOP))[offset : offset + b - a]
        return torch.cat([head, tail]) if head.numel() else tail

    def _trim(self) -> None:
        """Drop what no later segment or window needs (bounded memory on long signals)."""
        keep_frames = min(SEGMENT * self.segments - MARGIN, WINDOW_HOP * self.windows)
        if keep_frames > self.f0:
            self.spec = self.spec[..., keep_frames - self.f0 :].clone()
            self.power = self.power[..., keep_frames - self.f0 :].clone()
            self.ending = self.ending[..., keep_frames - self.f0 :].clone()
            self.f0 = keep_frames
        keep_target = SEGMENT * self.segments - MARGIN
        if keep_target > self.t0:
            self.target = self.target[..., keep_target - self.t0 :].clone()
            self.t0 = keep_target
        keep_out = self.emitted + N_FFT // 2
        if keep_out > self.o0:
            self.out = self.out[:, keep_out - self.o0 :].clone()
            self.o0 = keep_out
        keep_x = self.frames * HOP - N_FFT // 2
        if keep_x > self.x0 and not self.pending:
            self.x = self.x[:, keep_x - self.x0 :].copy()
            self.x0 = keep_x


class GrainNode(NeuralNode):
    """The CAK grain processor: ``grain`` > 0 brightens and flattens the spectrum, < 0 darkens, 0 bypasses.

    Streams (``reset=False``) with a latency of ``latency_samples(sr)`` (about
    3.9 s at 44.1 kHz: the 3 s analysis windows): not for live use. The parameters
    (``grain``, ``reconstruction``, ``level``, ``ceiling_db``) are validated properties declared
    once in ``cakfx.plugins.grain.EFFECT``; a change applies from the next call (a running
    stream keeps its ``grain`` until it is reset).
    """

    effect = EFFECT
    _stage: LevelStage | None = None
    _stage_key: tuple | None = None

    def __init__(self, model: torch.nn.Module, grain: float = 1.0, reconstruction: str = "phase",
                 level: str = "match", ceiling_db: float = -1.0, device=None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":  # oneDNN's convolutions run ~2x faster on NHWC
            self.model = self.model.to(memory_format=torch.channels_last)
        self.grain = grain
        self.reconstruction = reconstruction
        self.level = level
        self.ceiling_db = ceiling_db
        self._stream: dict | None = None
        self._kept = KeptPass()  # a measuring pass's model-path output, for the render pass

    @property
    def level_stage(self) -> LevelStage:
        """The shared level stage for the current ``level`` and ``ceiling_db`` (rebuilt on a change)."""
        key = (self.level, self.ceiling_db)
        if self._stage_key != key:
            self._stage, self._stage_key = LevelStage(self.level, self.ceiling_db, original="grain"), key
        return self._stage

    # -- offline ---------------------------------------------------------------------------
    def _engine(self, channels: int) -> GrainEngine:
        """A ``GrainEngine`` for the current settings: its asks bounded (``asks.window_targets``)
        except on the fidelity path (``level="original"``), which follows the model's ask as the
        original pipeline did."""
        return GrainEngine(self.model, self.grain, channels, self.device, bounded=self.level != "original")

    def model_path(self, audio: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray | None]:
        """The raw output (before the level stage), aligned with ``audio`` ``(C, N)`` float32, and
        the band above the model's that it carries unchanged (None at or below 44.1 kHz)."""
        x = np.ascontiguousarray(audio, dtype=np.float32)
        resampled = int(round(sample_rate)) != MODEL_SR
        x44 = resample(x, sample_rate, MODEL_SR) if resampled else x
        if self.reconstruction == "griffinlim":
            from cakfx.plugins.grain.griffinlim import griffinlim_process

            # single-threaded torch ops, as the engine's: on a busy machine two intra-op threads
            # waited at every op's barrier (0.05 -> 0.50 s per audio second measured)
            with serial_torch_ops():
                y44 = griffinlim_process(self.model, torch.from_numpy(x44).to(self.device), self.grain)
            y44 = y44.cpu().numpy()
        else:
            engine = self._engine(x44.shape[0])
            engine.feed(x44)
            y44 = engine.run(final=True)[:, : x44.shape[-1]]
        if not resampled:
            return y44, None
        y = resample(y44, MODEL_SR, sample_rate, length=x.shape[-1])
        if int(round(sample_rate)) <= MODEL_SR:
            return y, None
        high = band_split(x, sample_rate, down=x44)[1]  # the band the model cannot see passes unchanged
        return y + high, high

    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if self.grain == 0.0:
            return audio.copy()  # a true bypass: the model's BatchNorm alone is not an identity
        y, high = self.model_path(audio, sample_rate)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        # levels at the caller's rate, the model band only: the band above passes untouched
        y = self.level_stage.apply(audio, y, sample_rate, high=high)
        return np.asarray(y).astype(audio.dtype, copy=False)

    # -- streaming -------------------------------------------------------------------------
    def path_latency(self, sample_rate: float) -> int:
        """Latency of the streamed model path (before the level stage), in samples at ``sample_rate``."""
        if self.grain == 0.0:
            return 0
        sr = int(round(sample_rate))
        step = MODEL_SR // math.gcd(sr, MODEL_SR)  # engine latency: whole samples at both rates
        core = -(-engine_latency() // step) * step
        if sr == MODEL_SR:
            return core
        down, up = StreamResampler(sr, MODEL_SR, 1), StreamResampler(MODEL_SR, sr, 1)
        return (down.latency + core) * sr // MODEL_SR + up.latency

    def latency_samples(self, sample_rate: float) -> int:
        if self.grain == 0.0:
            return 0
        return self.path_latency(sample_rate) + self.level_stage.latency_samples(sample_rate)

    def reset(self) -> None:
        self._stream = None
        self._kept.reset()
        self.level_stage.reset()

    def _new_stream(self, channels: int, sample_rate: float) -> dict:
        sr = int(round(sample_rate))
        step = MODEL_SR // math.gcd(sr, MODEL_SR)
        core = -(-engine_latency() // step) * step
        state = {"sr": sr, "channels": channels, "engine": self._engine(channels)}
        lead = 0
        if sr != MODEL_SR:
            state["down"] = StreamResampler(sr, MODEL_SR, channels)
            state["up"] = StreamResampler(MODEL_SR, sr, channels)
            lead = state["down"].latency  # the down resampler's priming zeros: the engine skips them
            if sr > MODEL_SR:
                state["high"] = HighBand(sr, channels)
                state["high_delay"] = Delay(channels, core * sr // MODEL_SR)
        state["skip"] = lead
        state["fifo"] = Delay(channels, core + lead)
        state["input_delay"] = Delay(channels, self.path_latency(sample_rate))
        state["priming"] = self.path_latency(sample_rate)
        return state

    def _start_stream(self, channels: int, sample_rate: float) -> dict:
        """A new stream's state; the model path's is the measuring pass's where that pass kept its
        output (``KeptPass``): the render pass reads the output back, then carries on from there."""
        fresh = self._new_stream(channels, sample_rate)
        kept = self._kept.resume(lambda state: (state["sr"], state["channels"]) == (fresh["sr"], channels))
        if kept is not None:
            kept.update(input_delay=fresh["input_delay"], priming=fresh["priming"])  # this pass's own
            return kept
        return fresh

    def _model_path_stream(self, x: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray | None]:
        state = self._stream
        if state is None or state["sr"] != int(round(sample_rate)) or state["channels"] != x.shape[0]:
            state = self._stream = self._start_stream(x.shape[0], sample_rate)
        kept = self._kept.take(x.shape[-1])
        if kept is not None:  # the measuring pass's output, then what follows it
            rest = x[:, kept.shape[-1] :]
            if rest.shape[-1]:
                kept = np.concatenate([kept, self._model_rows(rest, state)], axis=-1)
        else:
            kept = self._model_rows(x, state)
            self._kept.record(kept)
        return (kept[: x.shape[0]], kept[x.shape[0] :]) if "high" in state else (kept, None)

    def _model_rows(self, x: np.ndarray, state: dict) -> np.ndarray:
        """The model path's output for block ``x``, ``(C, n)``, with the band above it under it
        (``(2C, n)``) where the stream has one."""
        x44 = state["down"].process(x) if "down" in state else x
        count = x44.shape[-1]
        if state["skip"]:
            drop = min(state["skip"], count)
            x44, state["skip"] = x44[:, drop:], state["skip"] - drop
        engine = state["engine"]
        engine.feed(x44)
        state["fifo"].push(engine.run())
        y44 = state["fifo"].pop(count)  # engine_latency() is its worst case: it never runs dry
        if "up" not in state:
            return y44
        y = state["up"].process(y44, frames=x.shape[-1])
        if "high" not in state:
            return y
        high = state["high_delay"].process(state["high"].stream(x)[1])
        return np.concatenate([y + high, high])

    def stream_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        if self.grain == 0.0:
            return audio.copy()
        if self.reconstruction != "phase":
            raise CakfxError("cak.grain: reconstruction='griffinlim' does not stream; use 'phase'")
        x = np.ascontiguousarray(audio, dtype=np.float32)
        y, high = self._model_path_stream(x, sample_rate)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        x_aligned = self._stream["input_delay"].process(x)
        # the path's priming zeros stay out of the level stage: its meters (BS.1770 gating blocks,
        # RMS) then see the signal from its first sample, as offline
        priming = min(self._stream["priming"], x.shape[-1])
        self._stream["priming"] -= priming
        y_level = self.level_stage.stream(x_aligned[:, priming:], y[:, priming:], sample_rate,
                                          None if high is None else high[:, priming:])
        if priming:
            y_level = np.concatenate([np.zeros((x.shape[0], priming), np.float32), y_level], axis=-1)
        return np.asarray(y_level).astype(audio.dtype, copy=False)

    # the level stage's measuring protocol (a streamed render measures the loudness first)
    @property
    def needs_measure(self) -> bool:
        return self.grain != 0.0 and self.level_stage.needs_measure

    def begin_measure(self) -> None:
        self._kept.begin()  # the pass's model output is kept: a streamed file runs the model once
        self.level_stage.begin_measure()

    def end_measure(self) -> None:
        self._kept.end(self._stream)
        self.level_stage.end_measure()

    def forget_measure(self) -> None:
        self._kept.forget()
        self.level_stage.forget_measure()


class Delay:
    """A queue of ``(C, n)`` blocks that starts with ``samples`` zeros: ``process`` delays a block.

    Costs what the blocks cost, not what the delay holds (a delay of seconds fed one sample
    at a time must not copy seconds per call).
    """

    def __init__(self, channels: int, samples: int) -> None:
        self.channels = int(channels)
        self.blocks: deque = deque([np.zeros((self.channels, int(samples)), np.float32)])
        self.length = int(samples)

    def push(self, block: np.ndarray) -> None:
        if block.shape[-1]:
            self.blocks.append(np.asarray(block, dtype=np.float32))
            self.length += block.shape[-1]

    def pop(self, count: int) -> np.ndarray:
        if count > self.length:
            raise RuntimeError(f"cak.grain: a stream ran dry ({count} samples asked, {self.length} queued)")
        out = np.empty((self.channels, count), np.float32)
        filled = 0
        while filled < count:
            head = self.blocks[0]
            k = min(count - filled, head.shape[-1])
            out[:, filled : filled + k] = head[:, :k]
            filled += k
            if k == head.shape[-1]:
                self.blocks.popleft()
            else:
                self.blocks[0] = head[:, k:]
        self.length -= count
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        self.push(block)
        return self.pop(block.shape[-1])


__all__ = ["GrainEngine", "GrainNode", "HOP", "N_FFT", "engine_latency"]
