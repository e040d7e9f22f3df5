"""Every bundled preset is voiced: level-neutral within 3 LU, sample peak at most -0.3 dBFS.

The material is the demo's (``tools/demo.py``): a drum loop, a chord pad and both
mixed, at their own levels; a copy of the mix normalised to -0.1 dBFS checks
that nothing ships an over (its loudness is not asked to stay put: limiting a
hot input is the ceiling's job). The full measurement over a real corpus is
``bench/quality.py`` (figures in weights/README.md); this is the guard that
keeps the presets voiced.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cakfx
from cakfx.dsp.loudness import integrated_loudness, sample_peak_db
from cakfx.weights import load_weights, resolve_weights
from tools.demo import SR, chord_pad, drum_loop

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "presets").glob("*.toml"))
SECONDS = 2.0
MAX_LU = 3.0
MAX_PEAK_DB = -0.3


def _signals() -> dict[str, np.ndarray]:
    n = int(SECONDS * SR)
    drums = np.repeat(drum_loop(SECONDS), 2, axis=0)[:, :n]
    pad = chord_pad(SECONDS)[:, :n]
    mix = 0.7 * drums + 0.7 * pad
    loud = mix * (10 ** (-0.1 / 20) / np.abs(mix).max())
    return {"drums": drums, "pad": pad, "drums + pad": mix}, loud


SIGNALS, LOUD = _signals()


def _entries(preset: str) -> list[dict]:
    path = Path(__file__).resolve().parents[1] / "presets" / f"{preset}.toml"
    return tomllib.loads(path.read_text())["chain"]


def test_every_bundled_preset_is_covered():
    assert len(PRESETS) >= 6 and "demo" in PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_keeps_loudness_and_stays_under_the_ceiling(preset):
    chain = cakfx.load_preset(preset, device="cpu")
    for label, audio in [*SIGNALS.items(), ("drums + pad at -0.1 dBFS", LOUD)]:
        out = chain(audio.astype(np.float32), SR)
        assert out.shape == audio.shape and np.isfinite(out).all()
        if label in SIGNALS:
            change = integrated_loudness(out, SR) - integrated_loudness(audio, SR)
            assert abs(change) <= MAX_LU, f"{preset} on {label}: loudness moved {change:+.2f} LU"
        peak = sample_peak_db(out)
        assert peak <= MAX_PEAK_DB, f"{preset} on {label}: sample peak {peak:+.2f} dBFS"


def _trained_grain_range(weights: str) -> tuple[float, float]:
    """The grain controls the weights' recipe trained (its record): ``-clip ... +clip`` when the
    pairs ran both ways, ``0 ... +clip`` when only low -> high (the published recipe)."""
    settings = load_weights(resolve_weights(weights)).training["settings"]
    top = settings.get("grain_clip") or 3.0
    return (-top if settings.get("both_directions") else 0.0), top


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_stays_in_the_trained_range_unless_named_extreme(preset):
    entries = _entries(preset)
    extreme = "extreme" in preset
    for entry in entries:
        if entry["effect"] == "cak.texture":
            assert extreme or entry.get("amount", 0.5) <= 1.0, f"{preset}: texture amount beyond 1"
        if entry["effect"] == "cak.grain":
            low, high = _trained_grain_range(entry["weights"])
            grain = entry.get("grain", 1.0)
            assert extreme or low <= grain <= high, f"{preset}: grain {grain} outside {low}..{high}"


def test_silence_stays_silent_through_every_preset():
    silence = np.zeros((2, SR), np.float32)
    for preset in PRESETS:
        out = cakfx.load_preset(preset, device="cpu")(silence, SR)
        assert np.abs(out).max() < 10 ** (-90 / 20), preset  # reverb tails of nothing are nothing



# chains with a compressor and nothing that adds harmonics on purpose (demo's Distortion)
COMPRESSED = [p for p in PRESETS if {e["effect"] for e in _entries(p)} & {"pedalboard.Compressor"}
              and not {e["effect"] for e in _entries(p)} & {"pedalboard.Distortion"}]


def _band_db(audio: np.ndarray, low_hz: float, high_hz: float) -> float:
    """The loudest frame's energy in ``low_hz…high_hz`` against the loudest frame's total (dB)."""
    frames = np.lib.stride_tricks.sliding_window_view(audio.mean(0), 2048)[::512] * np.hanning(2048)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    hz = np.fft.rfftfreq(2048, 1 / SR)
    return float(10 * np.log10(power[:, (hz > low_hz) & (hz < high_hz)].sum(1).max() / power.sum(1).max()))


@pytest.mark.parametrize("preset", COMPRESSED)
def test_a_compressed_preset_does_not_tick_on_a_sustained_pad(preset):
    # a compressor that engages on a pad's beating peaks with an 8 ms attack modulated it into
    # broadband ticks (800-2000 Hz, where the pad has nothing: -86 dB) at -57 dB in texture-drums
    # and texture-grain; a 30 ms attack leaves -82 dB
    pad = chord_pad(4.0).astype(np.float32)
    out = cakfx.load_preset(preset, device="cpu")(pad, SR)
    assert _band_db(out, 800.0, 2000.0) < -75.0, preset
