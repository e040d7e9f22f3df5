"""The trainer plugins (`cakfx train texture|grain`) on a tiny generated sample folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from cakfx.errors import CakfxError
from cakfx.weights import load_weights, sha256_file
from tests.signals import drums, tone

SR = 44100


def commands() -> dict:
    """The ``cakfx train NAME`` click commands exactly as the CLI builds them from the registered trainers."""
    from cakfx.cli import train

    return {name: train.get_command(None, name) for name in train.list_commands(None)}


def make_samples(folder: Path, n: int = 8, seconds: float = 2.0) -> Path:
    """Drum loops and tones (mono and stereo, two rates), one level of subfolders."""
    for i in range(n):
        if i % 2:
            audio = drums(seconds, SR, channels=1 + i % 3 // 2, seed=i)
        else:
            audio = tone(seconds, SR, channels=1, freq=110.0 * (i + 1), seed=i)
            audio += 0.02 * i * np.random.default_rng(i).standard_normal(audio.shape).astype(np.float32)
        sub = folder / ("kit-a" if i < n // 2 else "kit-b")
        sub.mkdir(parents=True, exist_ok=True)
        sr = SR if i % 4 else 48000
        sf.write(sub / f"s{i}.{'flac' if i % 3 == 0 else 'wav'}", audio.T, sr, subtype="PCM_16")
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread avoids oversubscribing a shared CPU (10x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return make_samples(tmp_path_factory.mktemp("samples"))


def train(trainer: str, samples: Path, *args: str, name: str = "tiny") -> tuple[int, str]:
    cmd = commands()[trainer]
    result = CliRunner().invoke(
        cmd,
        [str(samples), "-n", name, "--epochs", "1", "--device", "cpu", "-q", *args],
        catch_exceptions=False,
    )
    return result.exit_code, result.output


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    return load_weights(path).tensors


# ---- end to end ----------------------------------------------------------------------------------


@pytest.mark.parametrize("trainer", ["texture", "grain"])
def test_trainer_writes_usable_weights_and_preset(trainer, samples, cakfx_home):
    import cakfx

    code, out = train(trainer, samples, "--epochs", "2")
    assert code == 0, out
    weights = cakfx_home / "weights" / "tiny.safetensors"
    wf = load_weights(weights, expect_kind=f"cak.{trainer}")
    rec = wf.training
    assert rec["profile"] == "fast" and "NOT the published recipe" in rec["profile_note"]
    assert rec["epochs"] == 2 and rec["seed"] == 42 and rec["dataset"]["files"] == 8
    assert set(rec["final_losses"]) >= {"g_loss"}
    assert all(np.isfinite(v) for v in rec["final_losses"].values())
    if trainer == "texture":
        assert {"global_low", "global_high", "alpha", "gamma"} <= set(wf.stats)
        assert wf.stats["global_low"] < wf.stats["global_high"]
        controls = rec["controls"]
        assert len(controls) == 8 and all(0.1 <= c["control"] <= 1.0 for c in controls)
        effect = cakfx.create_effect("cak.texture", weights="tiny", amount=1.0, device="cpu")
    else:
        flat = rec["flatness"]
        assert len(flat) == 8 and all(0.0 <= f["flatness"] <= 1.0 for f in flat)
        effect = cakfx.create_effect("cak.grain", weights="tiny", grain=-1.5, device="cpu")
    model = cakfx.load_model("tiny", device="cpu")
    assert not model.training

    audio = drums(1.0, SR, channels=2, seed=99)
    processed = effect(audio, SR)
    assert processed.shape == audio.shape and np.isfinite(processed).all()
    assert np.abs(processed - audio).mean() > 0

    # the ready preset: pinned to this file, and loads as a chain
    preset = cakfx_home / "presets" / "tiny.toml"
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    entry = tomllib.loads(preset.read_text())["chain"][0]
    assert entry["effect"] == f"cak.{trainer}" and entry["weights"] == "tiny"
    assert entry["sha256"] == sha256_file(weights)
    chain = cakfx.load_preset("tiny", device="cpu")
    assert chain(audio, SR).shape == audio.shape

    history = json.loads((cakfx_home / "training" / "tiny" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (cakfx_home / "training" / "tiny" / "history.png").is_file()


@pytest.mark.parametrize("trainer", ["texture", "grain"])
def test_same_seed_same_weights_and_resume_continues(trainer, samples, cakfx_home):
    code, _ = train(trainer, samples, "--epochs", "2", name="straight")
    assert code == 0
    code, _ = train(trainer, samples, "--epochs", "2", name="again")
    assert code == 0
    straight = tensors_of(cakfx_home / "weights" / "straight.safetensors")
    again = tensors_of(cakfx_home / "weights" / "again.safetensors")
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[k], again[k]) for k in straight)

    # 1 epoch, then --resume to 2: continues at epoch 2 and lands on the same weights
    code, _ = train(trainer, samples, "--checkpoint-every", "1", name="split")
    assert code == 0
    code, out = train(trainer, samples, "--epochs", "2", "--resume", name="split")
    assert code == 0, out
    assert "resuming from epoch 1" in out and "epochs 2..2" in out
    split = tensors_of(cakfx_home / "weights" / "split.safetensors")
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    history = json.loads((cakfx_home / "training" / "split" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]

    code, _ = train(trainer, samples, "--seed", "7", name="other")
    one = tensors_of(cakfx_home / "weights" / "split.safetensors")
    other = tensors_of(cakfx_home / "weights" / "other.safetensors")
    assert not all(torch.equal(one[k], other[k]) for k in one)


def test_ctrl_c_saves_a_checkpoint_and_resume_picks_it_up(samples, cakfx_home, monkeypatch):
    from cakfx.trainers.texture import TextureTrainer

    original = TextureTrainer.train_epoch

    def interrupted(self, epoch, bar):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, bar)

    monkeypatch.setattr(TextureTrainer, "train_epoch", interrupted)
    code, out = train("texture", samples, "--epochs", "3", name="stop")
    assert code == 130
    assert "interrupted after epoch 1" in out and "Traceback" not in out
    assert (cakfx_home / "training" / "stop" / "checkpoint.pt").is_file()
    assert not (cakfx_home / "weights" / "stop.safetensors").exists()

    monkeypatch.setattr(TextureTrainer, "train_epoch", original)
    code, out = train("texture", samples, "--epochs", "3", "--resume", name="stop")
    assert code == 0, out
    assert "resuming from epoch 1" in out
    assert load_weights(cakfx_home / "weights" / "stop.safetensors").training["epochs"] == 3


def test_rerun_uses_the_cache_without_decoding(samples, cakfx_home, monkeypatch):
    code, out = train("texture", samples, name="first")
    assert code == 0 and "0 reused, 8 decoded" in out

    def no_decoding(path, *a, **k):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr("cakfx.trainers.data.read_audio", no_decoding)
    code, out = train("texture", samples, name="second")
    assert code == 0, out
    assert "8 reused, 0 decoded" in out


def test_out_folder_unreadable_and_excluded_files(tmp_path, cakfx_home):
    folder = make_samples(tmp_path / "s", n=4)
    (folder / "notes.txt").write_text("not audio")
    (folder / "broken.wav").write_bytes(b"RIFF but not really a wav file")
    (folder / "skipme").mkdir()
    sf.write(folder / "skipme" / "x.wav", tone(1.0, SR, channels=1).T, SR)
    code, out = train("texture", folder, "--out", str(tmp_path / "w"), "--exclude", "skipme/*", name="o")
    assert code == 0, out
    assert "broken.wav" in out and "1 unreadable skipped" in out
    assert "1 non-audio skipped" in out and "1 excluded" in out
    weights = tmp_path / "w" / "o.safetensors"
    assert weights.is_file() and not (cakfx_home / "weights" / "o.safetensors").exists()
    assert load_weights(weights).training["dataset"]["files"] == 4
    # the preset points at the --out file by absolute path
    import cakfx

    chain = cakfx.load_preset("o", device="cpu")
    assert chain(tone(0.5, SR), SR).shape == (2, SR // 2)


# ---- one clear error -----------------------------------------------------------------------------


def _one_line_error(code: int, out: str) -> str:
    assert code != 0
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "Traceback" not in out and lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize("trainer", ["texture", "grain"])
def test_empty_folder_and_text_files_each_give_one_clear_error(trainer, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "the folder is empty" in _one_line_error(*train(trainer, empty))

    texts = tmp_path / "texts"
    (texts / "sub").mkdir(parents=True)
    for i in range(3):
        (texts / "sub" / f"readme{i}.txt").write_text("hello")
    line = _one_line_error(*train(trainer, texts))
    assert "no audio files found (3 non-audio files)" in line and str(texts) in line

    one = tmp_path / "one"
    one.mkdir()
    sf.write(one / "a.wav", tone(1.0, SR, channels=1).T, SR)
    line = _one_line_error(*train(trainer, one))
    assert "needs at least 2 audio files, found 1" in line

    line = _one_line_error(*train(trainer, tmp_path / "missing"))
    assert "no such folder" in line


def test_bad_options_are_one_line_errors(samples):
    assert "--resume: no checkpoint" in _one_line_error(*train("texture", samples, "--resume", name="never"))
    assert "plain name" in _one_line_error(*train("texture", samples, name="a/b"))
    assert "at least 1" in _one_line_error(*train("grain", samples, "--epochs", "0"))


# ---- pieces ---------------------------------------------------------------------------------------


def test_low_high_pairs_pair_lower_half_with_upper_half():
    from cakfx.trainers.data import low_high_pairs

    values = [0.5, 0.1, 0.9, 0.3, 0.7]
    assert low_high_pairs(values) == [(1, 4), (3, 2)]  # (0.1, 0.7), (0.3, 0.9); the median is left out


def test_texture_stats_are_histogram_percentiles():
    from cakfx.trainers.texture import percentile_stats

    values = [torch.linspace(0.0, 4.0, 100_001), torch.linspace(1.0, 5.0, 100_001)]
    stats = percentile_stats(values)
    both = torch.cat(values).numpy()
    lo, hi = np.percentile(both, [0.01, 99.99])
    bin_width = 5.0 / 10_000
    assert abs(stats["global_low"] - lo) <= 2 * bin_width
    assert abs(stats["global_high"] - hi) <= 2 * bin_width
    assert stats["computed_from_n_files"] == 2 and stats["alpha"] == 10.0 and stats["gamma"] == 0.85


def test_texture_segment_is_centred_faded_and_padded():
    from cakfx.trainers.texture import fade_segment

    long = torch.ones(1000)
    seg = fade_segment(long, 400, 50)
    assert seg.shape == (400,) and seg[0] == 0 and seg[-1] == 0 and torch.all(seg[50:-50] == 1)
    ramp = torch.arange(1000, dtype=torch.float32)
    assert fade_segment(ramp, 400, 0)[0] == 300  # the centre 400 samples
    short = fade_segment(torch.ones(100), 400, 50)
    assert short.shape == (400,) and torch.all(short[100:] == 0) and short[50] == 1


def test_find_audio_refuses_a_file(tmp_path):
    from cakfx.trainers.data import find_audio

    f = tmp_path / "a.wav"
    f.write_bytes(b"")
    with pytest.raises(CakfxError, match="not a folder"):
        find_audio(f)


def test_paper_critic_and_discriminator_match_the_published_checkpoints(reference):
    """The paper profile's networks have exactly the published layers (names and shapes)."""
    from cakfx.checkpoints import load_research_checkpoint
    from cakfx.trainers.grain import PROFILES as GRAIN
    from cakfx.trainers.grain import Discriminator
    from cakfx.trainers.texture import PROFILES as TEXTURE
    from cakfx.trainers.texture import RealismCritic

    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items()}

    critic = load_research_checkpoint(reference / "texture" / "final_wgan_grain.pt")["critic"]
    published = {k: v for k, v in critic.items() if not k.startswith("detector.")}  # the shared detector
    assert shapes(RealismCritic(TEXTURE["paper"]["critic_channels"]).state_dict()) == shapes(published)

    disc = load_research_checkpoint(reference / "grain" / "final_true_cak.pt")["discriminator"]
    ours = Discriminator(GRAIN["paper"]["disc_channels"], GRAIN["paper"]["auditor_channels"])
    assert shapes(ours.state_dict()) == shapes(disc)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["texture", "grain"])
