"""cak.grain: model fidelity, checkpoint import, the node's contract, reconstruction and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import cakfx
from cakfx.dsp import mel
from cakfx.dsp.level import DRIVE_TOLERANCE_LU
from cakfx.dsp.loudness import integrated_loudness, true_peak_db
from cakfx.errors import CakfxError
from cakfx.plugins.grain import asks, import_checkpoint, mask
from cakfx.plugins.grain import node as grain_node
from cakfx.plugins.grain.model import GrainProcessor
from cakfx.plugins.grain.node import GrainNode
from cakfx.registry import get_effect
from cakfx.weights import load_weights, save_weights
from tests.fakes import spools_find_the_disk_full
from tests.signals import drums, tone

GRAINS = ("-3.0", "-1.5", "+0.0", "+1.5", "+3.0")
SR = 44100


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A seeded, untrained grain model (scales raised so it changes things), saved as weights."""
    torch.manual_seed(0)
    model = GrainProcessor()
    with torch.no_grad():
        for layer in (model.cak1, model.cak2, model.cak3):
            layer.scale.fill_(1.0)
    path = tmp_path_factory.mktemp("w") / "random-grain.safetensors"
    return str(save_weights(path, model.state_dict(), kind="cak.grain", training={"source": "test"}))


@pytest.fixture(scope="module")
def ref_weights(reference, tmp_path_factory):
    tensors, stats, training = import_checkpoint(reference / "grain" / "final_true_cak.pt")
    path = tmp_path_factory.mktemp("w") / "ref-grain.safetensors"
    return str(save_weights(path, tensors, kind="cak.grain", stats=stats, training=training))


def grain(weights, **params):
    return cakfx.create_effect("cak.grain", device="cpu", weights=weights, **params)


def frame_rms_db(y: np.ndarray, hop: int = 512) -> np.ndarray:
    frames = y[: y.size // hop * hop].reshape(-1, hop)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)


# ---- the model and its weights -----------------------------------------------------------


def test_imported_model_reproduces_the_original(ref_weights, reference):
    io = np.load(reference / "grain" / "original_model_io.npz")
    model = cakfx.load_model(ref_weights, device="cpu")
    assert not model.training
    x = torch.from_numpy(io["input_norm"])[None, None]
    worst = 0.0
    for g in GRAINS:
        with torch.inference_mode():
            out = model(x, torch.tensor([float(g)]))[0, 0].numpy()
        worst = max(worst, float(np.abs(out - io[f"output_grain_{g}"]).max()))
    assert worst <= 1e-4


def test_import_keeps_only_the_processor(ref_weights):
    wf = load_weights(ref_weights, expect_kind="cak.grain")
    assert set(wf.tensors) == set(GrainProcessor().state_dict())
    learned = [t for k, t in wf.tensors.items() if "running" not in k and "num_batches" not in k]
    assert sum(t.numel() for t in learned) == 13400
    assert wf.training["source"] == "research checkpoint"


def test_import_rejects_files_that_are_not_grain_checkpoints(tmp_path, reference):
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(CakfxError, match="junk.pt: not a loadable checkpoint") as err:
        import_checkpoint(junk)
    assert "\n" not in str(err.value)
    with pytest.raises(CakfxError, match="not a CAK grain checkpoint") as err:
        import_checkpoint(reference / "texture" / "final_wgan_grain.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(CakfxError, match="checkpoint not found"):
        import_checkpoint(tmp_path / "missing.pt")


def test_weights_of_another_kind_are_refused(tmp_path):
    other = save_weights(tmp_path / "tex.safetensors", {"w": torch.zeros(3)}, kind="cak.texture")
    with pytest.raises(CakfxError, match="weights are for cak.texture, not cak.grain"):
        grain(str(other))
    wrong = save_weights(tmp_path / "odd.safetensors", {"w": torch.zeros(3)}, kind="cak.grain")
    with pytest.raises(CakfxError, match="not grain model weights"):
        grain(str(wrong))


def test_registration_and_parameter_checks(random_weights):
    spec = get_effect("cak.grain")
    assert {p.name for p in spec.params} == {"grain", "weights", "reconstruction", "level", "ceiling_db"}
    assert spec.param_map["level"].default == "match" and spec.param_map["ceiling_db"].default == -1.0
    assert "latency" in spec.description and "not for live use" in spec.description
    assert "bypass" in spec.description and "brighter and flatter" in spec.description and spec.summary
    assert spec.param_map["weights"].default == "cak-grain-default"
    with pytest.raises(CakfxError, match="above the maximum"):
        grain(random_weights, grain=3.5)
    with pytest.raises(CakfxError, match="reconstruction"):
        grain(random_weights, reconstruction="vocoder")
    with pytest.raises(CakfxError, match="level"):
        grain(random_weights, level="loud")
    node = grain(random_weights, grain=0.5, level="original", ceiling_db=-3)
    assert repr(node) == (
        "<cakfx.GrainNode grain=0.5 weights='random-grain' reconstruction='phase' "
        "level='original' ceiling_db=-3 device='cpu'>"
    )
    with pytest.raises(CakfxError, match="unknown weights 'nope'"):
        grain("nope")

def test_missing_default_weights_say_how_to_get_them(monkeypatch, tmp_path):
    import cakfx.weights

    monkeypatch.setattr(cakfx.weights, "bundled_dir", lambda: tmp_path)  # nothing bundled, nothing imported
    with pytest.raises(CakfxError, match="cakfx weights import .* --kind grain -n cak-grain-default"):
        cakfx.create_effect("cak.grain")


# ---- the node's contract -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_grain_is_a_bit_exact_bypass(random_weights, dtype):
    node = grain(random_weights, grain=0.0)
    x = tone(0.3, SR, 2, dtype=dtype)
    for audio in (x, x.T, x[0]):
        out = node(audio, SR)
        assert out.dtype == audio.dtype and out.shape == audio.shape
        assert np.array_equal(out, audio)


def test_layouts_dtypes_and_independent_channels(random_weights):
    node = grain(random_weights, grain=-1.0, level="off")
    x = drums(0.8, SR, channels=2)
    first = node(x, SR)
    assert first.shape == x.shape and first.dtype == np.float32 and np.isfinite(first).all()
    assert not np.allclose(first, x, atol=1e-3)
    np.testing.assert_allclose(node(x.T, SR), first.T, atol=1e-6)
    out64 = node(x.astype(np.float64), SR)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, first, atol=1e-5)
    # every channel is processed on its own: channel 1 alone gives the same channel 1
    np.testing.assert_allclose(node(x[1], SR), first[1], atol=1e-5)


@pytest.mark.parametrize("sr", [22050, 48000, 96000])
def test_any_sample_rate(random_weights, sr):
    node = grain(random_weights, grain=1.5)
    x = tone(0.6, sr, 1, freq=300.0)
    out = node(x, sr)
    assert out.shape == x.shape and np.isfinite(out).all()
    rms_in, rms_out = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(out**2))
    assert rms_out == pytest.approx(rms_in, rel=0.1)  # loudness matched: RMS close on a steady tone
    assert not np.allclose(out, x, atol=1e-3)


