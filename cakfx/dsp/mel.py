"""The grain model's mel front end: librosa's defaults, reproduced in torch.

``librosa.feature.melspectrogram`` (power STFT, n_fft 2048, hop 512, periodic
Hann, centred frames with zero padding) through ``librosa.filters.mel``
(Slaney mel scale, Slaney area normalisation), then ``librosa.power_to_db``
(ref = max, amin 1e-10, top_db 80). librosa is only a test reference here.

Every function takes a torch tensor or a numpy array and returns a torch tensor.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from cakfx.dsp.stft import HOP, N_FFT, hann, stft

N_MELS = 128
AMIN = 1e-10
TOP_DB = 80.0

# Slaney's mel scale (the Auditory Toolbox): linear below 1 kHz, log above.
_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0

_filterbanks: dict = {}


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel of ``hz`` (``librosa.hz_to_mel(htk=False)``)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-30) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    log_part = mel >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


def band_edges(sr: float, n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """The ``n_mels + 2`` edges (Hz) of the triangular filters: band ``b`` spans ``edges[b] .. edges[b + 2]``
    and peaks at ``edges[b + 1]``."""
    fmax_ = sr / 2.0 if fmax is None else float(fmax)
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax_), n_mels + 2))


def mel_filterbank(
    sr: float,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = 0.0,
    fmax: float | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Triangular Slaney mel filters ``(n_mels, n_fft//2 + 1)`` (``librosa.filters.mel``).

    Band edges are equally spaced on the Slaney mel scale from ``fmin`` to
    ``fmax`` (default ``sr/2``); each triangle is scaled by ``2 / (f_hi - f_lo)``
    so every filter has the same area (Slaney normalisation).
    """
    key = (float(sr), n_fft, n_mels, float(fmin), fmax, dtype, str(device))
    if key not in _filterbanks:
        fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
        edges = band_edges(sr, n_mels, fmin, fmax)
        widths = np.diff(edges)
        ramps = edges[:, None] - fft_freqs[None, :]
        lower = -ramps[:-2] / widths[:-1, None]
        upper = ramps[2:] / widths[1:, None]
        weights = np.maximum(0.0, np.minimum(lower, upper))
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
        _filterbanks[key] = torch.from_numpy(weights).to(device=device, dtype=dtype)
    return _filterbanks[key]


def power_spectrogram(x, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """``|STFT|^2`` of ``x`` (``(..., samples)``): ``(..., n_fft//2+1, frames)``, centred, zero padded."""
    spec = stft(_tensor(x), n_fft, hop, pad_mode="constant")
    return spec.real.square() + spec.imag.square()


def mel_power(x, sr: float, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = N_MELS) -> torch.Tensor:
    """Mel power spectrogram ``(..., n_mels, frames)`` (``librosa.feature.melspectrogram``)."""
    power = power_spectrogram(x, n_fft, hop)
    return mel_filterbank(sr, n_fft, n_mels, dtype=power.dtype, device=power.device) @ power


def power_to_db(S, ref="max", amin: float = AMIN, top_db: float | None = TOP_DB, dim=None) -> torch.Tensor:
    """``10 log10(max(S, amin) / ref)``, floored at ``max - top_db`` (``librosa.power_to_db``).

    ``ref`` is a number or ``"max"``: the maximum of all of ``S``, or with
    ``dim`` (e.g. ``(-2, -1)``) of each slice along those dims, which then also
    get their own floor (one window each).
    """
    S = _tensor(S)
    if ref == "max":
        ref_value = S.max() if dim is None else S.amax(dim=dim, keepdim=True)
    else:
        ref_value = torch.as_tensor(ref, dtype=S.dtype, device=S.device)
    db = 10.0 * torch.log10(S.clamp_min(amin))
    db = db - 10.0 * torch.log10(ref_value.clamp_min(amin))
    if top_db is not None:
        peak = db.max() if dim is None else db.amax(dim=dim, keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def db_to_power(db, ref: float = 1.0) -> torch.Tensor:
    """Inverse of ``power_to_db`` (without the floor): ``ref * 10^(db/10)``."""
    return ref * torch.pow(10.0, _tensor(db) / 10.0)


def normalise_window(db) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-max normalise a window's dB values to [-1, 1].

    Works on ``(..., n_mels, frames)``: each window (the last two dims) gets its
    own min and max. Returns ``(normalised, low, high)`` with ``low``/``high``
    shaped ``(..., 1, 1)``; ``denormalise_window`` undoes it. A constant window
    (e.g. silence) maps to -1 and back to its value.
    """
    db = _tensor(db)
    low = db.amin(dim=(-2, -1), keepdim=True)
    high = db.amax(dim=(-2, -1), keepdim=True)
    span = (high - low).clamp_min(1e-8)
    return 2.0 * (db - low) / span - 1.0, low, high


def denormalise_window(norm, low, high) -> torch.Tensor:
    """Map [-1, 1] back to dB with a window's ``low``/``high`` from ``normalise_window``."""
    span = (_tensor(high) - _tensor(low)).clamp_min(1e-8)
    return (_tensor(norm) + 1.0) * 0.5 * span + low


# --- block-wise STFT on one centred frame grid (bounded memory on long signals) ---------------------


def frame_count(samples: int, hop: int = HOP) -> int:
    """Frames of a centred STFT of ``samples`` samples: ``1 + samples // hop``."""
    return 1 + samples // hop


def pad_centred(x: torch.Tensor, n_fft: int = N_FFT) -> torch.Tensor:
    """``x`` with ``n_fft // 2`` zeros either side: frame ``f`` is then ``[f*hop, f*hop + n_fft)``."""
    return torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))