def test_paper_profile_runs_one_epoch(trainer, tmp_path, cakfx_home):
    """The published recipes end to end (15 s texture segments are heavy on a CPU: slow)."""
    folder = make_samples(tmp_path / "s", n=4, seconds=1.0)
    code, out = train(trainer, folder, "--profile", "paper", name="paper")
    assert code == 0, out
    rec = load_weights(cakfx_home / "weights" / "paper.safetensors").training
    assert rec["profile"] == "paper" and rec["profile_note"].startswith("published")
    assert rec["epochs"] == 1 and all(np.isfinite(v) for v in rec["final_losses"].values())


def test_corpus_cuts_tracks_into_even_clips_and_links_samples(tmp_path, monkeypatch):
    from cakfx.trainers import corpus

    assert corpus.clip_starts(100, 10, 4) == [7, 32, 57, 82]  # centres at 1/8, 3/8, 5/8, 7/8
    assert corpus.clip_starts(8, 10, 4) == [0]  # a track shorter than a clip is one clip
    loops, music = tmp_path / "loops", tmp_path / "music"
    loops.mkdir()
    music.mkdir()
    for i in range(2):
        sf.write(loops / f"loop{i}.wav", drums(0.5, channels=1, seed=i).T, 44100)
    sf.write(music / "track.wav", tone(4.0, channels=2).T, 44100)
    monkeypatch.setattr(corpus, "SOURCES", {"sonic-pi": loops, "wesnoth": music})
    out = tmp_path / "corpus"
    assert corpus.build(out, clips=3, clip_s=1.0) == {"sonic-pi": 2, "wesnoth": 3}
    clips = sorted((out / "wesnoth").iterdir())
    assert [sf.info(c).frames for c in clips] == [44100] * 3
    assert all(p.is_symlink() for p in (out / "sonic-pi").iterdir())
    monkeypatch.setattr(corpus, "read_audio", None)  # a rerun finds every clip and decodes nothing
    assert corpus.build(out, clips=3, clip_s=1.0) == {"sonic-pi": 2, "wesnoth": 3}


def test_grain_fast_profile_pairs_both_ways_and_keep_terms_hold_direction():
    from cakfx.trainers.grain import PROFILES, keep_terms

    assert PROFILES["fast"]["both_directions"] and not PROFILES["paper"]["both_directions"]
    assert PROFILES["paper"]["keep_weights"] == (0.0, 0.0, 0.0)  # the published loss, untouched
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 16, 1).repeat(2, 1, 1, 8)
    flatter = x * 0.5  # less spread across bands
    g = torch.tensor([1.0, -1.0])
    terms = keep_terms(x, flatter, g)
    assert terms["direction_loss"] > 0  # the -g sample asked for more spread and got less
    assert keep_terms(x, flatter, torch.tensor([1.0, 1.0]))["direction_loss"] == 0
    assert keep_terms(x, x, g)["envelope_loss"] == 0 and keep_terms(x, x + 0.3, g)["floor_loss"] > 0
