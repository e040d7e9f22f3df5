"""Property-based: whatever presets, ``--set`` values and file names are thrown at
``presets validate`` and ``process --dry-run``, the answer is success or one clear
error line, never a traceback."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import soundfile as sf
import tomli_w
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cakfx.cli import cli
from tests.signals import tone

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EFFECTS = [
    "pedalboard.Gain",
    "pedalboard.Reverb",
    "pedalboard.Bitcrush",
    "cak.grain",
    "no.such",
    "plugin.external",
]
KEYS = ["gain_db", "room_size", "bit_depth", "amount", "weights", "level", "path", "id", "sha256", "x"]
scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
entries = st.fixed_dictionaries({"effect": st.sampled_from(EFFECTS)}, optional={k: values for k in KEYS})
presets = st.one_of(
    st.fixed_dictionaries(
        {"chain": st.lists(entries, max_size=3)},
        optional={"preset": st.dictionaries(st.sampled_from(["name", "description"]), values, max_size=2)},
    ),
    st.dictionaries(st.text(max_size=8), values, max_size=3),
)


def clean_outcome(result) -> None:
    """Exit 0, or exit 1/2 with a message; never an exception escaping the command."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code:
        assert result.output.strip(), "a failure must say why"
        for line in result.output.strip().splitlines():
            assert len(line) < 2000


def preset_text(data) -> str:
    try:
        return tomli_w.dumps(data)
    except (TypeError, ValueError):  # e.g. mixed-type arrays tomli-w refuses: raw text instead
        return repr(data)


@SETTINGS
@given(data=presets)
def test_random_presets_validate_cleanly(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.toml"
        path.write_text(preset_text(data))
        clean_outcome(CliRunner().invoke(cli, ["presets", "validate", str(path)]))


@SETTINGS
@given(text=st.text(max_size=200))
def test_random_preset_text_validates_cleanly(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.toml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        clean_outcome(CliRunner().invoke(cli, ["presets", "validate", str(path)]))


name_bytes = st.binary(min_size=1, max_size=80).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@SETTINGS
@given(
    sets=st.lists(st.text(max_size=30), max_size=3),
    name=name_bytes,
    suffix=st.sampled_from([b".wav", b".WAV", b".txt", b"", b".flac"]),
)
def test_random_sets_and_file_names_dry_run_cleanly(sets, name, suffix):
    tmp = tempfile.mkdtemp()
    try:
        folder = Path(tmp) / "in"
        folder.mkdir()
        target = os.path.join(os.fsencode(folder), name + suffix)
        with open(target, "wb") as f:
            sf.write(f, tone(0.05).T, 44100, format="WAV", subtype="PCM_16")
        preset = Path(tmp) / "g.toml"
        preset.write_text('[[chain]]\nid = "gain"\neffect = "pedalboard.Gain"\ngain_db = -3.0\n')
        args = ["process", str(folder), "-p", str(preset), "-o", str(Path(tmp) / "out"), "--dry-run"]
        for item in sets:
            args += ["--set", item]
        clean_outcome(CliRunner().invoke(cli, args))
    finally:
        shutil.rmtree(tmp)
