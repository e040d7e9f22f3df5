"""``cakfx train texture``: rebuild the CAK texture processor from a sample folder (DESIGN §8).

AuGAN recipe (``paper`` profile, as published):

* every file gets a control ``c ~ U[0.1, 1.0]`` (seeded; kept as a manifest);
* the 15 s centre segment with 2 s fades, STFT magnitude compressed
  ``l = log1p(alpha * sqrt(m))``; stats ``low``/``high`` = 0.01 % / 99.99 % points
  of a 10 000-bin histogram of ``l`` over the whole set (the frames of the audio
  itself: files shorter than the segment are zero-padded, and the padding is
  left out of the stats); ``n`` = normalised;
* data set: each file once as an identity pair (``t = 0``), and once in a
  low -> high pair (files sorted by control, lower half paired with upper half,
  ``t = c_high - c_low``);
* generator = the CAK layer (``TextureCAK``); critic = realism branch
  (conv 1->32 4x4 s2, LReLU 0.2; 32->64 4x4 s2, InstanceNorm, LReLU; 64->128 4x4
  s2, InstanceNorm, LReLU; global average pool; linear 128->1) plus the
  generator's *shared* 3x3 detector, whose mean is the "measured texture";
* critic loss ``-(real - fake) + 10 GP + 2 |measured(fake) - t|``, 5 critic
  steps per generator step; generator loss ``-fake + 2 violation + 5 L1(out,
  target) - 0.01 log(mean|p| + 1e-8)``; Adam 1e-4, betas (0, 0.9), batch 16,
  100 epochs; the gate temperature anneals 2 -> 20 over the first 5 epochs.

``fast`` keeps the maths and shortens everything for a CPU (see ``PROFILES``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cakfx.dsp.stft import HOP, MODEL_SR, N_FFT, stft
from cakfx.plugins.texture.dsp import ALPHA, GAMMA, compress
from cakfx.plugins.texture.model import TEMPERATURE, TextureCAK
from cakfx.trainers.base import Trainer
from cakfx.trainers.data import Item, low_high_pairs, to_model_mono
from cakfx.trainers.networks import realism_net
from cakfx.trainers.optim import Adam

PROFILES = {
    "paper": {
        "segment_s": 15.0,
        "fade_s": 2.0,
        "crop": None,
        "critic_channels": (32, 64, 128),
        "critic_steps": 5,
        "epochs": 100,
        "batch_size": 16,
        "lr": 1e-4,
        "betas": (0.0, 0.9),
        "anneal_epochs": 5,
        "pattern_weight": 0.01,
        "note": "published AuGAN recipe (DESIGN §8)",
    },
    "fast": {
        "segment_s": 1.5,
        "fade_s": 0.1,
        "crop": (256, 64),
        "critic_channels": (8, 16, 32),
        "critic_steps": 2,
        "epochs": 30,
        "batch_size": 16,
        "lr": 1e-4,
        "betas": (0.0, 0.9),
        "anneal_epochs": 5,
        "pattern_weight": 0.01,
        "note": (
            "fast CPU profile, NOT the published recipe: 1.5 s segments with 0.1 s fades "
            "(paper 15 s / 2 s), random 256-bin x 64-frame crops (paper: whole spectrograms), "
            "critic channels 8/16/32 (paper 32/64/128), 2 critic steps per generator step (paper 5), "
            "30 epochs (paper 100)"
        ),
    },
}
CONTROL_RANGE = (0.1, 1.0)
GP_WEIGHT, VIOLATION_WEIGHT, L1_WEIGHT = 10.0, 2.0, 5.0
HIST_BINS, PERCENTILES = 10_000, (0.01, 99.99)
T_START = 2.0


class RealismCritic(nn.Module):
    """The critic's realism branch: three strided 4x4 convs, InstanceNorm, LReLU, pool, linear."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        self.realism_net = realism_net(channels, nn.InstanceNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.realism_net(x).squeeze(1)


