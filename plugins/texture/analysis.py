"""The analyses the paper shows for a texture model, as one picture.

``cakfx effects show cak.texture --weights NAME --png OUT.png`` draws:
the learned 3x3 kernel as an annotated heat map, the gate and the effective
strength over the amount range, and the effect's magnitude response on a
sine sweep, white noise and an impulse at several amounts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cakfx.weights import WeightsFile

SR = 44100
AMOUNTS = (0.5, 1.0, 2.0)


def test_signals(seconds: float = 2.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Sine sweep (20 Hz - 20 kHz, exponential), white noise and a click train, mono at 44.1 kHz."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0, f1 = 20.0, 20000.0
    k = np.log(f1 / f0)
    sweep = 0.5 * np.sin(2 * np.pi * f0 * seconds / k * (np.exp(t / seconds * k) - 1))
    noise = 0.25 * np.random.default_rng(seed).standard_normal(n)
    impulse = np.zeros(n)
    impulse[:: SR // 4] = 0.9  # a click every 250 ms so every analysis window sees one
    return {
        name: x[None].astype(np.float32)
        for name, x in (("sine sweep", sweep), ("noise", noise), ("impulse", impulse))
    }


def average_spectrum_db(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from cakfx.dsp.stft import stft

    power = stft(torch.from_numpy(x)).abs().pow(2).mean(dim=(0, -1)).numpy()
    return np.fft.rfftfreq(2048, 1 / SR), 10 * np.log10(np.maximum(power, 1e-20))


def draw(weights_file: WeightsFile, out_png: str | Path) -> dict:
    """Render the analysis picture for ``weights_file``; return its path and size."""
    from cakfx.plugins.texture import EFFECT
    from cakfx.plugins.texture.checkpoint import model_from_tensors
    from cakfx.spectrogram import require_matplotlib

    plt = require_matplotlib()
    model = model_from_tensors(weights_file.tensors, str(weights_file.path))
    kernel = model.detector_weight.detach().reshape(3, 3).numpy()
    bias, scale = float(model.detector_bias.detach()), float(model.scale.detach())

    fig = plt.figure(figsize=(16, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 3)
    ax = fig.add_subplot(grid[0, 0])
    lim = float(np.abs(kernel).max()) or 1.0
    im = ax.imshow(kernel, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    for (i, j), v in np.ndenumerate(kernel):
        ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=11)
    ax.set_xticks([0, 1, 2], ["t-1", "t", "t+1"])
    ax.set_yticks([0, 1, 2], ["f-1", "f", "f+1"])
    ax.set_xlabel("time (frames)")
    ax.set_ylabel("frequency (bins)")
    ax.set_title(f"learned 3x3 kernel (bias {bias:+.4f}, scale {scale:.4f})")
    fig.colorbar(im, ax=ax)

    ax = fig.add_subplot(grid[0, 1])
    t = torch.linspace(0, 2, 401)
    gate = model.gate(t).detach().numpy()
    ax.plot(t, gate, label="gate sigmoid((t - τ)·T)")
    ax.plot(t, t.numpy() * scale * gate, label="strength t · scale · gate")
    ax.axvline(model.threshold, color="grey", ls=":", label=f"threshold τ = {model.threshold:g}")
    ax.set_xlabel("amount t")
    ax.set_title(f"gate (T = {float(model.temperature):g}) and effective strength")
    ax.legend()
    ax.grid(alpha=0.3)

    signals = test_signals()
    for col, (name, x) in enumerate(signals.items()):
        ax = fig.add_subplot(grid[1, col]) if col < 3 else None
        freqs, base = average_spectrum_db(x)
        for amount in AMOUNTS:
            node = EFFECT.create(str(weights_file.path), "cpu", amount=amount, level="off")
            _, spec = average_spectrum_db(node(x, SR))
            ax.semilogx(freqs[1:], (spec - base)[1:], label=f"amount {amount:g}")
        ax.set_xlim(20, SR / 2)
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("output / input (dB)")
        ax.set_title(f"response on {name}")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    # the free slot: the spectra of the three test signals themselves, for reference
    ax = fig.add_subplot(grid[0, 2])
    for name, x in signals.items():
        freqs, base = average_spectrum_db(x)
        ax.semilogx(freqs[1:], base[1:], label=name)
    ax.set_xlim(20, SR / 2)
    ax.set_title("test signals (input spectra)")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("dB")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"cak.texture — weights {weights_file.name}", fontsize=13)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return {"path": str(out_png), "width": 1600, "height": 900}
