"""cak.texture against the original pipeline's output, and through the CLI (needs ../shared/reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import cakfx
from cakfx.cli import cli
from cakfx.errors import CakfxError
from cakfx.paths import user_weights_dir
from cakfx.plugins.texture.checkpoint import import_checkpoint
from cakfx.weights import load_weights, save_weights

AMOUNTS = (0.3, 0.5, 0.8, 1.0)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def imported(reference, tmp_path_factory):
    """The reference checkpoint + stats imported into a temporary weights file."""
    tensors, stats, training = import_checkpoint(
        reference / "texture" / "final_wgan_grain.pt",
        reference / "texture" / "global_normalization_stats.json",
    )
    path = tmp_path_factory.mktemp("texture-weights") / "reference.safetensors"
    return save_weights(path, tensors, kind="cak.texture", stats=stats, training=training)


@pytest.fixture(scope="module")
def excerpt(reference):
    audio, sr = sf.read(reference / "audio" / "lux_excerpt_6s_mono.wav", dtype="float32")
    return audio, sr


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / np.sum((test.astype(np.float64) - ref) ** 2))


@pytest.mark.parametrize("amount", AMOUNTS)
def test_matches_the_original_pipeline(imported, excerpt, reference, amount):
    audio, sr = excerpt
    original = reference / "texture" / f"original_output_amount_{amount}.wav"
    expected, ref_sr = sf.read(original, dtype="float32")
    node = cakfx.create_effect(
        "cak.texture", weights=str(imported), amount=amount, level="original", device="cpu"
    )
    out = node(audio, sr)
    assert ref_sr == sr and out.shape == expected.shape
    snr = snr_db(expected, out)
    print(f"cak.texture amount {amount}: {snr:.1f} dB SNR against the original pipeline")
    assert snr >= 60.0, f"amount {amount}: {snr:.1f} dB"


def test_imported_weights_carry_stats_and_provenance(imported, reference):
    wf = load_weights(imported, expect_kind="cak.texture")
    stats = json.loads((reference / "texture" / "global_normalization_stats.json").read_text())
    for key in ("global_low", "global_high", "alpha", "gamma"):
        assert wf.stats[key] == stats[key]
    assert "research checkpoint" in wf.training["source"] and wf.training["epochs"] == 100
    model = cakfx.load_model(imported, device="cpu")
    assert float(model.threshold) == pytest.approx(0.3) and not model.training
    n = torch.rand(1, 1, 1025, 16)
    assert model(n, torch.tensor([0.0])).equal(n)  # t = 0: the layer is the identity


def test_stereo_left_equals_mono(imported, excerpt):
    audio, sr = excerpt
    audio = audio[: sr * 2]
    stereo = np.stack([audio, 0.5 * audio[::-1]])
    node = cakfx.create_effect(
        "cak.texture", weights=str(imported), amount=0.8, level="original", device="cpu"
    )
    both = node(stereo, sr)
    assert np.allclose(both[0], node(audio, sr), atol=1e-6, rtol=0)
    assert np.allclose(both[1], node(stereo[1], sr), atol=1e-6, rtol=0)


def test_grain_checkpoint_is_not_texture(reference):
    with pytest.raises(CakfxError, match="not a CAK texture checkpoint.*--kind grain"):
        import_checkpoint(
            reference / "grain" / "final_true_cak.pt",
            reference / "texture" / "global_normalization_stats.json",
        )


def test_cli_weights_import_and_process_with_set(reference, excerpt, tmp_path):
    ckpt = reference / "texture" / "final_wgan_grain.pt"
    stats = reference / "texture" / "global_normalization_stats.json"
    missing = CliRunner().invoke(cli, ["weights", "import", str(ckpt), "--kind", "texture", "--name", "ref"])
    assert missing.exit_code != 0 and "--stats" in missing.output and "Traceback" not in missing.output
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"\x00not a checkpoint")
    bad = CliRunner().invoke(
        cli, ["weights", "import", str(bogus), "--kind", "texture", "--stats", str(stats), "--name", "x"]
    )
    assert bad.exit_code != 0 and "not a loadable checkpoint" in bad.output and "Traceback" not in bad.output

    result = run("weights", "import", ckpt, "--kind", "texture", "--stats", stats, "--name", "ref-texture")
    assert result.exit_code == 0, result.output
    assert (user_weights_dir() / "ref-texture.safetensors").is_file()
    assert "ref-texture" in run("weights", "list").output

    audio, sr = excerpt
    src = tmp_path / "in"
    src.mkdir()
    stereo = np.stack([audio[: sr // 2], audio[sr : sr + sr // 2]]).T
    sf.write(src / "clip.wav", stereo, sr, subtype="FLOAT")
    preset = tmp_path / "texture.toml"
    preset.write_text(
        '[preset]\nname = "t"\n\n[[chain]]\nid = "texture"\neffect = "cak.texture"\n'
        'weights = "ref-texture"\namount = 0.3\n'
    )
    out = tmp_path / "out"
    result = run("process", src, "-p", preset, "-o", out, "--set", "texture.amount=0.8", "--device=cpu", "-q")
    assert result.exit_code == 0, result.output
    processed, out_sr = sf.read(out / "clip.wav", dtype="float32", always_2d=True)
    assert out_sr == sr and processed.shape == stereo.shape
    node = cakfx.create_effect("cak.texture", weights="ref-texture", amount=0.8, device="cpu")
    assert np.allclose(processed, node(stereo.astype(np.float32), sr), atol=1e-6)