def fade_segment(mono: torch.Tensor, segment: int, fade: int) -> torch.Tensor:
    """The centre ``segment`` samples with linear fades, zero-padded at the end when shorter.

    Fades are capped at a quarter of the audio so a short one-shot keeps its attack.
    """
    n = mono.shape[-1]
    if n > segment:
        start = (n - segment) // 2
        mono = mono[start : start + segment]
    fade = min(fade, mono.shape[-1] // 4)
    mono = mono.clone()
    if fade > 0:
        ramp = torch.linspace(0.0, 1.0, fade)
        mono[:fade] *= ramp
        mono[-fade:] *= ramp.flip(0)
    return F.pad(mono, (0, segment - mono.shape[-1]))


def percentile_stats(values: list[torch.Tensor]) -> dict:
    """0.01 % / 99.99 % points of a 10 000-bin histogram over all values (DESIGN §6)."""
    lo = min(float(v.min()) for v in values)
    hi = max(float(v.max()) for v in values)
    if hi <= lo:
        hi = lo + 1.0
    counts = torch.zeros(HIST_BINS, dtype=torch.float64)
    for v in values:
        counts += torch.histc(v.float(), bins=HIST_BINS, min=lo, max=hi).double()
    cdf = counts.cumsum(0) / counts.sum()
    edges = torch.linspace(lo, hi, HIST_BINS + 1, dtype=torch.float64)
    low_i = int(torch.searchsorted(cdf, PERCENTILES[0] / 100))
    high_i = int(torch.searchsorted(cdf, PERCENTILES[1] / 100))
    return {
        "global_low": float(edges[low_i]),
        "global_high": float(edges[min(high_i + 1, HIST_BINS)]),
        "alpha": ALPHA,
        "gamma": GAMMA,
        "compression": "sqrt",
        "percentiles": list(PERCENTILES),
        "n_fft": N_FFT,
        "hop_length": HOP,
        "win_length": N_FFT,
        "sample_rate": MODEL_SR,
        "histogram_range": [lo, hi],
        "computed_from_n_files": len(values),
    }


class TextureTrainer(Trainer):
    name = "texture"
    kind = "cak.texture"
    min_files = 2
    PROFILES = PROFILES

    def cache_settings(self) -> dict:
        s = self.settings
        return {
            "v": 2,
            "sr": MODEL_SR,
            "n_fft": N_FFT,
            "hop": HOP,
            "alpha": ALPHA,
            "segment_s": s["segment_s"],
            "fade_s": s["fade_s"],
        }

    def make_features(self, audio: np.ndarray, sr: int) -> dict[str, torch.Tensor]:
        mono = to_model_mono(audio, sr)
        segment = round(self.settings["segment_s"] * MODEL_SR)
        seg = fade_segment(mono, segment, round(self.settings["fade_s"] * MODEL_SR))
        mag = stft(seg).abs()
        # frames centred inside the audio (not in the zero padding a short one-shot gets)
        frames = min(mono.shape[-1], segment) // HOP + 1
        # float16 halves the cache; l lies in [0, ~7] where its step (<4e-3) is far below the model's noise
        return {"compressed": compress(mag).to(torch.float16), "frames": torch.tensor(frames)}

    def setup(self, items: list[Item]) -> None:
        s = self.settings
        self.items = items
        compressed = [it.features["compressed"].float() for it in items]
        self.frames = [int(it.features["frames"]) for it in items]
        # the stats describe the audio: the zero padding of short files would drag the percentiles down
        self.stats = percentile_stats([c[:, :f] for c, f in zip(compressed, self.frames)])
        low, high = self.stats["global_low"], self.stats["global_high"]
        span = high - low + 1e-8
        self.specs = [((c - low) / span).clamp(0, 1).pow(GAMMA) for c in compressed]
        # controls come from their own seeded generator so the manifest depends only on the seed and files
        rng = torch.Generator().manual_seed(self.options.seed)
        lo, hi = CONTROL_RANGE
        self.controls = (lo + (hi - lo) * torch.rand(len(items), generator=rng, dtype=torch.float64)).tolist()
        self.samples = [(i, i, 0.0) for i in range(len(items))]
        self.pairs = low_high_pairs(self.controls)
        self.samples += [(a, b, self.controls[b] - self.controls[a]) for a, b in self.pairs]

        self.model = TextureCAK(temperature=T_START).to(self.device)
        self.critic = RealismCritic(tuple(s["critic_channels"])).to(self.device)
        shared = [self.model.detector_weight, self.model.detector_bias]
        self.opt_g = Adam(self.model.parameters(), lr=s["lr"], betas=tuple(s["betas"]))
        self.opt_c = Adam(
            [*self.critic.parameters(), *shared], lr=s["lr"], betas=tuple(s["betas"])
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.model, "critic": self.critic}

    def optimisers(self) -> dict[str, Adam]:
        return {"generator": self.opt_g, "critic": self.opt_c}

    def dataset_summary(self) -> dict:
        return {"identity_samples": len(self.items), "pair_samples": len(self.pairs)}

    def temperature(self, epoch: int) -> float:
        """2 -> 20 linearly over the first ``anneal_epochs`` epochs (the published schedule)."""
        n = self.settings["anneal_epochs"]
        return min(TEMPERATURE, T_START + (TEMPERATURE - T_START) * epoch / n) if n else TEMPERATURE

    def measured(self, spec: torch.Tensor) -> torch.Tensor:
        """The "measured texture": the shared detector's mean response per sample."""
        return self.model.detect(spec).mean(dim=(1, 2, 3))

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand(real.shape[0], 1, 1, 1, generator=self.gen).to(self.device)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def batch(self, rows: list[tuple[int, int, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets ``(B, 1, F, T)``; ``fast`` cuts the same random crop from both of a pair."""
        xs, ys = [], []
        for a, b, _ in rows:
            x, y = self.specs[a], self.specs[b]
            if self.settings["crop"]:
                bins, frames = self.settings["crop"]
                f0 = self.randint(max(0, x.shape[0] - bins))
                # start inside the audio so a short one-shot's crops are not all padding
                t0 = self.randint(max(0, min(self.frames[a], x.shape[1]) - frames))
                x, y = x[f0 : f0 + bins, t0 : t0 + frames], y[f0 : f0 + bins, t0 : t0 + frames]
            xs.append(x)
            ys.append(y)
        return torch.stack(xs).unsqueeze(1).to(self.device), torch.stack(ys).unsqueeze(1).to(self.device)

    def start_epoch(self, epoch: int) -> None:
        self.model.temperature.fill_(self.temperature(epoch))
        self.model.train()
        self.critic.train()

    def end_epoch(self) -> dict[str, float]:
        return {"temperature": float(self.model.temperature), "scale": self.model.scale.item()}

    def critic_step(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
        """``-(real - fake) + 10 GP + 2 |measured(fake) - t|``; updates the critic and the shared detector."""
        with torch.no_grad():
            fake = self.model(x, t)
        real_score, fake_score = self.critic(y).mean(), self.critic(fake).mean()
        violation = (self.measured(fake) - t).abs().mean()
        gp = self.gradient_penalty(y, fake)
        c_loss = -(real_score - fake_score) + GP_WEIGHT * gp + VIOLATION_WEIGHT * violation
        self.opt_c.zero_grad()
        c_loss.backward()
        self.opt_c.step()
        return {"c_loss": float(c_loss.detach()), "wasserstein_d": float((real_score - fake_score).detach())}

    def generator_step(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> dict[str, float]:
        """``-fake + 2 violation + 5 L1(out, target) - pattern_weight log(mean|p| + 1e-8)`` (paper 0.01)."""
        out = self.model(x, t)
        p = self.model.detect(x)
        violation = (self.measured(out) - t).abs().mean()
        g_loss = (
            -self.critic(out).mean()
            + VIOLATION_WEIGHT * violation
            + L1_WEIGHT * F.l1_loss(out, y)
            - self.settings["pattern_weight"] * torch.log(p.abs().mean() + 1e-8)
        )
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return {
            "g_loss": float(g_loss.detach()),
            "violation": float(violation.detach()),
            "pattern_strength": float(p.detach().abs().mean()),
        }

    def train_step(self, rows: list[tuple[int, int, float]]) -> dict[str, float]:
        x, y = self.batch(rows)
        t = torch.tensor([c for _, _, c in rows], dtype=torch.float32, device=self.device)
        for _ in range(self.settings["critic_steps"]):
            critic = self.critic_step(x, y, t)
        return {**self.generator_step(x, y, t), **critic}

    def export(self) -> tuple[dict[str, torch.Tensor], dict, dict]:
        tensors = {
            "detector_weight": self.model.detector_weight.detach().cpu().reshape(1, 1, 3, 3),
            "detector_bias": self.model.detector_bias.detach().cpu().reshape(1),
            "scale": self.model.scale.detach().cpu().reshape(1),
            "threshold": torch.tensor(float(self.model.threshold)),
        }
        manifest = [
            {"file": it.rel, "sha256": it.digest, "control": round(c, 6)}
            for it, c in zip(self.items, self.controls)
        ]
        return tensors, dict(self.stats), {"threshold": self.model.threshold, "controls": manifest}

    def preset_chain(self, weights_ref: str, sha256: str) -> list[dict]:
        return [
            {
                "id": "texture",
                "effect": "cak.texture",
                "weights": weights_ref,
                "sha256": sha256,
                "amount": 0.6,
            }
        ]
