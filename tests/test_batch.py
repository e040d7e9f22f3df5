"""Batch processing over a folder of mixed real files, through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cakfx.cli import cli
from tests.signals import tone

GAIN_PRESET = (
    '[preset]\nname = "half"\n[[chain]]\nid = "gain"\neffect = "pedalboard.Gain"\ngain_db = -6.0206\n'
)

# (relative path, sample rate, channels, format, subtype)
FILES = [
    ("drums/kick.wav", 44100, 1, "WAV", "PCM_16"),
    ("drums/snare_float.wav", 48000, 2, "WAV", "FLOAT"),
    ("drums/hat_u8.wav", 22050, 1, "WAV", "PCM_U8"),
    ("drums/deep/pcm24.wav", 96000, 2, "WAV", "PCM_24"),
    ("drums/deep/pcm32.wav", 44100, 2, "WAV", "PCM_32"),
    ("pads/pad.flac", 44100, 2, "FLAC", "PCM_24"),
    ("pads/pad.aiff", 32000, 1, "AIFF", "PCM_16"),
    ("pads/pad.ogg", 44100, 2, "OGG", "VORBIS"),
    ("pads/pad.mp3", 44100, 2, "MP3", "MPEG_LAYER_III"),
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    for i, (rel, sr, ch, fmt, sub) in enumerate(FILES):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(0.5, sr=sr, channels=ch, seed=i).T, sr, format=fmt, subtype=sub)
    (root / "broken").mkdir()
    (root / "broken" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    (root / "broken" / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("not audio")
    preset = tmp_path / "half.toml"
    preset.write_text(GAIN_PRESET)
    return root, preset


def snapshot(root: Path) -> dict:
    return {p: digest(p) for p in root.rglob("*") if p.is_file()}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_batch_mirrors_tree_keeps_formats_and_reports_failures(library, tmp_path):
    root, preset = library
    before = snapshot(root)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    result = run("process", root, "-p", preset, "-o", out, "--report", report, "-q")
    assert result.exit_code == 1  # two bad files
    assert "failed: " in result.output and "corrupt.wav" in result.output and "empty.wav" in result.output
    assert "Traceback" not in result.output
    assert snapshot(root) == before  # inputs byte-identical

    for rel, sr, ch, fmt, sub in FILES:
        src, dst = root / rel, out / rel
        info = sf.info(dst)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (sr, ch, fmt, sub), rel
        x, _ = sf.read(src, always_2d=True)
        y, _ = sf.read(dst, always_2d=True)
        if fmt in ("OGG", "MP3"):  # lossy codecs: length within a frame, level halved
            assert abs(len(y) - len(x)) <= 1152
            assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)) / 2, rel=0.1)
        else:
            assert len(y) == len(x)
            tol = 2 / 2 ** {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24}.get(sub, 24)
            np.testing.assert_allclose(y, x / 2, atol=tol)
    assert not (out / "notes.txt").exists() and not (out / "broken" / "corrupt.wav").exists()
    assert not list(out.rglob("*.cakfx-tmp"))  # no temporary files left behind

    data = json.loads(report.read_text())
    by_name = {Path(f["input"]).name: f for f in data["files"]}
    assert data["counts"] == {
        "ok": 9,
        "exists": 0,
        "failed": 2,
        "skipped": 0,
        "not-audio": 1,
        "planned": 0,
        "clipped": 0,
        "warnings": 0,
    }
    assert by_name["empty.wav"]["status"] == "failed" and "empty file" in by_name["empty.wav"]["reason"]
    assert by_name["corrupt.wav"]["status"] == "failed" and by_name["corrupt.wav"]["reason"]
    assert by_name["notes.txt"]["status"] == "not-audio"
    assert by_name["kick.wav"]["duration"] == pytest.approx(0.5) and by_name["kick.wav"]["seconds"] >= 0
    assert data["preset"] == "half"


def test_rerun_resumes_and_overwrite_replaces(library, tmp_path):
    root, preset = library
    out = tmp_path / "out"
    run("process", root / "drums", "-p", preset, "-o", out, "-q")
    done = sorted(out.rglob("*.wav"))
    assert len(done) == 5
    (out / "kick.wav").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in done if p.exists()}
    result = run("process", root / "drums", "-p", preset, "-o", out, "-q", "--report", tmp_path / "r.json")
    assert result.exit_code == 0
    counts = json.loads((tmp_path / "r.json").read_text())["counts"]
    assert counts["ok"] == 1 and counts["exists"] == 4
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    result = run("process", root / "drums", "-p", preset, "-o", out, "-q", "--overwrite")
    assert "5 processed" in result.output


def test_format_conversion_dry_run_and_jobs(library, tmp_path):
    root, preset = library
    out = tmp_path / "out"
    result = run("process", root / "pads", "-p", preset, "-o", out, "--dry-run")
    assert result.exit_code == 0 and "would write" in result.output and not out.exists()
    result = run(
        "process",
        root / "pads",
        "-p",
        preset,
        "-o",
        out,
        "--format",
        "flac",
        "-q",
        "--jobs",
        "2",
        "--report",
        tmp_path / "r.json",
    )
    # pad.{aiff,flac,mp3,ogg} all map to pad.flac: the first is written, the others are reported
    assert result.exit_code == 1
    files = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [f["status"] for f in files].count("ok") == 1
    assert sum("collides" in f["reason"] for f in files) == 3
    assert sorted(p.name for p in out.iterdir()) == ["pad.flac"]
    assert sf.info(out / "pad.flac").format == "FLAC"


def test_float_results_clip_instead_of_wrapping(tmp_path):
    x = np.stack([np.linspace(-0.9, 0.9, 4410)]).astype(np.float32)
    src = tmp_path / "in" / "ramp.wav"
    src.parent.mkdir()
    sf.write(src, x.T, 44100, subtype="PCM_16")
    preset = tmp_path / "loud.toml"
    preset.write_text('[[chain]]\neffect = "pedalboard.Gain"\ngain_db = 20.0\n')
    run("process", src, "-p", preset, "-o", tmp_path / "out", "-q")
    y, _ = sf.read(tmp_path / "out" / "ramp.wav")
    assert y.min() <= -0.999 and y.max() >= 0.999
    assert np.all(np.sign(y[np.abs(x[0]) > 0.2]) == np.sign(x[0][np.abs(x[0]) > 0.2]))  # no wrap-around


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-p", "no-such-preset"], "unknown preset 'no-such-preset'"),
        (["--set", "gain.gain_bd=1"], "has no parameter 'gain_bd'"),
        (["--set", "gain.gain_db=loud"], "gain_db: expected a number"),
        (["--set", "gain=1"], "expected ID.PARAM=VALUE"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_gets_one_clear_line(library, tmp_path, extra, message):
    root, preset = library
    args = ["process", root / "drums", "-o", tmp_path / "out", "-q"]
    if "-p" not in extra:
        args += ["-p", preset]
    result = run(*args, *extra)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("Error: "), result.output


def test_output_inside_input_and_unwritable_output(library, tmp_path):
    root, preset = library
    result = run("process", root, "-p", preset, "-o", root / "processed", "-q")
    assert result.exit_code != 0 and "inside the input folder" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("process", root / "drums", "-p", preset, "-o", blocker / "out", "-q")
    assert result.exit_code != 0 and "cannot create output folder" in result.output
    missing = run("process", tmp_path / "nope", "-p", preset, "-o", tmp_path / "o", "-q")
    assert missing.exit_code != 0 and "input not found" in missing.output


def test_process_file_api(tmp_path):
    import cakfx

    src = tmp_path / "a.flac"
    sf.write(src, tone(0.2, channels=2).T, 44100, subtype="PCM_24")
    chain = cakfx.load_preset("demo")
    result = cakfx.process_file(src, tmp_path / "b.flac", chain)
    assert result.status == "ok" and sf.info(tmp_path / "b.flac").subtype == "PCM_24"
    with pytest.raises(cakfx.CakfxError, match="overwrite the input"):
        cakfx.process_file(src, src, chain)
    os.link(src, tmp_path / "hard-link.flac")  # another name for the input's data
    with pytest.raises(cakfx.CakfxError, match="overwrite the input"):
        cakfx.process_file(src, tmp_path / "hard-link.flac", chain)
    assert os.path.getsize(src) > 0


def test_jobs_default_to_one_file_per_core_with_the_same_outputs(tmp_path):
    from cakfx.batch import available_cores, default_jobs, run_batch
    from cakfx.presets import build_chain, read_preset
    from tests.signals import drums

    src = tmp_path / "in"
    src.mkdir()
    for i, sr in enumerate((44100, 48000, 22050)):
        sf.write(src / f"d{i}.wav", drums(0.7, sr, channels=2).T, sr, subtype="FLOAT")
    import torch

    from cakfx.dsp import threads

    spec = read_preset("texture-subtle")
    torch_threads = torch.get_num_threads()
    outputs = {}
    for jobs in (1, None, 3):
        report = run_batch([src], tmp_path / f"out{jobs}", lambda: build_chain(spec, device="cpu"), jobs=jobs,
                           progress=False)
        assert report.ok and report.count("ok") == 3
        assert report.jobs == (min(available_cores(), 3) if jobs is None else jobs)
        outputs[jobs] = [sf.read(tmp_path / f"out{jobs}" / f"d{i}.wav")[0] for i in range(3)]
    for jobs in (None, 3):  # one thread per file gives what block threads give
        assert all(np.array_equal(a, b) for a, b in zip(outputs[1], outputs[jobs]))
    assert default_jobs(1) == 1 and default_jobs(10**4) == available_cores()
    assert torch.get_num_threads() == torch_threads and threads._per_file == 0  # restored afterwards


def test_short_files_render_once_offline_and_long_ones_stream(tmp_path, monkeypatch):
    import cakfx
    import cakfx.batch

    class Counting(cakfx.EffectNode):
        """Halves the level; counts offline calls and streamed blocks, and needs a measuring pass."""

        name = "test.counting"
        offline = streamed = 0
        needs_measure = True

        def process_channels(self, audio, sample_rate):
            Counting.offline += 1
            return audio * np.float32(0.5)

        def stream_channels(self, audio, sample_rate):
            Counting.streamed += 1
            return audio * np.float32(0.5)

    x = tone(0.5, sr=44100, channels=2)
    sf.write(tmp_path / "in.wav", x.T, 44100, subtype="FLOAT")
    cakfx.batch.process_file(tmp_path / "in.wav", tmp_path / "held.wav", Counting())
    assert (Counting.offline, Counting.streamed) == (1, 0)  # one offline call, no measuring pass
    monkeypatch.setattr(cakfx.batch, "HOLD_SAMPLES", x.size - 1)  # one sample too long to hold
    cakfx.batch.process_file(tmp_path / "in.wav", tmp_path / "streamed.wav", Counting())
    assert Counting.offline == 1 and Counting.streamed >= 2  # a measuring pass and the render
    held, streamed = sf.read(tmp_path / "held.wav")[0], sf.read(tmp_path / "streamed.wav")[0]
    assert np.array_equal(held, streamed) and np.allclose(held, 0.5 * x.T, atol=1e-7)


def test_parallel_jobs_start_the_largest_files_first_and_report_in_order(tmp_path, monkeypatch):
    import threading

    import pedalboard

    import cakfx.batch as batch_module
    from cakfx.batch import run_batch

    src = tmp_path / "in"
    src.mkdir()
    seconds = {"a.wav": 0.1, "b.wav": 0.9, "c.wav": 0.3, "d.wav": 0.6}
    for name, length in seconds.items():
        sf.write(src / name, np.zeros(int(44100 * length), np.float32), 44100)
    started, lock = [], threading.Lock()
    process_file = batch_module.process_file

    def recording(in_path, *args, **kwargs):
        with lock:
            started.append(in_path.name)
        return process_file(in_path, *args, **kwargs)

    monkeypatch.setattr(batch_module, "process_file", recording)
    report = run_batch([src], tmp_path / "out", lambda: pedalboard.Gain(gain_db=-1.0), jobs=2, progress=False)
    assert sorted(started[:2]) == ["b.wav", "d.wav"]  # the two longest take the two workers first
    assert [Path(f.input).name for f in report.files] == ["a.wav", "b.wav", "c.wav", "d.wav"]
    assert all(f.status == "ok" for f in report.files)


def test_integer_outputs_round_float32_blocks_as_float64_does():
    # quantize works in float32 up to 24 bits (power-of-two scaling is exact there): every
    # integer subtype must store the same integers as rounding the float64 samples would
    from cakfx.audio import PCM_BITS, quantize

    rng = np.random.default_rng(3)
    edges = [1.0, -1.0, 0.99999994, -0.99999994, 0.5 / 2**23, 1.5 / 2**23, -0.5 / 2**15, 5e-8]
    x = np.concatenate([rng.uniform(-1.3, 1.3, (20000, 2)), np.reshape(edges, (-1, 2))]).astype(np.float32)
    for subtype, bits in PCM_BITS.items():
        scale = float(2 ** (bits - 1))
        q = np.clip(np.rint(x.astype(np.float64) * scale), -scale, scale - 1).astype(np.int32)
        want = (q << (16 - bits)).astype(np.int16) if bits <= 16 else q << (32 - bits)
        got = quantize(x, subtype)
        assert got.dtype == want.dtype and np.array_equal(got, want), subtype
        assert np.array_equal(quantize(x.astype(np.float64), subtype), want), subtype


def test_reader_reads_the_header_through_the_file_it_opened(tmp_path):
    from cakfx.audio import BlockReader, header_frames

    path = tmp_path / "cut.wav"
    sf.write(path, tone(seconds=1.0).T, 44100, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still says 44100 frames
    reader = BlockReader(path)
    assert reader.declared_frames() == header_frames(path, reader.info) == 44100
    assert reader.info.frames < 44100
    blocks = list(reader())  # the first pass reads the file opened for the header
    assert sum(b.shape[1] for b in blocks) == reader.frames == reader.info.frames
    assert sum(b.shape[1] for b in reader()) == reader.frames  # a second pass opens it again
    reader.close()
