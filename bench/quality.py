"""Sound-quality bench: every bundled preset over a real, freely licensed corpus (issue 9's proof).

    python bench/quality.py [--presets NAME ...] [--json OUT.json] [--directions] [--no-install]
    python bench/quality.py --models [LABEL=TEXTURE,GRAIN ...]   # issue 15's table

The corpus (``CORPUS`` below, with each file's package and licence) is real
material nobody trained on: speech, music, drum loops and one-shots, a crash,
system and game sounds at 22.05, 44.1 and 48 kHz, from Debian packages. When
a package is missing the bench installs it with ``apt-get install -y`` if it
runs as root (``--no-install`` turns that off; missing files are then left
out and listed). cakfx itself never downloads anything. The bundled weights
were trained on ``hydrogen-drumkits`` with the ``VariBreaks`` kit held out, so
only VariBreaks is used from that package. Synthetic edge cases are added: the
demo drum loop and chord pad (``tools/demo.py``), 2 s of digital silence, and a
96 kHz signal with content above 22.05 kHz. The one real >= 88.2 kHz file
found in Debian's sound packages (freedesktop's camera-shutter.oga, 96 kHz
Vorbis) holds nothing above 22 kHz (-76 dB of its energy), so the synthetic
one is the real music excerpt upsampled to 96 kHz with a 30 kHz tone and
24-40 kHz noise added.
Files are cut to ``--seconds`` (default 6) so a run takes a few minutes.

Per preset and file (``FIELDS``):

* ``lufs_in`` / ``lufs_out``: integrated loudness (ITU-R BS.1770, pyloudnorm,
  via ``cakfx.dsp.loudness``; material under 0.4 s, which cannot be gated,
  gets its K-weighted RMS on the same scale);
  ``d_lu`` = out - in;
* ``peak_db``, ``true_peak_db``: output sample peak (dBFS) and true peak
  (dBTP, 4x oversampled), ``clipped``: output samples with |y| >= 1, all from
  ``cakfx.dsp.loudness``;
* ``change_db``: mean |dB difference| of the STFT magnitude (n_fft 2048,
  hop 512) over bins within 60 dB of the input's peak;
* ``d_flatness`` and ``d_centroid_hz``: change of ``cakfx.measure``'s spectral
  flatness and centroid;
* ``hf_kept_db`` (inputs at >= 88.2 kHz): output energy above 22.05 kHz over
  the input's, dB (0 = kept); left out where that band holds less than
  -60 dB of the input's energy;
* ``noise_lift_db``: in the bins more than 60 dB below their frame's peak in
  the input, mean (output dB - input dB) minus the overall gain (output over
  input energy, dB): how far near-empty regions are raised beyond the level
  change (both floored 100 dB below the input's peak, so bands a codec left
  empty do not read as lifts of nothing; bins up to 20 kHz only);
  ``silence_out_db``: output peak for the silent input;
* ``click_db``: the largest frame-to-frame broadband jump of the output
  (median over bins of the dB rise from one 1024-sample frame to the next,
  hop 256, bins up to 20 kHz, each file floored 80 dB under its own peak) minus
  the input's largest such jump. It also reads a changed spectral balance as a
  click: an output whose loudest band was cut has its floor lower, and a
  brightened band that crosses the floor at an onset jumps from it (measured:
  grain-airy on the Oxygen sound, +12 dB, with the same per-band rises in
  input and output).
* ``excess_db``: per bin, the output's dB rise from one frame to the next minus
  the input's largest rise within 2 frames (11.6 ms) of it, the median over
  bins, its largest value (``click_excess_db``; the input floored 100 dB under
  its peak, the output at that floor moved by the effect's static gain in the
  bin, taken over the frames where the bin holds content). A static EQ reads
  0, and so does an onset moved by a few ms (a smear, an STFT mask's
  pre-echo); a gain step in time (a click, a burst at a cut)
  reads its size.

``--models``: the issue-15 targets for the bundled weights, the published research
checkpoints (converted from ``$CAKFX_REFERENCE`` into a temporary folder, as ``cakfx
weights import`` does; never copied into the repo) and any candidates, on the 14 real
recordings with the default level handling: texture's mean spectral change at amounts
0.25 / 0.5 / 1 / 2 and the share of files where it grows strictly over them; grain's mean
change, the share of files whose flatness moves up (+g) / down (-g), the centroid, and the
largest click excess, at -1.5 ... +1.5; ratios against the published checkpoints.

Summaries per preset: median and max over the corpus. ``--directions`` adds
the measured direction of each neural control (texture amount, grain sign)
on the real files: median change of flatness, centroid and loudness, with
the level stage on and off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cakfx
from cakfx.audio import read_audio
from cakfx.dsp.loudness import clipped_samples, integrated_loudness, sample_peak_db, true_peak_db
from cakfx.dsp.resample import resample
from cakfx.measure import spectral_centroid, spectral_flatness
from cakfx.presets import bundled_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ lives beside bench/, not in the wheel
from tools.demo import SR as DEMO_SR  # noqa: E402
from tools.demo import chord_pad, drum_loop  # noqa: E402

HF_EDGE = 22050.0
AUDIBLE_HZ = 20000.0  # noise lift and clicks are judged in the audible band
HF_MIN_SHARE_DB = 60.0  # HF kept is measured where the band above HF_EDGE holds more than -60 dB
FLOOR_DB = 60.0  # bins within this of the (input) peak count as content
CLICK_FLOOR_DB = 100.0  # spectrograms for the click figure: floored this far below the input's peak
CONTENT_DB = 40.0  # a bin holds content in a frame this far over the click floor (its static gain)
CLICK_NEAR = 2  # frames (2 x 5.8 ms at 44.1 kHz) an onset may move without counting as a click


@dataclass(frozen=True)
class Source:
    """One corpus file: where it comes from and under which licence."""

    label: str
    kind: str
    package: str
    path: str
    licence: str
    start_s: float = 0.0


# Debian packages (bookworm). Licences from each package's /usr/share/doc/*/copyright.
CORPUS = (
    Source("speech: ALSA 'Front Center'", "speech", "alsa-utils",
           "/usr/share/sounds/alsa/Front_Center.wav", "GPL-2"),
    Source("speech: ALSA 'Rear Right'", "speech", "alsa-utils",
           "/usr/share/sounds/alsa/Rear_Right.wav", "GPL-2"),
    Source("music: Frozen Bubble intro", "music", "frozen-bubble-data",
           "/usr/share/games/frozen-bubble/snd/introzik.ogg", "GPL-2", 20.0),
    Source("music: LMMS rave bass loop", "music", "lmms-common",
           "/usr/share/lmms/samples/bassloops/rave_bass01.ogg", "GPL-2+"),
    Source("drums: LMMS jungle loop", "drums", "lmms-common",
           "/usr/share/lmms/samples/beats/jungle01.ogg", "GPL-2+"),
    Source("drums: LMMS electro beat", "drums", "lmms-common",
           "/usr/share/lmms/samples/beats/electro_beat01.ogg", "GPL-2+"),
    Source("drums: LMMS crash", "drums", "lmms-common",
           "/usr/share/lmms/samples/drums/crash02.ogg", "GPL-2+"),
    Source("drums: VariBreaks Kick 1", "drums", "hydrogen-drumkits",
           "/usr/share/hydrogen/data/drumkits/VariBreaks/VP Kick 1.flac", "GPL-2+"),
    Source("drums: VariBreaks Snare 3", "drums", "hydrogen-drumkits",
           "/usr/share/hydrogen/data/drumkits/VariBreaks/VP Snare 3.flac", "GPL-2+"),
    Source("drums: VariBreaks Hat 1 Op", "drums", "hydrogen-drumkits",
           "/usr/share/hydrogen/data/drumkits/VariBreaks/VP Hat 1 Op.flac", "GPL-2+"),
    Source("drums: VariBreaks Tom Low", "drums", "hydrogen-drumkits",
           "/usr/share/hydrogen/data/drumkits/VariBreaks/VP Tom Low.flac", "GPL-2+"),
    Source("effect: Oxygen log-in", "effect", "oxygen-sounds",
           "/usr/share/sounds/Oxygen-Sys-Log-In.ogg", "LGPL-3+"),
    Source("effect: freedesktop bell", "effect", "sound-theme-freedesktop",
           "/usr/share/sounds/freedesktop/stereo/bell.oga", "CC-BY-3.0"),
    Source("effect: freedesktop camera shutter", "effect", "sound-theme-freedesktop",
           "/usr/share/sounds/freedesktop/stereo/camera-shutter.oga", "CC-BY-SA-3.0"),
)

FIELDS = ("lufs_in", "lufs_out", "d_lu", "peak_db", "true_peak_db", "clipped", "change_db",
          "d_flatness", "d_centroid_hz", "hf_kept_db", "noise_lift_db", "click_db", "excess_db")


# ---------------------------------------------------------------- corpus

def ensure_packages(packages: set[str], install: bool) -> list[str]:
    """Install the Debian packages that are missing (as root, with apt-get); return what is still missing."""
    missing = sorted(p for p in packages if not any(Path(s.path).exists() for s in CORPUS if s.package == p))
    if missing and install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing the corpus: apt-get install -y {' '.join(missing)}", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    return sorted(p for p in packages if not any(Path(s.path).exists() for s in CORPUS if s.package == p))


def excerpt(audio: np.ndarray, sr: int, start_s: float, seconds: float) -> np.ndarray:
    start = min(int(start_s * sr), max(0, audio.shape[-1] - int(seconds * sr)))
    return np.ascontiguousarray(audio[:, start : start + int(seconds * sr)])


def with_high_band(audio: np.ndarray, sr: int, new_sr: int = 96000, seed: int = 0) -> np.ndarray:
    """``audio`` upsampled to ``new_sr``, plus a 30 kHz tone (-30 dBFS) and 24-40 kHz noise (-45 dBFS)."""
    up = resample(audio.astype(np.float32), sr, new_sr).astype(np.float64)
    n = up.shape[-1]
    t = np.arange(n) / new_sr
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal((up.shape[0], n)), axis=-1)
    freqs = np.fft.rfftfreq(n, 1 / new_sr)
    spec[:, (freqs < 24000) | (freqs > 40000)] = 0
    noise = np.fft.irfft(spec, n, axis=-1)
    noise *= 10 ** (-45 / 20) / max(float(np.sqrt(np.mean(noise**2))), 1e-12)
    out = 0.85 * up + 10 ** (-30 / 20) * np.sin(2 * np.pi * 30000 * t) + noise
    return out.astype(np.float32)


def load_corpus(seconds: float, install: bool) -> tuple[list[dict], list[str]]:
    """The corpus items (``label kind audio sr source licence``) and notes on what is missing."""
    notes = []
    missing = ensure_packages({s.package for s in CORPUS}, install)
    if missing:
        notes.append(f"not installed (left out): {', '.join(missing)}")
    items = []
    for s in CORPUS:
        if not Path(s.path).exists():
            continue
        audio, info = read_audio(s.path)
        items.append({"label": s.label, "kind": s.kind, "sr": info.sample_rate,
                      "audio": excerpt(audio, info.sample_rate, s.start_s, seconds),
                      "source": f"{s.package}: {s.path}", "licence": s.licence})
    synth = [("synthetic: demo drum loop", "drums", drum_loop(), DEMO_SR),
             ("synthetic: demo chord pad", "music", chord_pad(), DEMO_SR),
             ("synthetic: silence", "silence", np.zeros((2, 2 * DEMO_SR), np.float32), DEMO_SR)]
    music = next((i for i in items if i["kind"] == "music"), None)
    base = (music["audio"], music["sr"]) if music else (chord_pad(), DEMO_SR)
    synth.append(("96 kHz: music + 30 kHz tone + HF noise", "music", with_high_band(*base), 96000))
    for label, kind, audio, sr in synth:
        items.append({"label": label, "kind": kind, "audio": excerpt(audio, sr, 0, seconds), "sr": sr,
                      "source": "synthetic (tools/demo.py / bench)", "licence": "-"})
    return items, notes


# ---------------------------------------------------------------- measurements

def loudness_db(audio: np.ndarray, sr: int) -> float:
    """Integrated loudness (LUFS; K-weighted RMS for material under 0.4 s); -inf: silence."""
    return integrated_loudness(audio, sr)


def _mag_db(audio: np.ndarray, n_fft: int, hop: int, sr: float | None = None) -> np.ndarray:
    """|STFT| in dB, ``(channels, bins, frames)``, Hann window, centred; only bins up to
    ``AUDIBLE_HZ`` when ``sr`` is given."""
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    if sr is not None:
        spec = spec[..., : int(AUDIBLE_HZ / sr * n_fft) + 1, :]
    return (20 * torch.log10(spec.abs().clamp_min(1e-7))).double().numpy()


def spectral_change_db(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = _mag_db(x, 2048, 512), _mag_db(y, 2048, 512)
    keep = dx > dx.max() - FLOOR_DB
    return float(np.abs(dy - dx)[keep].mean()) if keep.any() else 0.0


def gain_db(x: np.ndarray, y: np.ndarray) -> float:
    ex, ey = float(np.sum(np.square(x, dtype=np.float64))), float(np.sum(np.square(y, dtype=np.float64)))
    return 10 * math.log10(max(ey, 1e-30) / ex) if ex > 0 else 0.0


def noise_lift_db(x: np.ndarray, y: np.ndarray, sr: float) -> float | None:
    """Mean dB rise, beyond the overall gain, of the audible bins more than 60 dB below their frame's peak."""
    dx, dy = _mag_db(x, 2048, 512, sr), _mag_db(y, 2048, 512, sr)
    # below 100 dB under the file's peak counts as silence in both (codec-emptied bands would
    # otherwise read as 100+ dB lifts of nothing)
    floor = dx.max() - 100.0
    dx, dy = np.maximum(dx, floor), np.maximum(dy, floor)
    frame_peak = dx.max(axis=1, keepdims=True)
    # frames that carry content (within 60 dB of the loudest frame), their near-empty bins
    live = frame_peak > dx.max() - FLOOR_DB
    quiet = (dx < frame_peak - FLOOR_DB) & live
    if not quiet.any():
        return None
    return float(np.mean(dy[quiet] - dx[quiet]) - gain_db(x, y))


