"""Spectral flatness, centroid and RMS of audio files, and the ``cakfx measure`` command.

``spectral_flatness`` is librosa's (``librosa.feature.spectral_flatness``,
the score the grain trainer pairs its controls by, DESIGN §7): per frame of the power STFT (n_fft 2048, hop
512, Hann, centred, zero padding) the geometric over the arithmetic mean of
``max(S, 1e-10)``, averaged over frames, at the file's own sample rate. Multichannel
audio: every channel is measured and the channel values averaged (a downmix
could cancel out-of-phase content and read smoother than what is heard).
Frames are taken in blocks, so long files need little memory.

Flatness is reported under its own name, ``flatness`` (0 = tonal, peaky; 1 =
white noise). Measured with the bundled weights, positive ``cak.grain``
values *raise* it (see README, Effects), so calling it "grain" misled.
Compatibility: before cakfx 0.2 the CSV/JSON column and summary key was
``grain``; scripts reading that column should read ``flatness`` now.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import click
import numpy as np
import torch

from cakfx.dsp import mel
from cakfx.dsp.stft import HOP, N_FFT

AMIN = 1e-10
BLOCK_FRAMES = 4096
FIELDS = ("path", "flatness", "centroid_hz", "rms", "rms_dbfs", "duration_s", "sample_rate", "channels")
SUMMARY_FIELDS = ("flatness", "centroid_hz", "rms", "duration_s")


def _power_blocks(audio, n_fft: int = N_FFT, hop: int = HOP):
    """Power STFT of ``(channels, samples)`` audio, block by block: ``(channels, bins, frames)`` each."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if x.ndim == 1:
        x = x[None]
    frames = mel.frame_count(x.shape[-1], hop)
    padded = mel.pad_centred(x, n_fft)
    for f0 in range(0, frames, BLOCK_FRAMES):
        spec = mel.stft_block(padded, f0, min(frames, f0 + BLOCK_FRAMES), n_fft, hop)
        yield (spec.real.square() + spec.imag.square()).double()


def spectral_flatness(audio, sr: float | None = None) -> float:
    """Mean over frames (and channels) of ``exp(mean(log S)) / mean(S)``, ``S = max(|STFT|^2, 1e-10)``.

    ``audio`` is ``(samples,)`` or ``(channels, samples)``; ``sr`` is not needed
    (flatness has no frequency axis) and accepted for symmetry.
    """
    total, frames = None, 0
    for power in _power_blocks(audio):
        power = power.clamp_min(AMIN)
        flat = torch.exp(power.log().mean(dim=-2)) / power.mean(dim=-2)  # (channels, frames)
        total = flat.sum(-1) if total is None else total + flat.sum(-1)
        frames += flat.shape[-1]
    return float((total / frames).mean())


def spectral_centroid(audio, sr: float) -> float:
    """Mean over frames (and channels) of the magnitude-weighted mean frequency, in Hz.

    As ``librosa.feature.spectral_centroid``; frames with no energy are left out.
    """
    freqs = torch.linspace(0.0, sr / 2.0, N_FFT // 2 + 1, dtype=torch.float64)
    total, count = 0.0, 0
    for power in _power_blocks(audio):
        magnitude = power.sqrt()
        energy = magnitude.sum(dim=-2)
        keep = energy > 0
        centroid = (freqs[:, None] * magnitude).sum(dim=-2) / energy.clamp_min(1e-30)
        total += float(centroid[keep].sum())
        count += int(keep.sum())
    return total / count if count else 0.0


def rms(audio) -> float:
    """Root mean square over all samples of all channels."""
    a = np.asarray(audio, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else 0.0


def measure_file(path: Path) -> dict:
    """All measurements of one audio file (raises ``CakfxError`` for unreadable files)."""
    from cakfx.audio import read_audio

    audio, info = read_audio(path)
    level = rms(audio)
    return {
        "path": str(path),
        "flatness": spectral_flatness(audio, info.sample_rate),
        "centroid_hz": spectral_centroid(audio, info.sample_rate),
        "rms": level,
        "rms_dbfs": 20.0 * math.log10(level) if level > 0 else None,  # silence: no dB value
        "duration_s": info.duration,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
    }


def find_files(inputs) -> tuple[list[Path], list[Path]]:
    """Audio files under ``inputs`` (files or folders, recursive, sorted) and the non-audio ones skipped."""
    from cakfx.audio import is_audio_path, walk_files

    audio, skipped = [], []
    for item in inputs:
        item = Path(item)
        candidates = walk_files(item) if item.is_dir() else [item]
        for path in candidates:
            (audio if is_audio_path(path) else skipped).append(path)
    return audio, skipped


def summarise(rows: list[dict]) -> dict:
    """min / max / mean / std of each summary field over ``rows``."""
    out = {}
    for key in SUMMARY_FIELDS:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        if values.size:
            out[key] = {"min": float(values.min()), "max": float(values.max()),
                        "mean": float(values.mean()), "std": float(values.std())}
    return out


def histogram(values, bins: int = 10, width: int = 40) -> list[str]:
    """A text histogram; log-spaced bins when the values span more than two decades."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return []
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return [f"{lo:10.4g}            | {'#' * width} {values.size}"]
    log = lo > 0 and hi / lo > 100
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(values, edges)
    scale = width / counts.max()
    return [
        f"{edges[i]:10.4g} … {edges[i + 1]:<10.4g} | {'#' * int(round(c * scale)):<{width}} {c}"
        for i, c in enumerate(counts)
    ]


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))


@click.command("measure")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write per-file rows as CSV")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write per-file rows, failures and the summary as JSON")
def measure(inputs, csv_path, json_path):
    """Measure spectral flatness, centroid, RMS, duration, rate and channels of audio files.

    INPUTS are files or folders (searched recursively). Non-audio files are
    skipped; files that cannot be read are listed with the reason, and the
    exit status is then 1. The flatness column was called ``grain`` before
    cakfx 0.2.
    """
    from tqdm import tqdm

    from cakfx.errors import CakfxError

    files, skipped = find_files(inputs)
    rows, failures = [], []
    for path in tqdm(files, desc="measure", unit="file", file=sys.stderr, disable=None):
        try:
            rows.append(measure_file(path))
        except CakfxError as exc:
            failures.append({"path": str(path), "error": str(exc)})
        except Exception as exc:  # keep going: one odd file must not stop a folder
            failures.append({"path": str(path), "error": f"{type(exc).__name__}: {exc}"})

    for row in rows:
        click.echo("  ".join(f"{k}={_fmt(row[k])}" for k in FIELDS))
    summary = summarise(rows)
    click.echo(f"\n{len(rows)} measured, {len(skipped)} skipped (not audio), {len(failures)} failed")
    for key, stats in summary.items():
        click.echo(f"{key:>12}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in stats.items()))
    if rows:
        click.echo("\nspectral flatness histogram:")
        for line in histogram([row["flatness"] for row in rows]):
            click.echo(f"  {line}")
    if failures:
        click.echo("\nfailed:", err=True)
        for failure in failures:
            click.echo(f"  {failure['path']}: {failure['error']}", err=True)

    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    if json_path is not None:
        report = {"files": rows, "skipped": [str(p) for p in skipped], "failed": failures, "summary": summary}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    if failures:
        sys.exit(1)