def stft_block(padded: torch.Tensor, f0: int, f1: int, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Frames ``f0 .. f1-1`` of the centred STFT of the signal ``padded`` came from.

    ``padded`` is ``pad_centred(x)``; the result equals ``stft(x)[..., f0:f1]``.
    """
    return stft(padded[..., f0 * hop : (f1 - 1) * hop + n_fft], n_fft, hop, center=False)


def overlap_add(spec: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed inverse FFTs of a block of frames, overlap-added: ``(signal, summed squared window)``.

    ``signal`` spans ``(frames - 1) * hop + n_fft`` samples from the block's
    first frame, not yet divided by the window sum. The overlap-add is
    ``n_fft // hop`` shifted sums of hop-long pieces (``F.fold`` took 41 % of
    the grain effect's time doing the same).
    """
    if n_fft % hop:
        raise ValueError(f"overlap_add needs n_fft ({n_fft}) to be a multiple of hop ({hop})")
    frames, overlap = spec.shape[-1], n_fft // hop
    lead = spec.shape[:-2]
    window = hann(n_fft, spec.device, spec.real.dtype)
    chunks = torch.fft.irfft(spec.transpose(-1, -2), n=n_fft, dim=-1) * window  # (..., frames, n_fft)
    pieces = chunks.reshape(*lead, frames, overlap, hop)
    signal = chunks.new_zeros(*lead, frames + overlap - 1, hop)
    squares = window.square().reshape(overlap, hop)
    norm = chunks.new_zeros(frames + overlap - 1, hop)
    for i in range(overlap):
        signal[..., i : i + frames, :] += pieces[..., i, :]
        norm[i : i + frames] += squares[i]
    return signal.reshape(*lead, -1), norm.reshape(-1)


def bin_weights(fb: torch.Tensor) -> torch.Tensor:
    """``fb`` with each bin's weights over the bands normalised to sum to one (bins in no band: 0).

    ``bin_weights(fb).T @ per_band`` gives every bin the weighted mean of its bands' values:
    how a per-band gain (grain's mask) or power (its Griffin-Lim start) spreads to the bins.
    """
    return fb / fb.sum(0, keepdim=True).clamp_min(1e-12)


class BandedFilterbank:
    """A mel filterbank ``fb`` (``(n_mels, bins)``) kept as its two non-zero weights per bin.

    Triangular filters overlap pairwise, so every bin has at most two non-zero
    weights, in neighbouring bands; ``mel`` and ``spread`` then cost two
    multiply-adds per bin instead of a dense ``n_mels x bins`` matmul.

    ``mel(power)`` is ``fb @ power``; ``spread(per_band)`` is ``bin_weights(fb).T @ per_band``.
    """

    def __init__(self, fb: torch.Tensor) -> None:
        nonzero = fb != 0
        if int(nonzero.sum(0).max()) > 2:
            raise ValueError("BandedFilterbank needs at most two non-zero weights per bin")
        self.n_mels = fb.shape[0]
        low = nonzero.to(torch.uint8).argmax(0)  # the first band with a weight (0 for none)
        high = (low + 1).clamp(max=self.n_mels - 1)
        w_low = fb.gather(0, low[None])[0]
        w_high = torch.where(high > low, fb.gather(0, high[None])[0], torch.zeros_like(w_low))
        rebuilt = torch.zeros_like(fb)
        rebuilt.scatter_add_(0, low[None], w_low[None])
        rebuilt.scatter_add_(0, high[None], w_high[None])
        if not torch.equal(rebuilt, fb):
            raise ValueError("BandedFilterbank needs each bin's weights in neighbouring bands")
        self._dense = fb
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul is all we use
            warnings.simplefilter("ignore", UserWarning)
            self.csr = fb.to_sparse_csr()
        self.low, self.high = low, high
        self.w_low, self.w_high = w_low[:, None], w_high[:, None]
        spread = bin_weights(fb)
        self.s_low = spread.gather(0, low[None])[0][:, None]
        self.s_high = torch.where(high > low, spread.gather(0, high[None])[0], 0.0)[:, None]

    def mel(self, power: torch.Tensor) -> torch.Tensor:
        """``fb @ power``: ``(..., bins, frames)`` -> ``(..., n_mels, frames)`` (a sparse matmul:
        ~10x faster than two ``index_add_`` and ~30x faster than the dense one, on one thread)."""
        if power.dtype != self.csr.dtype or power.device != self.csr.device:
            return self._dense.to(power) @ power
        if power.dim() == 2:
            return self.csr @ power
        if power.shape[:-2].numel() == 0:
            return power.new_zeros(*power.shape[:-2], self.n_mels, power.shape[-1])
        # one product per leading index: moving the bins first for one product copied the whole
        # spectrum (a (2, 1025, 78) segment: 0.095 -> 0.066 ms)
        flat = power.reshape(-1, *power.shape[-2:])
        return torch.stack([self.csr @ block for block in flat]).reshape(*power.shape[:-2], self.n_mels, -1)

    def spread(self, per_band: torch.Tensor) -> torch.Tensor:
        """Each bin's weighted mean of its bands' values: ``(..., n_mels, F)`` -> ``(..., bins, F)``."""
        low = per_band.index_select(-2, self.low).mul_(self.s_low)
        return low.add_(per_band.index_select(-2, self.high).mul_(self.s_high))


_banded: dict = {}


def banded_filterbank(sr: float, n_fft: int = N_FFT, n_mels: int = N_MELS, dtype: torch.dtype = torch.float32,
                      device=None) -> BandedFilterbank:
    """``BandedFilterbank(mel_filterbank(...))``, cached."""
    key = (float(sr), n_fft, n_mels, dtype, str(device))
    if key not in _banded:
        _banded[key] = BandedFilterbank(mel_filterbank(sr, n_fft, n_mels, dtype=dtype, device=device))
    return _banded[key]


class OverlapAdd:
    """Inverse of ``stft_block``, one block of frames at a time (``torch.istft`` maths).

    ``add(spec, f0)`` overlap-adds the windowed inverse FFT of frames ``f0 ..``;
    ``result()`` divides by the summed squared window and trims the centring pad.
    """

    def __init__(self, shape: tuple, samples: int, n_fft: int = N_FFT, hop: int = HOP, device=None,
                 dtype=torch.float32) -> None:
        self.samples, self.n_fft, self.hop = samples, n_fft, hop
        total = (frame_count(samples, hop) - 1) * hop + n_fft
        self.out = torch.zeros(*shape, total, device=device, dtype=dtype)
        self.norm = torch.zeros(total, device=device, dtype=dtype)

    def add(self, spec: torch.Tensor, f0: int) -> None:
        signal, norm = overlap_add(spec, self.n_fft, self.hop)
        start = f0 * self.hop
        self.out[..., start : start + signal.shape[-1]] += signal
        self.norm[start : start + signal.shape[-1]] += norm

    def result(self) -> torch.Tensor:
        half = self.n_fft // 2
        norm = self.norm[half : half + self.samples]
        out = self.out[..., half : half + self.samples]
        return torch.where(norm > 1e-11, out / norm.clamp_min(1e-11), out)
