"""Before/after spectrogram pictures (``cakfx inspect``); needs matplotlib (the ``viz`` extra)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cakfx.dsp.stft import stft
from cakfx.errors import CakfxError

DPI = 100
WIDTH_IN = 16.0
ROW_HEIGHT_IN = 3.2
TOP_DB = 80.0


def require_matplotlib():
    """Import matplotlib with the headless backend, or one clear error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CakfxError(
            "this needs matplotlib: install the viz extra, e.g. pip install 'cakfx[viz]'"
        ) from None
    return plt


def spectrogram_db(audio: np.ndarray, sr: float, n_fft: int = 2048, hop: int = 512):
    """Power spectrogram in dB (channels averaged), with its frequency and time axes."""
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    power = stft(x, n_fft=n_fft, hop=hop).abs().pow(2).mean(dim=0).numpy()
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    times = np.arange(power.shape[1]) * hop / sr
    return 10 * np.log10(np.maximum(power, 1e-12)), freqs, times


@dataclass
class Row:
    label: str
    output: np.ndarray


def crop(audio: np.ndarray, sr: float, seconds: str | None) -> np.ndarray:
    """``A:B`` in seconds (either side may be empty)."""
    if not seconds:
        return audio
    try:
        a, _, b = seconds.partition(":")
        start = int(float(a) * sr) if a else 0
        stop = int(float(b) * sr) if b else audio.shape[1]
    except ValueError:
        raise CakfxError(f"--seconds {seconds!r}: expected A:B in seconds, e.g. 0:4") from None
    if not 0 <= start < stop:
        raise CakfxError(f"--seconds {seconds!r}: the range is empty")
    if start >= audio.shape[1]:
        raise CakfxError(f"--seconds {seconds!r}: the file is only {audio.shape[1] / sr:.2f} s long")
    return audio[:, start:stop]


def render(
    audio: np.ndarray,
    sr: float,
    rows: list[Row],
    out_png: str | Path,
    title: str,
) -> dict[str, Any]:
    """Draw input | output | difference for each row; return size and row count."""
    plt = require_matplotlib()
    from matplotlib.colors import TwoSlopeNorm

    s_in, freqs, times = spectrogram_db(audio, sr)
    outs = [spectrogram_db(r.output, sr)[0] for r in rows]
    vmax = max(s_in.max(), *(o.max() for o in outs))
    vmin = vmax - TOP_DB
    diffs = [np.clip(o, vmin, None) - np.clip(s_in, vmin, None) for o in outs]
    dlim = max(1.0, *(np.percentile(np.abs(d), 99.5) for d in diffs))
    height = max(7.0, 1.0 + ROW_HEIGHT_IN * len(rows))
    fig, axes = plt.subplots(len(rows), 3, figsize=(WIDTH_IN, height), squeeze=False, constrained_layout=True)
    f = freqs[1:]  # log axis: skip DC
    for i, (row, s_out, diff) in enumerate(zip(rows, outs, diffs)):
        panels = (
            (s_in, "input", "magma", dict(vmin=vmin, vmax=vmax), "dB"),
            (s_out, f"output {row.label}".strip(), "magma", dict(vmin=vmin, vmax=vmax), "dB"),
            (diff, "difference (output − input)", "RdBu_r", dict(norm=TwoSlopeNorm(0, -dlim, dlim)), "dB"),
        )
        for ax, (data, name, cmap, scale, unit) in zip(axes[i], panels):
            mesh = ax.pcolormesh(times, f, data[1:], cmap=cmap, shading="auto", rasterized=True, **scale)
            ax.set_yscale("log")
            ax.set_ylim(max(20.0, f[0]), sr / 2)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("frequency (Hz)")
            fig.colorbar(mesh, ax=ax, label=unit)
    fig.suptitle(title, fontsize=11)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return {
        "path": str(out_png),
        "rows": len(rows),
        "width": int(WIDTH_IN * DPI),
        "height": int(height * DPI),
    }


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``ID.PARAM=v1,v2,...`` -> (``"ID.PARAM"``, values)."""
    from cakfx.presets import parse_value

    key, sep, values = text.partition("=")
    if not sep or "." not in key or not values:
        raise CakfxError(f"--sweep {text!r}: expected ID.PARAM=V1,V2,..., e.g. texture.amount=0,0.5,1,2")
    return key.strip(), [parse_value(v.strip()) for v in values.split(",") if v.strip()]


def inspect_file(
    path: str | Path,
    preset: str,
    out_png: str | Path,
    overrides: dict | None = None,
    sweep: str | None = None,
    seconds: str | None = None,
    device: Any = None,
    build: Callable | None = None,
) -> dict[str, Any]:
    """Process ``path`` with ``preset`` (once, or once per sweep value) and draw the picture."""
    from cakfx.audio import read_audio
    from cakfx.presets import load_preset

    require_matplotlib()
    audio, info = read_audio(path)
    audio = crop(audio, info.sample_rate, seconds)
    overrides = dict(overrides or {})
    rows = []
    if sweep:
        key, values = parse_sweep(sweep)
        for value in values:
            chain = load_preset(preset, device=device, overrides={**overrides, key: value})
            rows.append(Row(f"{key}={value}", chain(audio, info.sample_rate)))
    else:
        chain = load_preset(preset, device=device, overrides=overrides)
        rows.append(Row("", chain(audio, info.sample_rate)))
    params = ", ".join(f"{k}={v}" for k, v in overrides.items())
    title = f"{Path(path).name} — preset {preset}" + (f" ({params})" if params else "")
    if sweep:
        title += f" — sweep {sweep}"
    return render(audio, info.sample_rate, rows, out_png, title)