@pytest.mark.parametrize("samples", [1, 100, 2047, 2048, 5000])
@pytest.mark.parametrize("mode", ["phase", "griffinlim"])
def test_short_inputs_are_finite_and_keep_their_length(random_weights, samples, mode):
    x = tone(1.0, SR, 2)[:, :samples]
    out = grain(random_weights, grain=-2.0, reconstruction=mode)(x, SR)
    assert out.shape == x.shape and np.isfinite(out).all()


@pytest.mark.parametrize("mode", ["phase", "griffinlim"])
def test_silence_stays_silent(random_weights, mode):
    x = np.zeros((2, SR // 2), np.float32)
    out = grain(random_weights, grain=3.0, reconstruction=mode)(x, SR)
    assert out.shape == x.shape and np.isfinite(out).all() and np.abs(out).max() < 1e-6


def test_extreme_grain_stays_finite_and_at_the_input_level(random_weights):
    x = drums(1.0, SR)
    for g in (-3.0, 3.0):
        out = grain(random_weights, grain=g)(x, SR)
        assert np.isfinite(out).all() and np.abs(out).max() <= 10 ** (-1 / 20) + 1e-3  # the -1 dB ceiling
        assert np.sqrt(np.mean(out**2)) > 0.1 * np.sqrt(np.mean(x**2))
        original = grain(random_weights, grain=g, level="original")(x, SR)
        assert np.abs(original).max() <= 0.95 + 1e-6  # the original's peak scaling


def test_rounds_and_batches_do_not_change_the_result(random_weights, monkeypatch):
    x = drums(3.5, SR, channels=2)  # 302 frames: two windows per channel
    node = grain(random_weights, grain=1.2)
    whole = node(x, SR)
    monkeypatch.setattr(grain_node, "SEGMENTS_PER_ROUND", 1)
    monkeypatch.setattr(grain_node, "WINDOW_BATCH", 1)
    np.testing.assert_allclose(node(x, SR), whole, atol=1e-5)


@pytest.mark.slow
def test_long_stereo_file_in_several_blocks(random_weights, monkeypatch):
    x = drums(50.0, 48000, channels=2)  # > 2 blocks of frames at 44.1 kHz, many windows
    node = grain(random_weights, grain=-1.0)
    out = node(x, 48000)
    assert out.shape == x.shape and np.isfinite(out).all()
    monkeypatch.setattr(grain_node, "SEGMENTS_PER_ROUND", 3)
    np.testing.assert_allclose(node(x, 48000), out, atol=1e-5)


def test_window_layout():
    assert grain_node.WINDOW_FRAMES == 259  # 3 s of centred frames, as the original's chunks
    assert grain_node.WINDOW_HOP == 216  # 0.5 s crossfades
    w0 = grain_node.crossfade_weights(259, False, True, 43)
    w1 = grain_node.crossfade_weights(259, True, True, 43)
    torch.testing.assert_close(w0[216:] + w1[:43], torch.ones(43, dtype=torch.float64))


def test_griffinlim_is_seeded_and_peak_limited(random_weights):
    x = drums(0.6, SR) * 1.5
    node = grain(random_weights, grain=1.0, reconstruction="griffinlim")
    first, second = node(x, SR), node(x, SR)
    assert np.array_equal(first, second)
    assert np.abs(first).max() <= 10 ** (-1 / 20) + 1e-3


def test_phase_keeps_the_input_when_the_model_asks_for_no_change():
    class Identity(torch.nn.Module):
        def forward(self, x, grain):
            return x

    x = drums(1.5, SR, channels=2)
    out = GrainNode(Identity(), grain=1.0, level="off", device="cpu")(x, SR)
    # only bins below the model's -80 dB floor move (up to the floor the model saw): -60 dB or less
    error_db = 20 * np.log10(np.sqrt(np.mean((out - x) ** 2)) / np.sqrt(np.mean(x**2)))
    assert error_db < -50



class Flatten(torch.nn.Module):
    """Asks for every band halfway to the middle of the window's dB range (up to +-40 dB changes)."""

    def forward(self, x, grain):
        return 0.5 * x


def test_the_first_frames_get_the_whole_ask():
    x = tone(1.0, SR, channels=1)  # steady from its first sample: the ask is the same throughout
    out = GrainNode(Flatten(), grain=1.0, level="off", device="cpu")(x, SR)

    def db(a):
        return 10 * np.log10(mel.mel_power(np.asarray(a, np.float32), SR).numpy() + 1e-12)

    change = db(out) - db(x)  # (1, bands, frames)
    heard = db(x)[..., 40:60].mean(-1) > db(x).max() - 50  # bands with content
    steady = change[..., 40:60].mean(-1)[heard]
    for frame in (1, 2):  # ramped from no change (6 dB a frame up, 12 down): 4.3 dB off on average
        assert np.abs(change[..., frame][heard] - steady).mean() < 2.0

# ---- behaviour with the published model ------------------------------------------------------


def test_no_level_steps_at_window_borders(ref_weights):
    t = np.arange(8 * SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)).astype(np.float32)
    out = grain(ref_weights, grain=1.5)(x, SR)
    inner = slice(20, -20)  # away from the signal's own start and end
    jump_in = np.abs(np.diff(frame_rms_db(x)[inner])).max()
    jump_out = np.abs(np.diff(frame_rms_db(out)[inner])).max()
    assert jump_out < jump_in + 0.25, (jump_in, jump_out)  # with a 3-frame overlap: 3.8 dB steps


def test_phase_output_follows_the_models_ask(ref_weights, reference, monkeypatch):
    io = np.load(reference / "grain" / "original_model_io.npz")
    model = cakfx.load_model(ref_weights, device="cpu")
    db = mel.power_to_db(mel.mel_power(io["input_chunk"], SR))[:, :256]
    norm, low, high = mel.normalise_window(db)
    with torch.inference_mode():
        asked = mel.denormalise_window(model(norm[None, None], torch.tensor([1.5]))[0, 0], low, high)

    # re-baselined (issue 9): bins the input has more than 60 dB below its peak keep the input (the
    # model saw its -80 dB floor there; following the ask lifted them ~34 dB into noise), so the
    # error is taken over the bins the input has, where the node does follow the ask
    heard = db > -60

    def error(audio):
        got = mel.power_to_db(mel.mel_power(np.asarray(audio, np.float32), SR), ref=1.0, top_db=None)
        diff = (got[:, :256] - asked)[(asked >= asked.max() - 60) & heard]
        return float((diff - diff.mean()).abs().mean())

    # the whole excerpt, as the original pipeline's output was made (a 3 s input alone would end in
    # a window of silence crossfading over its last 0.5 s: the grid is fixed so streams equal one-shot)
    excerpt, _ = sf.read(reference / "audio" / "lux_excerpt_6s_mono.wav", dtype="float32")
    np.testing.assert_array_equal(excerpt[: io["input_chunk"].size], io["input_chunk"])
    node = grain(ref_weights, grain=1.5, level="original")  # the original's level stage: no limiter
    ours = node(excerpt, SR)
    original, _ = sf.read(reference / "grain" / "original_output_grain_+1.5_griffinlim_seed0.wav")
    assert error(io["input_chunk"]) > 8  # the model asks for a big change ...
    assert error(ours) < error(original) < 1.5  # ... which we follow at least as closely as the original
    monkeypatch.setattr(grain_node, "CORRECTIONS", 1)
    once = error(node(excerpt, SR))
    assert error(ours) + 0.03 < once  # the second correction pass earns its keep (0.04 dB)
    monkeypatch.setattr(grain_node, "CORRECTIONS", 0)
    assert once + 0.1 < error(node(excerpt, SR))  # ... and the first (0.3 dB)


def test_positive_grain_raises_flatness(ref_weights, reference):
    from cakfx.measure import spectral_flatness

    audio, _ = sf.read(reference / "audio" / "lux_excerpt_6s_mono.wav", dtype="float32")
    audio = audio[: 2 * SR]
    before = spectral_flatness(audio)
    low, high = (spectral_flatness(grain(ref_weights, grain=g)(audio, SR)) for g in (0.5, 1.5))
    assert before < low < high


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_import_then_process_with_set(reference, tmp_path):
    from cakfx.cli import cli

    runner = CliRunner()
    ckpt = str(reference / "grain" / "final_true_cak.pt")
    result = runner.invoke(cli, ["weights", "import", ckpt, "--kind", "grain", "--name", "my-grain"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["weights", "list"])
    assert "my-grain" in listed.output and "cak.grain" in listed.output
    model = cakfx.load_model("my-grain", device="cpu")
    assert isinstance(model, GrainProcessor) and not model.training
    bad = runner.invoke(cli, ["weights", "import", str(reference / "texture" / "final_wgan_grain.pt"),
                              "--kind", "grain", "--name", "oops"])
    assert bad.exit_code != 0 and "not a CAK grain checkpoint" in bad.output

    src = tmp_path / "in"
    src.mkdir()
    x = drums(1.0, 48000, channels=2)
    sf.write(src / "loop.wav", x.T, 48000, subtype="FLOAT")
    preset = tmp_path / "grain.toml"
    preset.write_text('[preset]\nname = "g"\n\n[[chain]]\nid = "grain"\neffect = "cak.grain"\n'
                      'weights = "my-grain"\ngrain = 1.5\n')
    out = tmp_path / "out"
    result = runner.invoke(cli, ["process", str(src), "-p", str(preset), "-o", str(out), "--device", "cpu",
                                 "--set", "grain.grain=-1.5", "-q"])
    assert result.exit_code == 0, result.output
    y, sr = sf.read(out / "loop.wav", dtype="float32", always_2d=True)
    assert sr == 48000 and y.shape == x.T.shape
    expected = grain("my-grain", grain=-1.5)(x, 48000)
    np.testing.assert_allclose(y.T, expected, atol=1e-5)


# ---- no damage: clicks, empty bands, the mask's range ------------------------------------------


def spectrogram_db(y: np.ndarray, floor_db: float = -80.0) -> np.ndarray:
    """Power spectrogram (channels summed) in dB re its peak, floored ``floor_db`` below it."""
    power = mel.power_spectrogram(np.atleast_2d(y).astype(np.float64)).sum(0).numpy()
    db = 10 * np.log10(power / power.max() + 1e-30)
    return np.maximum(db, floor_db)


def click_figure(y: np.ndarray) -> float:
    """Largest frame-to-frame broadband rise: the mean over bins of each frame's dB rise, at its worst."""
    return float(np.maximum(np.diff(spectrogram_db(y), axis=1), 0.0).mean(axis=0).max())


def test_a_slow_pad_gets_no_click_and_keeps_its_level():
    from tools.demo import chord_pad

    x = chord_pad()  # 0.5 s attack and release: corners at 0.5 s and 3.5 s used to click
    out = grain("cak-grain-default", grain=1.5)(x, SR)
    assert np.isfinite(out).all()
    assert click_figure(out) < click_figure(x) + 3.0, (click_figure(x), click_figure(out))  # was +19 dB
    rms = [20 * np.log10(np.sqrt(np.mean(a**2))) for a in (x, out)]
    assert abs(rms[1] - rms[0]) < 1.0, rms  # was 21 dB quieter (one click pulled the file down)


def click_excess(x: np.ndarray, y: np.ndarray) -> float:
    """Largest broadband rise of the output beyond the input's (per bin, the dB rise from one
    1024-sample frame to the next minus the input's, median over bins): a step of the gain in time."""
    def db(a):
        power = mel.power_spectrogram(np.atleast_2d(a).astype(np.float64), 1024, 256).numpy()
        return 10 * np.log10(power + 1e-30)

    dx, dy = db(x), db(y)
    floor = dx.max() - 120.0
    dx, dy = np.maximum(dx, floor), np.maximum(dy, floor)
    return float(np.median(np.diff(dy, axis=-1) - np.diff(dx, axis=-1), axis=-2).max())


def test_a_sound_cut_mid_note_gets_no_burst_at_its_end():
    from tools.demo import chord_pad

    x = chord_pad()[:, : 3 * SR]  # a loop or excerpt: it ends mid-sustain
    out = grain("cak-grain-default", grain=1.5)(x, SR)
    # the model filled the drop into the silence after the end (+20 dB in the last frames): 19 dB
    assert click_excess(x, out) < 8.0, click_excess(x, out)



def test_highs_brightened_only_while_a_burst_plays_get_no_gain_step():
    from scipy.signal import butter, sosfilt

    # a tone with three hiss bursts: the band above 6 kHz has content only while a burst plays
    rng = np.random.default_rng(7)
    t = np.arange(3 * SR) / SR
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)
    hiss = sosfilt(butter(4, 6000, btype="highpass", fs=SR, output="sos"), rng.standard_normal(t.size))
    for start in (0.5, 1.3, 2.1):
        a, n = int(start * SR), int(0.15 * SR)
        x[a : a + n] += 0.05 * hiss[a : a + n] * np.exp(-np.arange(n) / (0.04 * SR))
    x = x[None].astype(np.float32)
    out = grain("cak-grain-default", grain=1.5)(x, SR)
    assert gain_step_db(x, out) < 3.0  # 0.7 dB


def gain_step_db(x: np.ndarray, out: np.ndarray) -> float:
    """The largest gain step in time of ``out`` over ``x`` (dB; bench/quality.py's excess_db, mono)."""
    def db(a):
        power = mel.power_spectrogram(np.atleast_2d(a).astype(np.float64), 1024, 256)[0].numpy()
        return 10 * np.log10(power + 1e-30)  # (bins, frames)

    dx, dy = db(x), db(out)
    floor = dx.max() - 100.0
    dx, dy = np.maximum(dx, floor), np.maximum(dy, floor)
    # each bin's static gain where it has content: the bursts' highs come up ~14 dB, an EQ; the
    # median over all frames (0 dB for bins empty most of the time) read it as a 12 dB gain step
    # at every burst (bench/quality.py's excess_db did, until it took the static gain this way)
    content = dx > floor + 40.0
    static = np.array([np.median((dy - dx)[k, content[k]]) if content[k].any() else 0.0
                       for k in range(dx.shape[0])])
    dy = np.maximum(dy, floor + static[:, None])
    rise_x, rise_y = np.diff(dx, axis=-1), np.diff(dy, axis=-1)
    near = np.max([np.roll(rise_x, k, axis=-1) for k in range(-2, 3)], axis=0)  # onsets moved <= 2 frames
    return float(np.median(rise_y - near, axis=0).max())


def test_a_drum_loop_gets_no_gain_steps_at_its_onsets():
    from tools.demo import drum_loop

    x = drum_loop()
    # the model cuts the hats' decays between the hits and raises the hits: a gain step at onsets
    followed = gain_step_db(x, grain("cak-grain-default", grain=1.5, level="original")(x, SR))
    smoothed = gain_step_db(x, grain("cak-grain-default", grain=1.5)(x, SR))
    assert smoothed < 2.0 < followed, (smoothed, followed)  # 0.5 dB, 10.3 followed

def test_a_hot_mix_keeps_its_loudness():
    from tools.demo import chord_pad, drum_loop

    drums, pad = drum_loop(), chord_pad()
    mix = np.broadcast_to(drums, pad.shape) + pad
    mix = (mix / np.abs(mix).max() * 10 ** (-0.1 / 20)).astype(np.float32)  # peaks at -0.1 dBFS
    out = grain("cak-grain-default", grain=1.5)(mix, SR)
    # each hit's highs jumped from no gain to +20-30 dB in one frame: peaks 20 dB over the input's,
    # and the limiter took the mix down 6.7 LU; ramped (slew_limit) about 2.2 LU; the grain weights
    # trained on music both ways brighten a hot mix's peaks more (hats' highs up 20-28 dB, peaks
    # 8.6 dB over the ceiling once matched): 3.55 LU; with the loudness rise of the boosts bounded
    # (asks.cap_loudness_rise) 2.7 LU; the level stage now drives its limiter until the matched
    # loudness is met to within DRIVE_TOLERANCE_LU
    d_lu = integrated_loudness(out, SR) - integrated_loudness(mix, SR)
    assert abs(d_lu) < DRIVE_TOLERANCE_LU + 0.2, d_lu
    assert true_peak_db(out) <= -1.0 + 0.01  # the ceiling holds in true peak (was -0.87 dBTP)


def band_db(y: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per 2048-sample frame (hop 512), the power (dB) of ``y``'s bins in ``low .. high`` Hz."""
    power = mel.power_spectrogram(np.atleast_2d(y)[:1].astype(np.float64))[0].numpy()
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    return 10 * np.log10(power[(freqs >= low) & (freqs < high)].sum(0) + 1e-12)


def test_brightening_keeps_the_kick():
    from tools.demo import drum_loop

    x = drum_loop()
    out = grain("cak-grain-default", grain=1.5)(x, SR)
    kick_in, kick_out = band_db(x, 40, 120), band_db(out, 40, 120)
    hits = kick_in > kick_in.max() - 20.0
    # the model cut the kick 10 dB and the loudness match, carried by the brightened hats, 7.5 more
    assert np.median(kick_out[hits] - kick_in[hits]) > -6.0  # -4.8 dB (was -17.5)
    hats_in, hats_out = band_db(x, 6000, 16000)[2:-2], band_db(out, 6000, 16000)[2:-2]
    heard = hats_in > hats_in.max() - 30.0  # (the file's first and last frames: half padding)
    change = hats_out[heard] - hats_in[heard]
    assert np.median(change) > 2.0  # still brighter: +3.2 dB (+4.4 before)
    assert change.min() > -3.0  # the hats between the snares are not cut: -0.8 dB (was -6.6)


def test_the_fidelity_path_follows_the_models_low_cuts():
    from tools.demo import drum_loop

    x = drum_loop()
    kept = grain("cak-grain-default", grain=1.5, level="off")(x, SR)
    engine = grain_node.GrainEngine(cakfx.load_model("cak-grain-default", device="cpu"), 1.5, 1,
                                    torch.device("cpu"))  # as level="original" builds it
    engine.feed(x)
    followed = engine.run(final=True)[:, : x.shape[-1]]
    kick_in = band_db(x, 40, 120)
    hits = kick_in > kick_in.max() - 20.0
    assert np.median(band_db(kept, 40, 120)[hits] - kick_in[hits]) > -3.0
    assert np.median(band_db(followed, 40, 120)[hits] - kick_in[hits]) < -8.0  # the model's own cut


def test_smoothing_in_time_moves_the_gain_where_the_band_is_quiet():
    power = torch.full((1, 2, 20), 1e-8)
    power[..., 10:] = 1e-2  # an onset at frame 10: 60 dB louder from there on
    change = torch.full((1, 2, 20), -8.0)
    change[..., 10:] = 2.0  # the model cut the gap and raised the hit: a 10 dB step at the onset
    weight = torch.ones_like(change)
    weight[:, 1] = 0.0  # a band under the model's floor keeps the input
    smoothed = asks.smooth_in_time(change, power, weight)
    assert torch.allclose(smoothed[0, 0, 10:], change[0, 0, 10:], atol=1e-3)  # the hit keeps its gain
    assert float(smoothed[0, 0, 9]) > 1.9  # the quiet frame before it takes the hit's
    assert float(smoothed[0, 0, 9 - asks.SMOOTH_FRAMES]) == -8.0  # beyond the reach, unchanged
    assert torch.equal(smoothed[0, 1], change[0, 1])


def test_boosts_are_scaled_to_bound_the_loudness_rise():
    power = torch.full((2, mel.N_MELS, 4), 1e-4)
    change = torch.zeros(2, mel.N_MELS, 4)
    change[0, 80:] = 30.0  # the highs raised 30 dB: far over the bound
    change[1, 80:] = 0.5  # within it
    change[:, :10] = -1.0
    capped = asks.cap_loudness_rise(change, power)
    assert torch.equal(capped[1], change[1]) and torch.equal(capped[:, :10], change[:, :10])
    weights = torch.as_tensor(asks._loudness_weights(mel.N_MELS, 44100))[:, None]
    rise = 10 * torch.log10((weights * 10 ** (capped[0].double() / 10)).sum() / (weights.sum() * 4))
    assert abs(float(rise) - asks.MAX_RISE_DB) < 0.01
    assert 0.0 < float(capped[0, 100, 0]) < 30.0


@pytest.mark.parametrize("seed", range(4))
def test_the_loudness_cap_takes_the_largest_scale_step_under_the_bound(seed):
    # the scale a 14-step bisection finds: a multiple of 2^-14, the next one over the bound
    g = torch.Generator().manual_seed(seed)
    power = torch.rand(3, mel.N_MELS, 40, generator=g) ** 4
    change = torch.randn(3, mel.N_MELS, 40, generator=g) * (6.0 + 6.0 * seed) + 4.0
    capped = asks.cap_loudness_rise(change, power)
    weights = torch.as_tensor(asks._loudness_weights(mel.N_MELS, 44100))[:, None]

    def rise(window: int, scale: float) -> float:
        db = change[window].double().clamp_max(0.0) + scale * change[window].double().clamp_min(0.0)
        total = (weights * power[window].double()).sum()
        return float(10 * torch.log10((weights * power[window].double() * 10 ** (db / 10)).sum() / total))

    grid = 2.0 ** 14
    for window in range(3):
        boosted = change[window] > 1.0
        scale = float((capped[window][boosted] / change[window][boosted]).median())
        if rise(window, 1.0) <= asks.MAX_RISE_DB:
            assert scale == 1.0
            continue
        k = round(scale * grid)
        assert abs(scale * grid - k) < 1e-2
        assert rise(window, k / grid) <= asks.MAX_RISE_DB < rise(window, (k + 1) / grid)


def test_slew_limit_ramps_the_gain():
    boost = torch.tensor([[0.0, 30.0, 30.0, 30.0, 30.0, 30.0, -30.0, -30.0, -30.0, 0.0]])
    limited, last = mask.slew_limit(boost, np.zeros(1))
    assert (mask.SLEW_UP_DB, mask.SLEW_DOWN_DB) == (6.0, 12.0)
    expected = [0.0, 6.0, 12.0, 18.0, 24.0, 30.0, 18.0, 6.0, -6.0, 0.0]  # up 6 dB, down 12 dB a frame
    torch.testing.assert_close(limited[0], torch.tensor(expected))
    assert last.tolist() == [expected[-1]]


def test_frames_running_into_digital_silence_are_marked():
    x = torch.zeros(1, 8 * grain_node.HOP + grain_node.N_FFT)
    x[:, : 4 * grain_node.HOP] = 0.1  # sound, then digital silence
    marked = grain_node.runs_into_silence(x)[0].tolist()
    # frames whose window holds sound and ends in silence; frames fully in sound or silence are not
    assert marked == [False, True, True, True, False, False, False, False, False]


def test_a_pads_sub_bass_skirts_are_not_lifted():
    from tools.demo import chord_pad

    x = chord_pad()
    out = grain("cak-grain-default", grain=1.5)(x, SR)

    def db(a):  # power spectrogram, channels summed, dB
        power = mel.power_spectrogram(np.atleast_2d(a).astype(np.float64)).sum(0).numpy()
        return 10 * np.log10(power + 1e-30)

    dx, dy = db(x), db(out)
    skirts = np.linspace(0, SR / 2, 1025) < 80.0  # the partials' skirts, ~69 dB under the frame's peak
    held = slice(60, 300)  # the sustain
    assert (dx[skirts, held] - dx[:, held].max(0)).mean() < -60.0
    lift = (dy[skirts, held] - dx[skirts, held]).mean()
    assert lift < 6.0, lift  # raised with their mel band: +22 dB


def test_bins_far_under_their_frames_peak_get_no_boost():
    power = torch.tensor([[1.0], [1e-4], [1e-6], [1e-7], [1e-9]])  # 0, -40, -60, -70, -90 dB re the peak
    low, high = mask.BIN_FLOOR_DB
    expected = [mask.MAX_BOOST_DB * min(1.0, max(0.0, (r - low) / (high - low)))
                for r in (0.0, -40.0, -60.0, -70.0, -90.0)]
    torch.testing.assert_close(mask.bin_boost_cap(power)[:, 0], torch.tensor(expected))
    fb = mel.mel_filterbank(SR, dtype=torch.float64)
    spectrum = torch.rand(1025, 4, dtype=torch.float64) + 1e-3
    spectrum[:40] *= 1e-8  # the lowest bins: 80 dB under the rest
    cap = mask.bin_boost_cap(spectrum)
    gain = mask.refine_mask(spectrum, fb @ spectrum * 1e3, mel.BandedFilterbank(fb), cap_db=cap)
    assert (20 * torch.log10(gain[:40])).max() <= 1e-9  # asked +30 dB everywhere, these get none


def test_empty_bands_are_not_lifted():
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(3)
    # band-limited noise (speech-like: nothing above 3 kHz) over a quiet sub-bass-free floor
    x = sosfilt(butter(12, [300, 3000], btype="band", fs=SR, output="sos"), rng.standard_normal(3 * SR))
    x = (0.3 * x / np.abs(x).max()).astype(np.float32)
    out = grain("cak-grain-default", grain=1.5)(x, SR)
    freqs = np.linspace(0, SR / 2, 1025)
    for lo, hi in ((6000, 20000), (0, 60)):
        band = (freqs >= lo) & (freqs < hi)
        before = spectrogram_db(x, -120)[band].mean()
        after = spectrogram_db(out, -120)[band].mean()
        assert after < max(before, -100.0) + 6.0, (lo, hi, before, after)  # was lifted by 45 and 80 dB


def test_the_masks_gain_range_is_bounded():
    power = torch.rand(1025, 6, dtype=torch.float64) + 1e-3
    fb = mel.mel_filterbank(SR, dtype=torch.float64)
    produced = fb @ power
    for factor, bound in ((1e9, mask.MAX_BOOST_DB), (1e-9, -mask.MAX_CUT_DB)):
        gain = mask.refine_mask(power, produced * factor, mel.BandedFilterbank(fb))
        worst = 20 * torch.log10(gain).abs().max()
        assert worst == pytest.approx(abs(bound), abs=1e-6)


def test_bands_under_the_models_floor_keep_the_input():
    db = torch.tensor([-80.0, -70.0, -60.0, -10.0])
    torch.testing.assert_close(asks.floor_weight(db), torch.tensor([0.0, 0.5, 1.0, 1.0]))


# ---- streaming (reset=False) ---------------------------------------------------------------------


def stream(node, x: np.ndarray, sr: int, sizes) -> np.ndarray:
    """``x`` then the node's latency of silence, in blocks of ``sizes`` (cycled), with reset=False."""
    latency = node.latency_samples(sr)
    padded = np.concatenate([x, np.zeros((x.shape[0], latency), x.dtype)], axis=1)
    node.reset()
    out, start, i = [], 0, 0
    while start < padded.shape[1]:
        size = sizes[i % len(sizes)]
        out.append(node(padded[:, start : start + size], sr, reset=False))
        start, i = start + size, i + 1
    return np.concatenate(out, axis=1)[:, latency : latency + x.shape[1]]


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = np.sum((reference - other) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


# one sample at a time over the stream's start, then bigger blocks (a stereo stream's first block is
# 3 samples: a lone (2, 1) block reads as channels-last, as in pedalboard; the node then knows its format)
ONES = [3] + [1] * 3000 + [4096]
RANDOM = [int(n) for n in np.random.default_rng(5).integers(1, 20000, 40)]
CHUNKINGS = {"ones": ONES, "511": [511], "8192": [8192], "65536": [65536], "random": RANDOM}


@pytest.mark.parametrize("sr,channels,chunkings", [
    (44100, 1, ("ones", "65536")), (44100, 2, ("511", "random")),
    (48000, 1, ("8192", "random")), (48000, 2, ("ones", "511")),
])
def test_streaming_equals_one_shot_delayed(random_weights, sr, channels, chunkings):
    node = grain(random_weights, grain=1.5, level="off")
    x = drums(1.2, sr, channels=channels)
    one_shot = node(x, sr)
    for name in chunkings:
        assert snr_db(one_shot, stream(node, x, sr, CHUNKINGS[name])) >= 40.0, name


@pytest.mark.slow
@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_streaming_equals_one_shot_on_every_chunking(random_weights, sr, channels):
    node = grain(random_weights, grain=-1.0, level="off")
    x = drums(2.0, sr, channels=channels)
    one_shot = node(x, sr)
    for name, sizes in CHUNKINGS.items():
        assert snr_db(one_shot, stream(node, x, sr, sizes)) >= 40.0, name


def test_latency_is_explicit_and_matches_the_delay(random_weights):
    node = grain(random_weights, grain=1.5, level="off")
    latency = node.latency_samples(SR)
    assert 3 * SR + 0.5 * SR <= latency <= 4.5 * SR  # a whole window, its crossfade and a segment
    assert grain(random_weights, grain=0.0).latency_samples(SR) == 0
    assert node.reported_latency_samples == 0  # nothing processed yet
    x = drums(0.6, SR)
    node(x, SR)
    assert node.reported_latency_samples == latency
    # the measured delay: a streamed burst comes out ``latency`` samples late
    padded = np.concatenate([x, np.zeros((1, latency + SR // 2), np.float32)], axis=1)
    node.reset()
    streamed = np.concatenate([node(padded[:, a : a + 8192], SR, reset=False)
                               for a in range(0, padded.shape[1], 8192)], axis=1)
    corr = np.correlate(streamed[0], node(x, SR)[0], mode="valid")
    assert int(np.argmax(np.abs(corr))) == latency
    assert np.abs(streamed[0, :latency]).max() == 0.0  # priming: silence


def test_griffinlim_refuses_to_stream(random_weights):
    with pytest.raises(CakfxError, match="does not stream"):
        grain(random_weights, reconstruction="griffinlim")(drums(0.2, SR), SR, reset=False)


def test_a_96k_tone_above_the_models_band_passes_unchanged(random_weights):
    sr = 96000
    t = np.arange(sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 30000 * t)).astype(np.float32)
    out = grain(random_weights, grain=1.5, level="off")(x, sr)

    def tone_db(y):
        spectrum = np.abs(np.fft.rfft(y[sr // 4 : 3 * sr // 4] * np.hanning(sr // 2)))
        freqs = np.fft.rfftfreq(sr // 2, 1 / sr)
        return 20 * np.log10(spectrum[np.abs(freqs - 30000) < 50].max())

    assert abs(tone_db(out) - tone_db(x)) < 1.0


def test_the_engine_runs_torch_on_one_thread_over_small_window_jobs(random_weights, monkeypatch):
    x = drums(8.0, SR, channels=2)
    saved = torch.get_num_threads()
    calls, glue = [], []
    targets, slew_limit = grain_node.window_targets, grain_node.slew_limit

    def recording(model, power, grain_value, *bounded):  # on a block thread
        calls.append((torch.get_num_threads(), power.shape[0]))
        return targets(model, power, grain_value, *bounded)

    def slewing(*args):  # on the calling thread, between the parallel steps
        glue.append(torch.get_num_threads())
        return slew_limit(*args)

    try:
        torch.set_num_threads(1)
        serial = grain(random_weights, grain=1.5)(x, SR)  # one thread: the jobs in order
        torch.set_num_threads(2)
        monkeypatch.setattr(grain_node, "window_targets", recording)
        monkeypatch.setattr(grain_node, "slew_limit", slewing)
        assert np.array_equal(grain(random_weights, grain=1.5)(x, SR), serial)  # block threads
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
    # no OpenMP barrier to wait at on a busy machine, and jobs small enough to share out
    assert calls and all(threads == 1 and windows <= grain_node.WINDOW_BATCH for threads, windows in calls)
    assert len(calls) >= 2  # 4 windows x 2 channels: at least one job per block thread
    assert glue and set(glue) == {1}


@pytest.mark.parametrize("sr", [44100, 96000])
def test_render_stream_runs_the_model_once_and_keeps_its_output_exact(random_weights, sr, monkeypatch):
    from cakfx.streaming import render_stream

    x = 0.8 * drums(5.0, sr, channels=2)
    fed = []
    feed = grain_node.GrainEngine.feed
    monkeypatch.setattr(grain_node.GrainEngine, "feed",
                        lambda self, block: fed.append(block.shape[-1]) or feed(self, block))

    def render() -> np.ndarray:
        chain = cakfx.Chain([grain(random_weights, grain=1.5, level="match")])
        parts = []
        blocks = lambda: (x[:, i : i + 3000] for i in range(0, x.shape[1], 3000))  # noqa: E731
        render_stream(chain, blocks, sr, parts.append)
        return np.concatenate(parts, axis=1)

    kept = render()  # the render pass reads what the measuring pass computed, then carries on
    once = sum(fed)
    latency = grain(random_weights, grain=1.5).latency_samples(sr)
    assert once <= (x.shape[1] + latency + 3000) * 44100 // sr  # the input and its flush, once
    fed.clear()
    spools_find_the_disk_full(monkeypatch)
    again = render()  # nothing kept: the render pass computes again, to the same samples
    assert sum(fed) > 1.9 * once
    assert np.array_equal(kept, again)


@pytest.mark.parametrize("level", ["match", "original"])
def test_a_measured_stream_equals_one_shot_with_the_level_stage_on(random_weights, level):
    node = grain(random_weights, grain=1.5, level=level)
    assert node.needs_measure
    x = drums(1.5, SR, channels=2)
    one_shot = node(x, SR)
    node.begin_measure()  # what cakfx.streaming.render_stream does: a measuring pass, then the render
    stream(node, x, SR, [8192])
    node.end_measure()
    assert snr_db(one_shot, stream(node, x, SR, [8192])) >= 60.0
