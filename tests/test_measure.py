"""Spectral flatness, centroid, RMS and the ``cakfx measure`` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cakfx import measure as m
from cakfx.errors import CakfxError
from tests.signals import drums, tone

librosa = pytest.importorskip("librosa")


def test_flatness_and_centroid_match_librosa():
    x = drums(1.0, 22050)[0]
    flat = librosa.feature.spectral_flatness(y=x, n_fft=2048, hop_length=512).mean()
    assert m.spectral_flatness(x, 22050) == pytest.approx(float(flat), rel=1e-4)
    centroid = librosa.feature.spectral_centroid(y=x, sr=22050, n_fft=2048, hop_length=512).mean()
    assert m.spectral_centroid(x, 22050) == pytest.approx(float(centroid), rel=1e-4)


def test_noise_is_flatter_than_a_tone():
    rng = np.random.default_rng(0)
    assert m.spectral_flatness(rng.standard_normal(22050)) > 0.5
    assert m.spectral_flatness(tone(0.5, 22050, 1)[0]) < 0.1


def test_multichannel_is_the_mean_of_the_channels():
    x = tone(0.5, 22050, 2)
    per_channel = [m.spectral_flatness(c, 22050) for c in x]
    assert m.spectral_flatness(x, 22050) == pytest.approx(np.mean(per_channel), rel=1e-9)


def test_blocks_do_not_change_the_result(monkeypatch):
    x = drums(1.0, 22050, channels=2)
    whole = (m.spectral_flatness(x), m.spectral_centroid(x, 22050))
    monkeypatch.setattr(m, "BLOCK_FRAMES", 7)
    assert (m.spectral_flatness(x), m.spectral_centroid(x, 22050)) == pytest.approx(whole, rel=1e-9)


def test_silence_and_rms():
    silent = np.zeros((2, 4000), np.float32)
    assert m.spectral_flatness(silent) == pytest.approx(1.0)
    assert m.spectral_centroid(silent, 44100) == 0.0
    assert m.rms(silent) == 0.0
    assert m.rms(np.full((2, 10), 0.5)) == pytest.approx(0.5)


def test_reference_flatness(reference, tmp_path):
    from cakfx.cli import cli

    excerpt = reference / "audio" / "lux_excerpt_6s_mono.wav"
    audio, sr = sf.read(excerpt, dtype="float32")
    expected = float(np.load(reference / "grain" / "original_model_io.npz")["spectral_flatness_full_excerpt"])
    assert m.spectral_flatness(audio, sr) == pytest.approx(expected, rel=0.005)
    result = CliRunner().invoke(cli, ["measure", str(excerpt), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "m.json").read_text())["files"][0]
    assert row["flatness"] == pytest.approx(expected, rel=0.005)
    assert "grain" not in row  # renamed: the column says what it measures
    assert (row["sample_rate"], row["channels"], row["duration_s"]) == (44100, 1, 6.0)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "samples"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", tone(0.5, 22050, 2).T, 22050, subtype="FLOAT")
    sf.write(root / "sub" / "b.flac", drums(0.7, 44100)[0], 44100)
    (root / "notes.txt").write_text("not audio")
    (root / "sub" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    return root


def test_measure_file_reads_what_is_there(folder):
    row = m.measure_file(folder / "a.wav")
    assert (row["sample_rate"], row["channels"]) == (22050, 2)
    assert row["duration_s"] == pytest.approx(0.5)
    assert row["rms"] == pytest.approx(m.rms(tone(0.5, 22050, 2)), rel=1e-6)
    with pytest.raises(CakfxError, match="broken.wav"):
        m.measure_file(folder / "sub" / "broken.wav")


def test_measure_command(folder, tmp_path):
    from cakfx.cli import cli

    out_csv, out_json = tmp_path / "m.csv", tmp_path / "reports" / "m.json"  # folders are made
    result = CliRunner().invoke(cli, ["measure", str(folder), "--csv", str(out_csv), "--json", str(out_json)])
    assert result.exit_code == 1, result.output  # the corrupt file fails the run
    assert "2 measured, 1 skipped (not audio), 1 failed" in result.output
    assert "broken.wav" in result.output and "histogram" in result.output
    assert "flatness: min " in result.output and "duration_s: min " in result.output

    rows = list(csv.DictReader(out_csv.open()))
    assert [r["path"].split("samples/")[1] for r in rows] == ["a.wav", "sub/b.flac"]
    assert rows[1]["sample_rate"] == "44100" and rows[1]["channels"] == "1"
    report = json.loads(out_json.read_text())
    assert [f["path"].endswith("broken.wav") for f in report["failed"]] == [True]
    assert report["skipped"][0].endswith("notes.txt")
    assert list(rows[0])[:3] == ["path", "flatness", "centroid_hz"]
    flatness = [r["flatness"] for r in report["files"]]
    assert report["summary"]["flatness"]["max"] == pytest.approx(max(flatness))
    assert report["summary"]["flatness"]["mean"] == pytest.approx(np.mean(flatness))


def test_measure_command_all_good_exits_zero(folder):
    from cakfx.cli import cli

    result = CliRunner().invoke(cli, ["measure", str(folder / "a.wav"), str(folder / "sub" / "b.flac")])
    assert result.exit_code == 0, result.output
    assert "2 measured, 0 skipped (not audio), 0 failed" in result.output


def test_histogram_text():
    lines = m.histogram([1e-4, 2e-4, 1e-2, 0.5], bins=4)
    assert len(lines) == 4 and sum(int(line.split()[-1]) for line in lines) == 4
    assert m.histogram([0.3, 0.3]) and m.histogram([]) == []
