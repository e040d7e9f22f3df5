"""``cak.limiter``: the true-peak limiter as a chain effect (offline, streaming, chains, presets)."""

from __future__ import annotations

import doctest

import numpy as np
import pedalboard
import pytest

import cakfx
from cakfx.dsp.loudness import true_peak_db
from cakfx.errors import CakfxError
from cakfx.plugins.limiter import DESCRIPTION, Limiter
from cakfx.registry import get_effect
from tools import demo

SR = 44100


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    """4 s stereo: the demo drum loop over the demo chord pad, peaking at -0.1 dBFS (hot)."""
    drums, pad = demo.drum_loop(4.0), demo.chord_pad(4.0)
    n = min(drums.shape[-1], pad.shape[-1])
    mix = drums[..., :n] + pad[..., :n]
    return (mix / np.abs(mix).max() * 10 ** (-0.1 / 20)).astype(np.float32)


def streamed(node, x: np.ndarray, sr: float, sizes) -> np.ndarray:
    """``x`` plus ``latency`` samples of silence through ``node`` in blocks of ``sizes``."""
    padded = np.pad(x, ((0, 0), (0, node.latency_samples(sr))))
    bounds = np.minimum(np.cumsum(np.concatenate([[0], sizes])), padded.shape[1])
    if bounds[-1] < padded.shape[1]:
        bounds = np.append(bounds, padded.shape[1])
    parts = [node(padded[:, a:b], sr, reset=False) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return np.concatenate(parts, axis=1)


def test_the_ceiling_holds_in_true_peak_at_any_rate_and_channel_count(music):
    for ceiling in (-1.0, -3.0, -0.1):
        for sr, channels in ((SR, 2), (48000, 1), (96000, 6), (22050, 2)):
            x = np.resize(4.0 * music, (channels, music.shape[1]))  # 12 dB over: limiting all along
            out = Limiter(ceiling_db=ceiling)(x, sr)
            assert out.shape == x.shape and out.dtype == np.float32
            assert true_peak_db(out) <= ceiling, (ceiling, sr, channels, true_peak_db(out))
            assert true_peak_db(out) > ceiling - 0.5  # limited, not turned down


def test_material_under_the_ceiling_passes_exactly(music):
    quiet = music * np.float32(10 ** (-3 / 20))  # under -1 dBTP everywhere
    assert true_peak_db(quiet) < -1.0
    for layout in (quiet, quiet.T.copy(), quiet[0].copy(), quiet.astype(np.float64)):
        out = Limiter()(layout, SR)
        assert out.dtype == layout.dtype and out.shape == layout.shape
        assert np.array_equal(out, layout)


def test_only_the_neighbourhood_of_a_peak_is_touched(music):
    x = music * np.float32(10 ** (-3 / 20))
    click = SR * 2
    x[:, click] = 1.5
    out = Limiter(ceiling_db=-1.0, release_ms=50.0)(x, SR)
    assert true_peak_db(out) <= -1.0
    changed = np.flatnonzero(np.any(out != x, axis=0))
    # from the look-ahead before the click to the hold (25 ms) and release after it
    assert changed[0] >= click - Limiter().latency_samples(SR)
    assert changed[-1] < click + int(0.5 * SR)
    assert np.array_equal(out[:, click + SR // 2 :], x[:, click + SR // 2 :])


@pytest.mark.parametrize("sr", [SR, 48000])
def test_streaming_equals_offline_delayed(music, sr):
    loud = 4.0 * music
    node = Limiter(ceiling_db=-1.0, release_ms=60.0, lookahead_ms=3.0)
    offline = node(loud, sr)
    latency = node.latency_samples(sr)
    rng = np.random.default_rng(3)
    # the first block fixes the channel count (its smaller dimension), as for any node
    for sizes in ([3] + [1] * 200 + [8192] * 100, [2] + list(rng.integers(1, 3000, 2000)), [10**6]):
        node.reset()  # a new stream
        out = streamed(node, loud, sr, sizes)
        assert node.reported_latency_samples == latency
        assert not out[:, :latency].any()  # the first latency samples are exactly silent
        np.testing.assert_allclose(out[:, latency:], offline, atol=1e-6)
    # reset=True after a stream starts afresh: the offline result again
    np.testing.assert_array_equal(node(loud, sr), offline)


def test_a_new_format_starts_a_new_stream(music):
    node = Limiter()
    node(4.0 * music[:, :5000], SR, reset=False)
    mono = 4.0 * music[:1]
    out = streamed(node, mono, 48000, [4096] * 100)  # another rate and channel count: reset first
    np.testing.assert_allclose(out[:, node.latency_samples(48000) :], node(mono, 48000), atol=1e-6)


def test_settings_change_mid_stream_from_the_next_block(music):
    loud = 4.0 * music
    node, half = Limiter(ceiling_db=-1.0), loud.shape[1] // 2
    first = node(loud[:, :half], SR, reset=False)
    node.ceiling_db, node.release_ms = -6.0, 40.0
    second = node(loud[:, half:], SR, reset=False)
    latency = node.latency_samples(SR)
    assert true_peak_db(first[:, latency:]) <= -1.0 < true_peak_db(first[:, latency:]) + 0.5
    settled = second[:, latency + SR // 10 :]  # after the new ceiling's attack reaches the output
    assert true_peak_db(settled) <= -6.0 < true_peak_db(settled) + 0.5
    node.lookahead_ms = 2.0  # a new latency: a new stream
    out = streamed(node, loud, SR, [4096] * 100)
    np.testing.assert_allclose(out[:, node.latency_samples(SR) :], node(loud, SR), atol=1e-6)


def test_a_non_finite_sample_stays_where_it_is(music):
    # the writers refuse non-finite output with one line; the limiter must not spread it
    # (an infinite reduction would silence or NaN the rest of a stream)
    x = 4.0 * music
    x[0, 10_000], x[1, 50_000] = np.inf, np.nan
    latency = Limiter().latency_samples(SR)
    for out in (Limiter()(x, SR), streamed(Limiter(), x, SR, [4096] * 100)[:, latency:]):
        np.testing.assert_array_equal(np.isfinite(out), np.isfinite(x))
        assert true_peak_db(out[:, 60_000:]) <= -1.0


def test_in_a_chain_with_pedalboard_effects(music):
    chain = cakfx.Chain([
        pedalboard.Gain(gain_db=9.0),
        cakfx.create_effect("cak.limiter", ceiling_db=-1.0),
        pedalboard.Reverb(room_size=0.2, wet_level=0.05, dry_level=0.5),
        pedalboard.Gain(gain_db=-3.0),
    ])
    offline = chain(music, SR)
    gained = Limiter()(music * np.float32(10 ** (9 / 20)), SR)
    board = pedalboard.Pedalboard([pedalboard.Reverb(room_size=0.2, wet_level=0.05, dry_level=0.5),
                                   pedalboard.Gain(gain_db=-3.0)])
    np.testing.assert_allclose(offline, board(gained, SR), atol=1e-5)
    latency = chain.latency_samples(SR)
    assert latency == Limiter().latency_samples(SR)
    chain.reset()
    out = streamed(chain, music, SR, [512] * 2000)
    np.testing.assert_allclose(out[:, latency:], offline, atol=1e-5)


def test_parameters_are_checked_and_shown():
    node = cakfx.create_effect("cak.limiter", ceiling_db=-2, release_ms=50)
    assert repr(node) == "<cakfx.Limiter ceiling_db=-2 release_ms=50 lookahead_ms=5>"
    assert list(node.parameters) == ["ceiling_db", "release_ms", "lookahead_ms"]
    with pytest.raises(CakfxError, match="ceiling_db: 1.0 is above the maximum 0"):
        cakfx.create_effect("cak.limiter", ceiling_db=1.0)
    with pytest.raises(CakfxError, match="cak.limiter: release_ms"):
        Limiter(release_ms=0.0)
    with pytest.raises(CakfxError, match="lookahead_ms"):
        node.lookahead_ms = float("nan")
    assert get_effect("cak.limiter").summary.startswith("Look-ahead true-peak limiter")


def test_the_manuals_example_runs():
    test = doctest.DocTestParser().get_doctest(DESCRIPTION, {}, "cak.limiter", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_a_preset_with_the_limiter_loads_and_limits(tmp_path, music):
    path = tmp_path / "hot.toml"
    path.write_text(
        '[preset]\nname = "hot"\n\n'
        '[[chain]]\neffect = "pedalboard.Gain"\ngain_db = 12.0\n\n'
        '[[chain]]\nid = "ceiling"\neffect = "cak.limiter"\nceiling_db = -1.0\nrelease_ms = 80.0\n'
    )
    chain = cakfx.load_preset(path)
    out = chain(music, SR)
    assert true_peak_db(out) <= -1.0 < true_peak_db(out) + 0.5
    bad = tmp_path / "bad.toml"
    bad.write_text('[preset]\nname = "bad"\n\n[[chain]]\neffect = "cak.limiter"\nceiling = -1.0\n')
    with pytest.raises(CakfxError, match="unknown parameter 'ceiling' for cak.limiter.*ceiling_db"):
        cakfx.load_preset(bad)
