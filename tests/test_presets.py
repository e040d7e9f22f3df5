"""Preset files: resolution, validation messages, overrides, sharing."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import cakfx
from cakfx.paths import user_presets_dir, user_weights_dir
from cakfx.plugin_manager import pm
from cakfx.presets import parse_set, validate_preset
from cakfx.registry import refresh
from cakfx.sharing import export_preset, install_preset
from cakfx.weights import sha256_file
from tests.fakes import GainPlugin, make_gain_weights
from tests.signals import tone


@pytest.fixture
def gain_plugin():
    plugin = GainPlugin()
    pm.register(plugin, "test-gain-plugin")
    refresh()
    yield plugin
    pm.unregister(name="test-gain-plugin")
    refresh()


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = """
[preset]
name = "mine"
description = "test chain"

[[chain]]
id = "g"
effect = "test.gain"
weights = "w/half.safetensors"
level = 2.0

[[chain]]
id = "verb"
effect = "pedalboard.Reverb"
room_size = 0.2
wet_level = 0.0
dry_level = 0.5  # JUCE scales the dry path by 2
"""


def test_load_preset_from_path_builds_a_working_chain(tmp_path, gain_plugin):
    make_gain_weights(tmp_path / "w" / "half.safetensors", 0.25)
    preset = write(tmp_path / "mine.toml", GOOD)
    chain = cakfx.load_preset(str(preset))
    assert chain.ids == ["g", "verb"]
    x = tone(0.2, channels=2)
    y = chain(x, 44100)
    # level 2 x stored gain 0.25; the reverb passes only its (unity) dry path
    np.testing.assert_allclose(y, x * 0.5, atol=1e-4)
    y2 = cakfx.load_preset(str(preset), overrides={"g.level": 4.0})(x, 44100)
    np.testing.assert_allclose(y2, x, atol=1e-4)


def test_resolution_order_path_user_bundled(tmp_path):
    bundled = cakfx.load_preset("demo")
    assert len(bundled) == 3
    write(user_presets_dir() / "demo.toml", '[preset]\nname="demo"\n[[chain]]\neffect="pedalboard.Gain"\n')
    assert len(cakfx.load_preset("demo")) == 1  # the user folder shadows the bundled preset
    with pytest.raises(cakfx.CakfxError, match="unknown preset 'demmo'.*did you mean 'demo'"):
        cakfx.load_preset("demmo")
    with pytest.raises(cakfx.CakfxError, match="preset file not found"):
        cakfx.load_preset(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            'effect = "pedalboard.Reverbb"',
            r"chain entry 1 \(id 'x'\): unknown effect 'pedalboard.Reverbb' "
            r"\(did you mean 'pedalboard.Reverb'\?\)",
        ),
        (
            'effect = "pedalboard.Reverb"\nroom_sise = 0.2',
            r"chain entry 1 \(id 'x'\): unknown parameter 'room_sise' .*did you mean 'room_size'",
        ),
        (
            'effect = "pedalboard.Reverb"\nroom_size = "big"',
            r"chain entry 1 \(id 'x'\): room_size: expected a number, got str 'big'",
        ),
        (
            'effect = "pedalboard.Reverb"\nroom_size = 3.0',
            r"chain entry 1 \(id 'x'\): room_size: 3.0 is above the maximum 1.0",
        ),
        (
            'effect = "test.gain"\nweights = "missing-weights"',
            r"chain entry 1 \(id 'x'\): weights: unknown weights 'missing-weights'",
        ),
        (
            'effect = "test.gain"\nweights = "w.safetensors"\nsha256 = "' + "0" * 64 + '"',
            r"chain entry 1 \(id 'x'\): weights checksum mismatch for w.safetensors",
        ),
        ("room_size = 0.2", r"chain entry 1 \(id 'x'\): missing 'effect'"),
    ],
)
def test_validation_messages_name_file_entry_and_key(tmp_path, gain_plugin, entry, message):
    make_gain_weights(tmp_path / "w.safetensors")
    preset = write(tmp_path / "bad.toml", f'[preset]\nname = "bad"\n\n[[chain]]\nid = "x"\n{entry}\n')
    with pytest.raises(cakfx.CakfxError, match=message) as info:
        validate_preset(str(preset))
    assert str(info.value).startswith(str(preset))
    assert "\n" not in str(info.value)


def test_second_entry_is_named_by_index(tmp_path):
    preset = write(
        tmp_path / "p.toml",
        '[[chain]]\neffect = "pedalboard.Gain"\n[[chain]]\neffect = "pedalboard.Delay"\nmix = 2.0\n',
    )
    with pytest.raises(cakfx.CakfxError, match=r"chain entry 2 \(pedalboard.Delay\): mix: 2.0 is above"):
        validate_preset(str(preset))


def test_invalid_toml_and_empty_chain(tmp_path):
    with pytest.raises(cakfx.CakfxError, match="invalid TOML"):
        validate_preset(str(write(tmp_path / "a.toml", "[preset\n")))
    with pytest.raises(cakfx.CakfxError, match="no \\[\\[chain\\]\\] entries"):
        validate_preset(str(write(tmp_path / "b.toml", '[preset]\nname = "x"\n')))


def test_correct_sha256_pin_passes(tmp_path, gain_plugin):
    w = make_gain_weights(tmp_path / "w.safetensors")
    text = f'[[chain]]\neffect = "test.gain"\nweights = "w.safetensors"\nsha256 = "{sha256_file(w)}"\n'
    assert validate_preset(str(write(tmp_path / "p.toml", text))).entries[0].sha256 == sha256_file(w)


def test_a_settled_weights_file_is_checked_once_and_a_changed_one_again(tmp_path, gain_plugin, monkeypatch):
    import cakfx.presets
    import cakfx.weights

    w = make_gain_weights(tmp_path / "w.safetensors")
    pin = sha256_file(w)
    text = f'[[chain]]\neffect = "test.gain"\nweights = "w.safetensors"\nsha256 = "{pin}"\n'
    preset = write(tmp_path / "p.toml", text)
    checks = []
    real = cakfx.presets.check_weights
    monkeypatch.setattr(cakfx.presets, "check_weights", lambda *a, **k: checks.append(a) or real(*a, **k))
    validate_preset(str(preset))
    validate_preset(str(preset))
    assert len(checks) == 2  # just written: it may change again within one timestamp tick
    monkeypatch.setattr(cakfx.weights, "SETTLED_NS", 0)  # as if written long ago
    validate_preset(str(preset))
    validate_preset(str(preset))
    assert len(checks) == 3
    data = bytearray(w.read_bytes())
    data[-1] ^= 1  # one bit of a weight: same size, the pin no longer matches
    w.write_bytes(bytes(data))
    os.utime(w, ns=(1, 1))  # a new mtime whatever the clock's tick
    with pytest.raises(cakfx.CakfxError, match="checksum mismatch"):
        validate_preset(str(preset))
    assert len(checks) == 4


def test_parse_set():
    assert parse_set(["texture.amount=0.8", "verb.room_size=1", "x.weights=mine", 'x.mode="HPF24"']) == {
        "texture.amount": 0.8,
        "verb.room_size": 1,
        "x.weights": "mine",
        "x.mode": "HPF24",
    }
    for bad in ["amount=0.8", "texture.amount", ".=1"]:
        with pytest.raises(cakfx.CakfxError, match="expected ID.PARAM=VALUE"):
            parse_set([bad])


def test_overrides_by_id_index_and_effect_name(tmp_path):
    preset = write(
        tmp_path / "p.toml",
        '[[chain]]\nid = "a"\neffect = "pedalboard.Gain"\n[[chain]]\neffect = "pedalboard.Reverb"\n',
    )
    chain = cakfx.load_preset(str(preset), overrides={"a.gain_db": -3.0, "2.room_size": 0.9})
    assert chain[0].gain_db == pytest.approx(-3.0) and chain[1].room_size == pytest.approx(0.9)
    chain = cakfx.load_preset(str(preset), overrides=["reverb.damping=0.1"])
    assert chain[1].damping == pytest.approx(0.1)
    with pytest.raises(cakfx.CakfxError, match="no chain entry 'b'"):
        cakfx.load_preset(str(preset), overrides={"b.gain_db": 1.0})
    with pytest.raises(cakfx.CakfxError, match="has no parameter 'gain'.*did you mean 'gain_db'"):
        cakfx.load_preset(str(preset), overrides={"a.gain": 1.0})


def test_export_and_install_round_trip(tmp_path, gain_plugin):
    w = make_gain_weights(tmp_path / "w" / "half.safetensors", 0.25)
    write(tmp_path / "mine.toml", GOOD)
    archive = tmp_path / "share" / "mine.zip"
    info = export_preset(str(tmp_path / "mine.toml"), archive)
    assert info["weights"] == ["half"]
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["mine.toml", "weights/half.safetensors"]
        assert sha256_file(w) in zf.read("mine.toml").decode()
    installed = install_preset(archive)
    assert (user_weights_dir() / "half.safetensors").read_bytes() == w.read_bytes()
    chain = cakfx.load_preset("mine")  # now by name, from the user folder
    x = tone(0.1)
    np.testing.assert_allclose(chain(x, 44100), x * 0.5, atol=1e-4)
    assert installed["preset"] == "mine"
    install_preset(archive)  # same content again: fine


def test_install_refuses_conflicting_weights_without_force(tmp_path, gain_plugin):
    make_gain_weights(tmp_path / "w" / "half.safetensors", 0.25)
    write(tmp_path / "mine.toml", GOOD)
    archive = export_preset(str(tmp_path / "mine.toml"), tmp_path / "mine.zip")["path"]
    make_gain_weights(user_weights_dir() / "half.safetensors", 0.9)
    before = (user_weights_dir() / "half.safetensors").read_bytes()
    with pytest.raises(cakfx.CakfxError, match="weights 'half' already installed with different content"):
        install_preset(archive)
    assert (user_weights_dir() / "half.safetensors").read_bytes() == before
    install_preset(archive, force=True)
    assert (user_weights_dir() / "half.safetensors").read_bytes() != before


@pytest.mark.parametrize(
    "member", ["../evil.toml", "/abs/evil.toml", "weights/../../x.safetensors", "other/x.txt"]
)
def test_install_refuses_members_outside_user_folders(tmp_path, member):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.toml", '[[chain]]\neffect = "pedalboard.Gain"\n')
        zf.writestr(member, "x")
    with pytest.raises(cakfx.CakfxError, match="refusing archive member|unexpected archive member"):
        install_preset(archive)
    assert not (user_presets_dir() / "ok.toml").exists()


def test_install_rejects_tampered_weights(tmp_path, gain_plugin):
    make_gain_weights(tmp_path / "w" / "half.safetensors", 0.25)
    write(tmp_path / "mine.toml", GOOD)
    archive = tmp_path / "mine.zip"
    export_preset(str(tmp_path / "mine.toml"), archive)
    tampered = tmp_path / "tampered.zip"
    other = make_gain_weights(tmp_path / "x" / "half.safetensors", 0.75)
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        dst.writestr("mine.toml", src.read("mine.toml"))
        dst.write(other, "weights/half.safetensors")
    with pytest.raises(cakfx.CakfxError, match="checksum mismatch"):
        install_preset(tampered)


def test_weights_files_are_readable_like_any_new_file(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        path = make_gain_weights(tmp_path / "w.safetensors")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_preset_writes_a_preset_that_process_can_use(tmp_path):
    from cakfx.presets import save_preset

    path = save_preset(
        "my-gain", [{"id": "g", "effect": "pedalboard.Gain", "gain_db": -6.0}], description="quieter"
    )
    assert path == user_presets_dir() / "my-gain.toml"
    chain = cakfx.load_preset("my-gain")
    x = tone(0.2, 44100).astype(np.float32)
    y = chain.process(x, 44100)
    assert np.allclose(y, x * 10 ** (-6 / 20), atol=1e-5)
    preset = validate_preset("my-gain")
    assert preset.description == "quieter"
    # an existing preset is kept unless overwrite
    with pytest.raises(cakfx.CakfxError, match="exists"):
        save_preset("my-gain", [{"effect": "pedalboard.Gain", "gain_db": 1.0}])
    save_preset("my-gain", [{"effect": "pedalboard.Gain", "gain_db": 1.0}], overwrite=True)
    assert "gain_db = 1.0" in path.read_text()
    # invalid chains and names are refused and nothing is written
    with pytest.raises(cakfx.CakfxError, match="gain_db"):
        save_preset("bad", [{"effect": "pedalboard.Gain", "gain_db": "loud"}])
    with pytest.raises(cakfx.CakfxError, match="preset name"):
        save_preset("../escape", [{"effect": "pedalboard.Gain"}])
    assert not (user_presets_dir() / "bad.toml").exists()
    assert not list(user_presets_dir().glob("*.cakfx-tmp"))


def test_overrides_make_a_new_preset_and_resolution_happens_once():
    from cakfx.presets import ResolvedPreset, apply_overrides, build_chain, read_preset, resolve_preset

    original = read_preset("demo")
    changed = apply_overrides(original, {"room.wet_level": 0.3})
    assert changed is not original
    assert original.entries[2].params["wet_level"] == 0.15 and changed.entries[2].params["wet_level"] == 0.3
    with pytest.raises(TypeError):
        original.entries[2].params["wet_level"] = 1.0  # immutable
    resolved = resolve_preset(changed)
    assert isinstance(resolved, ResolvedPreset) and resolved.entries[2].params["room_size"] == 0.2
    chain = build_chain(resolved)
    assert chain[2].wet_level == pytest.approx(0.3)


def test_a_preset_is_checked_once_and_create_effect_still_checks(monkeypatch):
    """Parameters are checked once, in resolve_preset; building a resolved preset trusts it;
    create_effect called directly checks its arguments."""
    import cakfx.registry
    from cakfx.presets import build_chain, read_preset, resolve_preset

    calls = []
    real = cakfx.registry.check_params

    def counting(spec, *args, **kwargs):
        calls.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(cakfx.registry, "check_params", counting)
    resolved = resolve_preset(read_preset("demo"))
    entries = len(resolved.entries)
    assert len(calls) == entries
    chain = build_chain(resolved)
    assert len(calls) == entries and len(chain) == entries  # building checked nothing again
    cakfx.load_preset("demo")
    assert len(calls) == 2 * entries  # load_preset: resolve once, build
    with pytest.raises(cakfx.CakfxError, match="room_size"):
        cakfx.create_effect("pedalboard.Reverb", room_size=2.0)
    assert calls[-1] == "pedalboard.Reverb"


def test_the_umask_is_read_without_being_changed(tmp_path, monkeypatch):
    # os.umask(0) to read it let another --jobs thread create a file 0666 meanwhile
    import os
    import stat
    import sys

    from cakfx.paths import as_new_file, current_umask

    mask = os.umask(0o027)
    try:
        if sys.platform.startswith("linux"):
            def refuse(_):
                raise AssertionError("os.umask called")

            monkeypatch.setattr(os, "umask", refuse)
        assert current_umask() == 0o027
        path = tmp_path / "f"
        path.write_bytes(b"x")
        os.chmod(path, 0o600)
        as_new_file(path)
    finally:
        monkeypatch.undo()
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