def max_broadband_jump_db(audio: np.ndarray, sr: float) -> float:
    """Largest frame-to-frame rise of the median (over bins) dB level; bins floored 80 dB below the peak."""
    d = _mag_db(audio, 1024, 256, sr)
    d = np.maximum(d, d.max() - 80.0)
    jumps = np.median(np.diff(d, axis=-1), axis=1)  # (channels, frames - 1)
    return float(jumps.max()) if jumps.size else 0.0


def click_excess_db(x: np.ndarray, y: np.ndarray, sr: float) -> float:
    """Largest frame-to-frame broadband rise the output has beyond the input's at the same bins.

    Per bin (1024-sample frames, hop 256, up to ``AUDIBLE_HZ``) the output's dB rise from one
    frame to the next minus the input's largest within ``CLICK_NEAR`` frames, the median over
    bins, its largest value. The input is floored ``CLICK_FLOOR_DB`` under its peak; the output
    at that floor moved by the effect's static gain in that bin (the median of output over input
    over the frames where the bin holds content, ``CONTENT_DB`` over the floor; never under the
    median over all frames), so an EQ (a brighter or darker spectrum) reads 0 even where it lifts a
    band across the floor, and an onset moved by a few ms (a smear, an STFT mask's pre-echo)
    reads 0; a gain step in time (a click, a burst at a cut) reads its size.
    """
    dx, dy = _mag_db(x, 1024, 256, sr), _mag_db(y, 1024, 256, sr)
    floor = dx.max() - CLICK_FLOOR_DB
    dx = np.maximum(dx, floor)
    diff = np.maximum(dy, floor) - dx
    overall = np.median(diff, axis=-1, keepdims=True)
    # where the bin holds content: a band brightened only while a burst plays is an EQ too (the
    # median over all frames, mostly the floor, read it as a gain step at every burst)
    content = np.where(dx > floor + CONTENT_DB, diff, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins with no content: all-NaN slices
        static = np.nanmedian(content, axis=-1, keepdims=True)
    # a cut where the bin has content must not lower the output's floor below the overall gain
    static = np.where(np.isnan(static), overall, np.maximum(static, overall))
    dy = np.maximum(dy, floor + static)
    rise_x, rise_y = np.diff(dx, axis=-1), np.diff(dy, axis=-1)
    # the input's largest rise within CLICK_NEAR frames: an onset moved that little is not a click
    pad = np.pad(rise_x, ((0, 0), (0, 0), (CLICK_NEAR, CLICK_NEAR)), mode="edge")
    near = np.max([pad[..., k : k + rise_x.shape[-1]] for k in range(2 * CLICK_NEAR + 1)], axis=0)
    excess = np.median(rise_y - near, axis=1)
    return float(excess.max()) if excess.size else 0.0


def hf_kept_db(x: np.ndarray, y: np.ndarray, sr: int) -> float | None:
    if sr < 88200:
        return None

    def band(a):
        spec = np.fft.rfft(np.asarray(a, np.float64), axis=-1)
        freqs = np.fft.rfftfreq(a.shape[-1], 1 / sr)
        return float(np.sum(np.abs(spec[:, freqs > HF_EDGE]) ** 2))

    ex, ey = band(x), band(y)
    total = float(np.sum(np.square(x, dtype=np.float64))) * x.shape[-1] / 2  # Parseval, one-sided
    if ex <= total * 10 ** (-HF_MIN_SHARE_DB / 10):
        return None  # (almost) nothing up there to keep: a ratio of noise floors says nothing
    return 10 * math.log10(max(ey, 1e-30) / ex)


def measure_pair(x: np.ndarray, y: np.ndarray, sr: int) -> dict:
    """Every ``FIELDS`` figure for input ``x`` and output ``y`` (both ``(channels, samples)``)."""
    silent = not np.any(x)
    lufs_in, lufs_out = loudness_db(x, sr), loudness_db(y, sr)
    row = {
        "lufs_in": lufs_in,
        "lufs_out": lufs_out,
        "d_lu": lufs_out - lufs_in if math.isfinite(lufs_in) and math.isfinite(lufs_out) else None,
        "peak_db": sample_peak_db(y),
        "true_peak_db": true_peak_db(y),
        "clipped": clipped_samples(y),
        "finite": bool(np.isfinite(y).all()),
        "change_db": None if silent else spectral_change_db(x, y),
        "d_flatness": None if silent else spectral_flatness(y, sr) - spectral_flatness(x, sr),
        "d_centroid_hz": None if silent else spectral_centroid(y, sr) - spectral_centroid(x, sr),
        "hf_kept_db": hf_kept_db(x, y, sr),
        "noise_lift_db": None if silent else noise_lift_db(x, y, sr),
        "click_db": None if silent else max_broadband_jump_db(y, sr) - max_broadband_jump_db(x, sr),
        "excess_db": None if silent else click_excess_db(x, y, sr),
    }
    if silent:
        row["silence_out_db"] = sample_peak_db(y)
    return row


# ---------------------------------------------------------------- runs

def run_preset(name: str, items: list[dict]) -> list[dict]:
    chain = cakfx.load_preset(name, device="cpu")
    rows = []
    for item in items:
        t0 = time.perf_counter()
        y = chain(item["audio"], item["sr"])
        seconds = time.perf_counter() - t0
        y = np.nan_to_num(np.asarray(y, np.float32))  # figures stay defined; "finite" records the truth
        row = {"input": item["label"], "kind": item["kind"], "sr": item["sr"],
               **measure_pair(item["audio"], y, item["sr"]), "seconds": seconds}
        rows.append(row)
    return rows


def _stats(values) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return (float(np.median(v)), float(v.max())) if v.size else (None, None)


def summarise(rows: list[dict]) -> dict:
    """Median and max over the corpus of each figure (``abs_d_lu``: of |d_lu|)."""
    out = {key: dict(zip(("median", "max"), _stats(r[key] for r in rows))) for key in FIELDS}
    out["abs_d_lu"] = dict(zip(("median", "max"),
                               _stats(abs(r["d_lu"]) for r in rows if r["d_lu"] is not None)))
    out["d_lu"]["min"] = min((r["d_lu"] for r in rows if r["d_lu"] is not None), default=None)
    out["clipped"]["total"] = sum(r["clipped"] for r in rows)
    out["finite"] = all(r["finite"] for r in rows)
    silent = [r["silence_out_db"] for r in rows if "silence_out_db" in r]
    out["silence_out_db"] = max(silent) if silent else None
    return out


def _node_level_off(effect: str) -> dict:
    """Parameters that turn a neural node's level stage off, in whichever form this checkout has."""
    from cakfx.registry import get_effect

    names = {p.name for p in get_effect(effect).params}
    if "level" in names:
        return {"level": "off"}
    return {k: False for k in ("rms_match", "soft_clip") if k in names}


DIRECTION_SETTINGS = (
    ("cak.texture", "amount", (0.35, 0.6, 1.0)),
    ("cak.grain", "grain", (-1.5, -0.5, 0.5, 1.5)),
)


def real_recordings(items: list[dict]) -> list[dict]:
    """The corpus' real recordings: no silence, nothing synthetic."""
    return [i for i in items if i["kind"] != "silence" and not i["label"].startswith(("synthetic", "96 kHz"))]


def directions(items: list[dict], weights: dict[str, str] | None = None) -> list[dict]:
    """Median change of flatness, centroid, loudness and spectrum per control value, level stage on/off."""
    real = real_recordings(items)
    out = []
    for effect, param, values in DIRECTION_SETTINGS:
        for level_name, extra in (("default", {}), ("off", _node_level_off(effect))):
            for value in values:
                chosen = {"weights": weights[effect]} if weights and weights.get(effect) else {}
                node = cakfx.create_effect(effect, device="cpu", **{param: value}, **extra, **chosen)
                rows = [measure_pair(i["audio"], np.nan_to_num(node(i["audio"], i["sr"])), i["sr"])
                        for i in real]
                flat = [r["d_flatness"] for r in rows]
                cen = [r["d_centroid_hz"] for r in rows]
                out.append({
                    "effect": effect, "param": param, "value": value, "level": level_name, "files": len(rows),
                    "weights": (weights or {}).get(effect) or "default",
                    "d_flatness_median": float(np.median(flat)),
                    "flatness_up": sum(f > 0 for f in flat), "flatness_down": sum(f < 0 for f in flat),
                    "d_centroid_median_hz": float(np.median(cen)),
                    "centroid_up": sum(c > 0 for c in cen), "centroid_down": sum(c < 0 for c in cen),
                    "d_lu_median": _stats(r["d_lu"] for r in rows)[0],
                    "change_db_median": _stats(r["change_db"] for r in rows)[0],
                })
    return out


# ---------------------------------------------------------------- models (issue 15)

REFERENCE = Path(os.environ.get("CAKFX_REFERENCE", "/work/shared/reference"))
TEXTURE_AMOUNTS = (0.25, 0.5, 1.0, 2.0)
GRAIN_VALUES = (-1.5, -1.0, -0.5, 0.5, 1.5)


def import_published(folder: Path) -> dict[str, str]:
    """The published research checkpoints from ``$CAKFX_REFERENCE`` as safetensors in ``folder``
    (as ``cakfx weights import`` converts them); empty when the reference is absent."""
    from cakfx.registry import get_effect
    from cakfx.weights import save_weights

    sources = {"cak.texture": (REFERENCE / "texture/final_wgan_grain.pt",
                               REFERENCE / "texture/global_normalization_stats.json"),
               "cak.grain": (REFERENCE / "grain/final_true_cak.pt", None)}
    out = {}
    for effect, (checkpoint, stats) in sources.items():
        if not checkpoint.is_file():
            return {}
        target = folder / f"research-{effect[4:]}.safetensors"
        tensors, stats_data, training = get_effect(effect).import_checkpoint(checkpoint, stats)
        save_weights(target, tensors, kind=effect, stats=stats_data, training=training, name=target.stem)
        out[effect] = str(target)
    return out


def model_rows(items: list[dict], effect: str, param: str, values, weights: str) -> dict[float, list[dict]]:
    """``measure_pair`` rows per control value (default level handling) on the real recordings."""
    real = real_recordings(items)
    out = {}
    for value in values:
        node = cakfx.create_effect(effect, device="cpu", weights=weights, **{param: value})
        out[value] = [measure_pair(i["audio"], np.nan_to_num(node(i["audio"], i["sr"])), i["sr"])
                      for i in real]
    return out


def model_figures(items: list[dict], texture: str, grain: str) -> dict:
    """The issue-15 figures for one pair of weights: texture change per amount and its monotonic
    share; grain change, flatness direction share (+ up, - down) and centroid per value."""
    tex = model_rows(items, "cak.texture", "amount", TEXTURE_AMOUNTS, texture)
    changes = np.array([[r["change_db"] for r in tex[a]] for a in TEXTURE_AMOUNTS])  # (amounts, files)
    monotonic = np.all(np.diff(changes, axis=0) > 0, axis=0)
    gra = model_rows(items, "cak.grain", "grain", GRAIN_VALUES, grain)
    grain_figs = {}
    for value, rows in gra.items():
        flat = np.array([r["d_flatness"] for r in rows])
        grain_figs[value] = {
            "change_db": float(np.mean([r["change_db"] for r in rows])),
            "flatness_direction": float(np.mean(np.sign(flat) == np.sign(value))),
            "d_centroid_median_hz": float(np.median([r["d_centroid_hz"] for r in rows])),
            "excess_max_db": float(max(r["excess_db"] for r in rows)),
            "noise_lift_max_db": _stats(r["noise_lift_db"] for r in rows)[1],
        }
    return {"texture": texture, "grain": grain, "files": int(changes.shape[1]),
            "texture_change_db": {a: float(c) for a, c in zip(TEXTURE_AMOUNTS, changes.mean(axis=1))},
            "texture_monotonic": float(monotonic.mean()), "grain_values": grain_figs}


def models_table(figs: dict[str, dict], published: str = "published") -> str:
    """Markdown: each candidate's figures, ratios against ``published``, issue-15 targets."""
    ref = figs.get(published)
    lines = ["| figure | target | " + " | ".join(figs) + " |", "|---|---|" + "---|" * len(figs)]

    def row(label, target, get, fmt):
        cells = []
        for f in figs.values():
            value = get(f)
            cells.append(_md(value, fmt) if value is not None else "-")
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    for a in TEXTURE_AMOUNTS:
        row(f"texture {a:g}: mean change dB", "", lambda f, a=a: f["texture_change_db"][a], ".2f")
    if ref:
        row("texture 1 vs published", "≥ 1.0×",
            lambda f: f["texture_change_db"][1.0] / ref["texture_change_db"][1.0], ".2f")
    row("texture monotonic 0.25<0.5<1<2", "≥ 90 %", lambda f: 100 * f["texture_monotonic"], ".0f")
    for v in GRAIN_VALUES:
        row(f"grain {v:+g}: mean change dB", "", lambda f, v=v: f["grain_values"][v]["change_db"], ".2f")
        row(f"grain {v:+g}: flatness {'up' if v > 0 else 'down'} %", "≥ 80 % at ±1.5",
            lambda f, v=v: 100 * f["grain_values"][v]["flatness_direction"], ".0f")
        row(f"grain {v:+g}: centroid median Hz", "",
            lambda f, v=v: f["grain_values"][v]["d_centroid_median_hz"], "+.0f")
    if ref:
        for v in (-1.5, 1.5):
            row(f"grain {v:+g} vs published", "0.5–1.5×",
                lambda f, v=v: f["grain_values"][v]["change_db"] / ref["grain_values"][v]["change_db"], ".2f")
    row("grain max excess (click) dB", "",
        lambda f: max(g["excess_max_db"] for g in f["grain_values"].values()), "+.1f")
    return "\n".join(lines)


# ---------------------------------------------------------------- output

def _f(value, fmt: str = "+.1f", width: int = 7) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{'-inf' if value < 0 else 'inf':>{width}}"
    return format(value, fmt).rjust(width)


def print_rows(name: str, rows: list[dict]) -> None:
    print(f"\n{name}")
    head = ("input", "LUFS in", "out", "dLU", "peak", "TP", "clip", "chg dB", "dFlat", "dCent", "HF dB",
            "lift", "click", "excess")
    print(f"{head[0]:38s}" + "".join(f"{h:>8s}" for h in head[1:]))
    for r in rows:
        print(f"{r['input'][:38]:38s}" + _f(r["lufs_in"], ".1f", 8) + _f(r["lufs_out"], ".1f", 8)
              + _f(r["d_lu"], "+.1f", 8) + _f(r["peak_db"], ".1f", 8) + _f(r["true_peak_db"], ".1f", 8)
              + f"{r['clipped']:8d}" + _f(r["change_db"], ".1f", 8) + _f(r["d_flatness"], "+.3f", 8)
              + _f(r["d_centroid_hz"], "+.0f", 8) + _f(r["hf_kept_db"], "+.1f", 8)
              + _f(r["noise_lift_db"], "+.1f", 8) + _f(r["click_db"], "+.1f", 8)
              + _f(r["excess_db"], "+.1f", 8))


def print_summary(summary: dict) -> None:
    print("\nsummary over the corpus (median / max; dLU also min; |dLU| median / max)")
    head = ("preset", "|dLU| med", "max", "dLU min", "dLU max", "peak max", "TP max", "clipped",
            "chg med", "dFlat med", "dCent med", "lift med", "lift max", "click max", "excess", "HF kept",
            "silence")
    print(f"{head[0]:16s}" + "".join(f"{h:>10s}" for h in head[1:]))
    for name, s in summary.items():
        print(f"{name[:16]:16s}" + _f(s["abs_d_lu"]["median"], ".2f", 10)
              + _f(s["abs_d_lu"]["max"], ".2f", 10)
              + _f(s["d_lu"]["min"], "+.2f", 10) + _f(s["d_lu"]["max"], "+.2f", 10)
              + _f(s["peak_db"]["max"], "+.2f", 10) + _f(s["true_peak_db"]["max"], "+.2f", 10)
              + f"{s['clipped']['total']:10d}" + _f(s["change_db"]["median"], ".2f", 10)
              + _f(s["d_flatness"]["median"], "+.4f", 10) + _f(s["d_centroid_hz"]["median"], "+.0f", 10)
              + _f(s["noise_lift_db"]["median"], "+.1f", 10) + _f(s["noise_lift_db"]["max"], "+.1f", 10)
              + _f(s["click_db"]["max"], "+.1f", 10) + _f(s["excess_db"]["max"], "+.1f", 10)
              + _f(s["hf_kept_db"]["max"], "+.1f", 10)
              + _f(s["silence_out_db"], ".0f", 10))


def print_directions(rows: list[dict]) -> None:
    used = sorted({f"{r['effect']}: {r['weights']}" for r in rows})
    print(f"\ncontrol directions on the real files (median over files; up/down = files); {'; '.join(used)}")
    head = ("control", "level", "dFlat", "up/down", "dCent Hz", "up/down", "dLU", "chg dB")
    print(f"{head[0]:22s}{head[1]:>8s}" + "".join(f"{h:>10s}" for h in head[2:]))
    for r in rows:
        print(f"{r['effect'][4:] + ' ' + r['param'] + '=' + format(r['value'], 'g'):22s}{r['level']:>8s}"
              + _f(r["d_flatness_median"], "+.4f", 10) + f"{r['flatness_up']:>6d}/{r['flatness_down']:<3d}"
              + _f(r["d_centroid_median_hz"], "+.0f", 10) + f"{r['centroid_up']:>6d}/{r['centroid_down']:<3d}"
              + _f(r["d_lu_median"], "+.2f", 10) + _f(r["change_db_median"], ".2f", 10))


def _md(value, fmt: str) -> str:
    return _f(value, fmt, 0).strip().replace("-", "−")


def markdown_summary(summary: dict) -> str:
    """The per-preset summary as a Markdown table (for weights/README.md)."""
    lines = ["| preset | ΔLU median (min … max) | peak max dBFS | true peak max | clipped "
             "| spectral change median dB | Δflatness median | Δcentroid median Hz "
             "| noise lift median / max dB | click max dB | excess max dB | HF kept dB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        d = s["d_lu"]
        lines.append(
            f"| `{name}` | {_md(d['median'], '+.2f')} ({_md(d['min'], '+.1f')} … {_md(d['max'], '+.1f')}) "
            f"| {_md(s['peak_db']['max'], '+.1f')} | {_md(s['true_peak_db']['max'], '+.1f')} "
            f"| {s['clipped']['total']} | {_md(s['change_db']['median'], '.2f')} "
            f"| {_md(s['d_flatness']['median'], '+.4f')} | {_md(s['d_centroid_hz']['median'], '+.0f')} "
            f"| {_md(s['noise_lift_db']['median'], '+.1f')} / {_md(s['noise_lift_db']['max'], '+.1f')} "
            f"| {_md(s['click_db']['max'], '+.1f')} | {_md(s['excess_db']['max'], '+.1f')} "
            f"| {_md(s['hf_kept_db']['max'], '+.1f')} |")
    return "\n".join(lines)


def markdown_directions(rows: list[dict]) -> str:
    """The control directions (level stage off: the model's own change) as a Markdown table."""
    lines = ["| control | spectral flatness | centroid | loudness | spectral change |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["level"] != "off":
            continue
        n = r["files"]
        lines.append(
            f"| `{r['effect']}` {r['param']} {_md(r['value'], '+g')} "
            f"| {_md(r['d_flatness_median'], '+.4f')} "
            f"(up {r['flatness_up']}/{n}) | {_md(r['d_centroid_median_hz'], '+.0f')} Hz "
            f"(up {r['centroid_up']}/{n}) | {_md(r['d_lu_median'], '+.1f')} LU "
            f"| {_md(r['change_db_median'], '.1f')} dB |")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def run_models(items: list[dict], specs: list[str], json_out: Path | None) -> int:
    import tempfile

    candidates = {"bundled": ("cak-texture-default", "cak-grain-default")}
    for spec in specs:
        label, _, pair = spec.partition("=")
        texture, _, grain = pair.partition(",")
        candidates[label] = (texture or "cak-texture-default", grain or "cak-grain-default")
    figs = {}
    with tempfile.TemporaryDirectory() as tmp:
        published = import_published(Path(tmp))
        if published:
            candidates = {"published": (published["cak.texture"], published["cak.grain"]), **candidates}
        else:
            print(f"note: no reference checkpoints under {REFERENCE}; no published column", file=sys.stderr)
        for label, (texture, grain) in candidates.items():
            t0 = time.perf_counter()
            figs[label] = model_figures(items, texture, grain)
            print(f"  {label}: measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print("\n" + models_table(figs))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(_json_safe(figs), indent=1, default=str))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=None, help="default: every bundled preset")
    parser.add_argument("--json", type=Path, default=None, help="write rows, summaries, notes as JSON")
    parser.add_argument("--seconds", type=float, default=6.0, help="cut each file to this length")
    parser.add_argument("--directions", action="store_true", help="measure each neural control's direction")
    parser.add_argument("--texture-weights", default=None, help="weights for --directions (default: bundled)")
    parser.add_argument("--grain-weights", default=None, help="weights for --directions (default: bundled)")
    parser.add_argument("--directions-only", action="store_true", help="skip the presets")
    parser.add_argument("--models", nargs="*", metavar="LABEL=TEXTURE,GRAIN", default=None,
                        help="issue-15 table: the bundled weights, the published checkpoints (imported "
                             "from $CAKFX_REFERENCE) and any LABEL=TEXTURE,GRAIN candidates (paths/names)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get; leave missing out")
    parser.add_argument("--quiet", action="store_true", help="print the summaries only")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    items, notes = load_corpus(args.seconds, install=not args.no_install)
    print(f"corpus: {len(items)} inputs ({sum(i['audio'].shape[-1] / i['sr'] for i in items):.0f} s), "
          f"cut to {args.seconds:g} s")
    for item in items:
        print(f"  {item['label']:40s} {item['sr']:6d} Hz {item['audio'].shape[0]} ch "
              f"{item['audio'].shape[-1] / item['sr']:5.2f} s  {item['licence']:13s} {item['source']}")
    for note in notes:
        print(f"  note: {note}")

    if args.models is not None:
        return run_models(items, args.models, args.json)
    presets = args.presets or sorted(p.stem for p in bundled_dir().glob("*.toml"))
    report = {"corpus": [{k: v for k, v in i.items() if k != "audio"} for i in items], "notes": notes,
              "presets": {}, "summary": {}}
    for name in [] if args.directions_only else presets:
        rows = run_preset(name, items)
        name = Path(name).stem if name.endswith(".toml") else name  # a preset given by path
        report["presets"][name] = rows
        report["summary"][name] = summarise(rows)
        if not args.quiet:
            print_rows(name, rows)
    if report["summary"]:
        print_summary(report["summary"])
    if args.directions or args.directions_only:
        chosen = {"cak.texture": args.texture_weights, "cak.grain": args.grain_weights}
        report["directions"] = directions(items, chosen)
        print_directions(report["directions"])
    if args.markdown:
        if report["summary"]:
            print("\n" + markdown_summary(report["summary"]))
        if report.get("directions"):
            print("\n" + markdown_directions(report["directions"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_safe(report), indent=1))
    return 0 if all(s["finite"] for s in report["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
