"""The bundled default weights (trained by `make weights`) and the presets that use them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cakfx
from cakfx.registry import get_effect
from cakfx.weights import load_weights, resolve_weights, sha256_file
from tests.signals import drums, tone

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(  # every bundled preset that uses the default weights
    p.stem for p in (ROOT / "presets").glob("*.toml") if "cak-" in p.read_text()
)
DEFAULTS = {"cak-texture-default": "cak.texture", "cak-grain-default": "cak.grain"}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_weights_carry_their_training_record(name):
    wf = load_weights(ROOT / "weights" / f"{name}.safetensors", expect_kind=DEFAULTS[name])
    rec = wf.training
    assert rec["trainer"] == f"cakfx train {DEFAULTS[name].split('.')[1]}"
    assert rec["profile"] == "fast" and "NOT the published recipe" in rec["profile_note"]
    if name == "cak-texture-default":  # hydrogen-drumkits, the evaluation kit held out
        assert rec["dataset"]["root"] == "drumkits" and rec["dataset"]["files"] > 500
        assert rec["dataset"]["exclude_patterns"] == ["VariBreaks/*"]
    else:  # `make weights-corpus`: sonic-pi-samples and wesnoth music clips, trained both directions
        assert rec["dataset"]["root"] == "weights-corpus" and rec["dataset"]["files"] > 300
        assert rec["settings"]["both_directions"] and rec["dataset"]["pair_grain_range"][0] < 0
    assert rec["seed"] == 42 and rec["epochs"] >= 1
    assert all(np.isfinite(v) for v in rec["final_losses"].values())
    # resolved by name from the bundled folder (nothing in the test's $CAKFX_HOME)
    assert resolve_weights(name).resolve() == (ROOT / "weights" / f"{name}.safetensors").resolve()
    model = cakfx.load_model(name, device="cpu")
    assert not model.training


def test_default_texture_stats_match_the_effects_needs():
    stats = load_weights(ROOT / "weights" / "cak-texture-default.safetensors").stats
    assert stats["alpha"] == 10.0 and stats["gamma"] == 0.85
    assert stats["global_low"] < stats["global_high"]


@pytest.mark.parametrize("preset", PRESETS)
def test_bundled_preset_is_pinned_and_processes_audio(preset):
    path = ROOT / "presets" / f"{preset}.toml"
    data = tomllib.loads(path.read_text())
    assert data["preset"]["name"] == preset
    # the neural stages (those that take weights; cak.limiter does not)
    pinned = [entry for entry in data["chain"] if "weights" in get_effect(entry["effect"]).param_map]
    assert pinned
    for entry in pinned:
        assert entry["sha256"] == sha256_file(ROOT / "weights" / f"{entry['weights']}.safetensors")
    chain = cakfx.load_preset(preset, device="cpu")
    audio = drums(1.0, channels=2) + tone(1.0, channels=2)
    out = chain(audio, 44100)
    assert out.shape == audio.shape and np.isfinite(out).all()
    assert np.abs(out - audio).mean() > 1e-4
