"""``cakfx train grain``: rebuild the CAK grain processor from a sample folder (DESIGN §8).

Published recipe (``paper`` profile):

* spectral flatness per file (the same code as ``cakfx measure``); files sorted
  by it; each file once as identity (``g = 0``) and once in a low -> high pair
  with ``g = 100 * (flatness_high - flatness_low)``;
* random 3 s segments: 128-band mel dB (ref = max, top_db 80) min-max
  normalised to [-1, 1], 256 frames;
* generator = ``GrainProcessor`` (three CAK layers + BatchNorm); discriminator
  = realism net (conv 1->32 / 32->64 / 64->128 4x4 s2 with BatchNorm, LReLU,
  pool, linear, sigmoid) + grain auditor (conv 1->8 3x3 s2, 8->16 5x5 s2 + BN,
  16->32 3x3 s2 + BN, pool, MLP 32->16->1);
* D loss ``BCE(real, 1) + BCE(fake, 0) + 5 |g - auditor(real)|``;
  G loss ``BCE(fake, 1) + 10 L1 (identity samples x5) + 20 |g - auditor(fake)|``;
  Adam G 4e-4, D 2e-4, betas (0.5, 0.999), batch 16, 100 epochs.

Mel power of the whole file is cached once; each step cuts a window from it
and does the dB conversion and normalisation per window, as the published
code does on its 3 s audio segments.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cakfx.dsp.mel import N_MELS, mel_power, normalise_window, power_to_db
from cakfx.dsp.stft import HOP, MODEL_SR, N_FFT
from cakfx.plugins.grain.model import GrainProcessor
from cakfx.trainers.base import Trainer
from cakfx.trainers.data import Item, low_high_pairs, to_model_mono
from cakfx.trainers.networks import realism_net
from cakfx.trainers.optim import Adam

PROFILES = {
    "paper": {
        "frames": 256,
        "disc_channels": (32, 64, 128),
        "auditor_channels": (8, 16, 32),
        "epochs": 100,
        "batch_size": 16,
        "lr_g": 4e-4,
        "lr_d": 2e-4,
        "betas": (0.5, 0.999),
        "grain_clip": None,
        "both_directions": False,
        "keep_weights": (0.0, 0.0, 0.0),
        "note": "published recipe (DESIGN §8)",
    },
    "fast": {
        "frames": 128,
        "disc_channels": (16, 32, 64),
        "auditor_channels": (4, 8, 16),
        "epochs": 15,
        "batch_size": 16,
        "lr_g": 4e-4,
        "lr_d": 2e-4,
        "betas": (0.5, 0.999),
        "grain_clip": 3.0,
        "both_directions": True,
        "keep_weights": (50.0, 50.0, 30.0),
        "note": (
            "fast CPU profile, NOT the published recipe: 128-frame (1.5 s) windows (paper 256 / 3 s), "
            "discriminator channels 16/32/64 and auditor 4/8/16 (paper 32/64/128 and 8/16/32), "
            "15 epochs (paper 100), pair controls clipped to the control range |g| <= 3, "
            "pairs in both directions (high -> low with -g), envelope / floor / direction terms "
            "(keep_weights) in the generator loss"
        ),
    },
}
GRAIN_SCALE = 100.0
AUDITOR_D_WEIGHT, L1_WEIGHT, IDENTITY_WEIGHT, AUDITOR_G_WEIGHT = 5.0, 10.0, 5.0, 20.0
CONTENT = -0.5  # normalised mel dB: -1 is 80 dB under the window's peak, so -0.5 is 60 dB under it
SPREAD_MARGIN = 0.02  # asked change of the content's spread across bands per unit of |g|


class Discriminator(nn.Module):
    """Realism net (probability the window is real) + grain auditor (predicts g)."""

    def __init__(self, channels=(32, 64, 128), auditor=(8, 16, 32)) -> None:
        super().__init__()
        self.realism_net = realism_net(channels, nn.BatchNorm2d, sigmoid=True)
        a1, a2, a3 = auditor
        self.grain_auditor = GrainAuditor(a1, a2, a3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.realism_net(x).squeeze(1), self.grain_auditor(x)


class GrainAuditor(nn.Module):
    def __init__(self, a1: int = 8, a2: int = 16, a3: int = 32) -> None:
        super().__init__()
        self.pattern_net = nn.Sequential(
            nn.Conv2d(1, a1, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(a1, a2, 5, stride=2, padding=2),
            nn.BatchNorm2d(a2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(a2, a3, 3, stride=2, padding=1),
            nn.BatchNorm2d(a3),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.grain_predictor = nn.Sequential(nn.Linear(a3, a3 // 2), nn.LeakyReLU(0.2), nn.Linear(a3 // 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grain_predictor(self.pattern_net(x)).squeeze(1)


def _content_spread(z: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Per window: the std across bands of ``z`` over the input's content bins, mean over frames."""
    n = content.sum(dim=2).clamp_min(1.0)
    mean = (z * content).sum(dim=2, keepdim=True) / n.unsqueeze(2)
    var = (((z - mean) * content) ** 2).sum(dim=2) / n
    return (var + 1e-6).sqrt().mean(dim=(1, 2))  # eps: sqrt has no gradient at 0


