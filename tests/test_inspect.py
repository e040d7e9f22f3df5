"""`cakfx inspect`: the picture is written, sized, and has one row per sweep value."""

from __future__ import annotations

import struct
import sys

import pytest
import soundfile as sf
from click.testing import CliRunner

from cakfx.cli import cli
from tests.signals import drums

pytest.importorskip("matplotlib")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def loop(tmp_path):
    path = tmp_path / "loop.wav"
    sf.write(path, drums(1.5, channels=2).T, 44100, subtype="PCM_16")
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_inspect_writes_a_large_png_and_leaves_audio_alone(loop, tmp_path):
    before = loop.read_bytes()
    out = tmp_path / "pics" / "one.png"
    result = run("inspect", loop, "-p", "demo", "-o", out, "--set", "drive.drive_db=18", "--seconds", "0:1")
    assert result.exit_code == 0, result.output
    width, height = png_size(out)
    assert width >= 1200 and height >= 700
    assert "1 row(s)" in result.output
    assert loop.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.wav", "pics"]


def test_sweep_has_one_row_per_value(loop, tmp_path):
    one = tmp_path / "one.png"
    four = tmp_path / "four.png"
    run("inspect", loop, "-p", "demo", "-o", one)
    result = run("inspect", loop, "-p", "demo", "-o", four, "--sweep", "drive.drive_db=0,10,20,30")
    assert result.exit_code == 0, result.output
    assert "4 row(s)" in result.output
    w1, h1 = png_size(one)
    w4, h4 = png_size(four)
    assert w4 == w1 and h4 > 1.8 * h1  # four rows of panels instead of one


def test_bad_sweep_and_seconds_are_one_line(loop, tmp_path):
    bad = run("inspect", loop, "-p", "demo", "-o", tmp_path / "x.png", "--sweep", "drive_db=1,2")
    assert bad.exit_code == 1 and bad.output.startswith("Error: --sweep")
    bad = run("inspect", loop, "-p", "demo", "-o", tmp_path / "x.png", "--seconds", "5:9")
    assert bad.exit_code == 1 and "only 1.50 s long" in bad.output


def test_missing_matplotlib_says_how_to_install(loop, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = run("inspect", loop, "-p", "demo", "-o", tmp_path / "x.png")
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == "Error: this needs matplotlib: install the viz extra, e.g. pip install 'cakfx[viz]'"
    )
    assert not (tmp_path / "x.png").exists()


def test_texture_analysis_picture(tmp_path, reference):
    imported = run(
        "weights",
        "import",
        reference / "texture" / "final_wgan_grain.pt",
        "--kind",
        "texture",
        "--stats",
        reference / "texture" / "global_normalization_stats.json",
        "--name",
        "ref-texture",
    )
    assert imported.exit_code == 0, imported.output
    out = tmp_path / "kernel.png"
    result = run("effects", "show", "cak.texture", "--weights", "ref-texture", "--png", out)
    assert result.exit_code == 0, result.output
    assert png_size(out) == (1600, 900)
    missing = run("effects", "show", "cak.texture", "--weights", "nope", "--png", out)
    assert missing.exit_code == 1 and "unknown weights 'nope'" in missing.output