def frame_level(z: torch.Tensor) -> torch.Tensor:
    """Log power per frame of a normalised mel window, in normalised units (1 = 40 dB)."""
    k = 40.0 * np.log(10.0) / 10.0  # normalised unit -> natural log of power
    return torch.logsumexp(z * k, dim=2) / k


def keep_terms(x: torch.Tensor, fake: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the pairs alone do not teach (the fast profile weights them; the paper does not):

    * ``envelope_loss``: the output's power per frame over time (``frame_level``, less its mean)
      follows the input's. The node sets each window's level from the input's total power, so
      an ask that raises the attack's peaks pulls the decay down by as much: it gated decays;
    * ``floor_loss``: bins 60 dB or more under the window's peak are not raised (empty regions
      stay empty: the node would keep the input there anyway);
    * ``direction_loss``: the spread of the content across bands shrinks with +g (flatter) and
      grows with -g by at least ``SPREAD_MARGIN * |g|`` (hinge: no push beyond that).
    """
    env_x, env_f = frame_level(x), frame_level(fake)
    envelope = ((env_f - env_f.mean(dim=-1, keepdim=True)) - (env_x - env_x.mean(dim=-1, keepdim=True))).abs()
    empty = (x < CONTENT).float()
    floor = (F.relu(fake - x) * empty).sum() / empty.sum().clamp_min(1.0)
    shrink = _content_spread(x, 1.0 - empty) - _content_spread(fake, 1.0 - empty)
    direction = F.relu(SPREAD_MARGIN * g.abs() - torch.sign(g) * shrink) * (g != 0)
    return {"envelope_loss": envelope.mean(), "floor_loss": floor, "direction_loss": direction.mean()}


def file_flatness(audio: np.ndarray, sr: int) -> float:
    """Spectral flatness of a file at its own rate, exactly as ``cakfx measure`` reports it."""
    from cakfx.measure import spectral_flatness

    return float(spectral_flatness(audio, sr))


class GrainTrainer(Trainer):
    name = "grain"
    kind = "cak.grain"
    min_files = 2
    PROFILES = PROFILES

    def cache_settings(self) -> dict:
        return {"v": 1, "sr": MODEL_SR, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS}

    def make_features(self, audio: np.ndarray, sr: int) -> dict[str, torch.Tensor]:
        mel = mel_power(to_model_mono(audio, sr), MODEL_SR)
        flat = file_flatness(audio, sr)
        return {"mel_power": mel.float(), "flatness": torch.tensor(flat, dtype=torch.float64)}

    def setup(self, items: list[Item]) -> None:
        s = self.settings
        self.items = items
        self.mels = [it.features["mel_power"] for it in items]
        self.flatness = [float(it.features["flatness"]) for it in items]
        self.pairs = low_high_pairs(self.flatness)
        clip = s["grain_clip"]
        self.samples = [(i, i, 0.0) for i in range(len(items))]
        for a, b in self.pairs:
            g = GRAIN_SCALE * (self.flatness[b] - self.flatness[a])
            g = min(g, clip) if clip is not None else g
            self.samples.append((a, b, g))
            if s["both_directions"]:  # the same pair backwards teaches the negative half of the range
                self.samples.append((b, a, -g))
        self.model = GrainProcessor().to(self.device)
        self.disc = Discriminator(tuple(s["disc_channels"]), tuple(s["auditor_channels"])).to(self.device)
        self.opt_g = Adam(self.model.parameters(), lr=s["lr_g"], betas=tuple(s["betas"]))
        self.opt_d = Adam(self.disc.parameters(), lr=s["lr_d"], betas=tuple(s["betas"]))

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.model, "discriminator": self.disc}

    def optimisers(self) -> dict[str, Adam]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def dataset_summary(self) -> dict:
        g = [c for _, _, c in self.samples[len(self.items) :]]
        return {
            "identity_samples": len(self.items),
            "pair_samples": len(self.samples) - len(self.items),
            "flatness_range": [min(self.flatness), max(self.flatness)],
            "pair_grain_range": [min(g), max(g)] if g else [],
        }

    def window(self, index: int) -> torch.Tensor:
        """A random window of ``frames`` frames -> mel dB (ref = window max) -> [-1, 1]."""
        mel = self.mels[index]
        frames = self.settings["frames"]
        start = self.randint(max(0, mel.shape[-1] - frames))
        win = mel[:, start : start + frames]
        win = F.pad(win, (0, frames - win.shape[-1]))
        return normalise_window(power_to_db(win))[0]

    def start_epoch(self, epoch: int) -> None:
        self.model.train()
        self.disc.train()

    def batch(self, rows: list[tuple[int, int, float]]) -> tuple[torch.Tensor, ...]:
        """Inputs, targets, controls and L1 weights (identity samples x5) for a batch."""
        windows: dict[int, torch.Tensor] = {}
        for a, b, _ in rows:
            windows.setdefault(a, self.window(a))
            if b != a:
                windows[b] = self.window(b)
        x = torch.stack([windows[a] for a, _, _ in rows]).unsqueeze(1).to(self.device)
        y = torch.stack([windows[b] for _, b, _ in rows]).unsqueeze(1).to(self.device)
        g = torch.tensor([c for _, _, c in rows], dtype=torch.float32, device=self.device)
        weight = torch.tensor([IDENTITY_WEIGHT if a == b else 1.0 for a, b, _ in rows], device=self.device)
        return x, y, g, weight

    def discriminator_step(self, y: torch.Tensor, fake: torch.Tensor, g: torch.Tensor) -> dict[str, float]:
        """``BCE(real, 1) + BCE(fake, 0) + 5 |g - auditor(real)|``."""
        real_p, real_g = self.disc(y)
        fake_p, _ = self.disc(fake.detach())
        d_loss = (
            F.binary_cross_entropy(real_p, torch.ones_like(real_p))
            + F.binary_cross_entropy(fake_p, torch.zeros_like(fake_p))
            + AUDITOR_D_WEIGHT * (g - real_g).abs().mean()
        )
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        return {"d_loss": float(d_loss.detach())}

    def generator_step(self, fake, y, g, weight, x) -> dict[str, float]:
        """``BCE(fake, 1) + 10 L1 (identity x5) + 20 |g - auditor(fake)|`` (+ ``keep_terms``)."""
        fake_p, fake_g = self.disc(fake)
        l1 = ((fake - y).abs().mean(dim=(1, 2, 3)) * weight).mean()
        grain_error = (g - fake_g).abs().mean()
        g_loss = (
            F.binary_cross_entropy(fake_p, torch.ones_like(fake_p))
            + L1_WEIGHT * l1
            + AUDITOR_G_WEIGHT * grain_error
        )
        weights = self.settings["keep_weights"]
        terms = keep_terms(x, fake, g) if any(weights) else {}  # the paper recipe has none
        for w, term in zip(weights, terms.values()):
            g_loss = g_loss + w * term
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return {"g_loss": float(g_loss.detach()), "grain_error": float(grain_error.detach()),
                **{k: float(v.detach()) for k, v in terms.items()}}

    def train_step(self, rows: list[tuple[int, int, float]]) -> dict[str, float]:
        x, y, g, weight = self.batch(rows)
        fake = self.model(x, g)
        d = self.discriminator_step(y, fake, g)
        step = {**self.generator_step(fake, y, g, weight, x), **d}
        identity = weight == IDENTITY_WEIGHT
        diff = (fake - y).detach().abs()[identity]
        step["identity_loss"] = float(diff.mean()) if diff.numel() else 0.0
        step["pattern_strength"] = float((fake - x).detach().abs().mean())
        return step

    def export(self) -> tuple[dict[str, torch.Tensor], dict, dict]:
        tensors = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        flatness = [
            {"file": it.rel, "sha256": it.digest, "flatness": f} for it, f in zip(self.items, self.flatness)
        ]
        stats = {
            "n_mels": N_MELS,
            "n_fft": N_FFT,
            "hop_length": HOP,
            "sample_rate": MODEL_SR,
            "window_frames": self.settings["frames"],
        }
        return tensors, stats, {"flatness": flatness}

    def preset_chain(self, weights_ref: str, sha256: str) -> list[dict]:
        return [
            {"id": "grain", "effect": "cak.grain", "weights": weights_ref, "sha256": sha256, "grain": 1.5}
        ]
