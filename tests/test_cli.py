"""The CLI's listing commands, plugin loading, and the installed wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner

from cakfx import __version__
from cakfx.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_version():
    assert __version__ in run("--version").output


def test_effects_list_and_show():
    names = [e["name"] for e in json.loads(run("effects", "list", "--json").output)]
    for expected in (
        "pedalboard.Reverb",
        "pedalboard.Compressor",
        "pedalboard.Gain",
        "pedalboard.Chorus",
        "pedalboard.Delay",
        "pedalboard.Distortion",
        "pedalboard.Phaser",
        "pedalboard.PitchShift",
        "pedalboard.Limiter",
        "pedalboard.LowpassFilter",
        "pedalboard.HighpassFilter",
        "pedalboard.LadderFilter",
        "plugin.external",
    ):
        assert expected in names
    assert "pedalboard.Pedalboard" not in names and "pedalboard.Mix" not in names
    shown = run("effects", "show", "pedalboard.Reverb").output
    assert "room_size [float] default 0.5 (range 0 … 1)" in shown
    data = json.loads(run("effects", "show", "pedalboard.LadderFilter", "--json").output)
    mode = next(p for p in data["params"] if p["name"] == "mode")
    assert mode["type"] == "choice" and "HPF24" in mode["choices"]
    bad = run("effects", "show", "pedalboard.Reverbb")
    assert bad.exit_code == 1 and "did you mean 'pedalboard.Reverb'" in bad.output


def test_external_plugin_missing_file_is_one_clear_error(tmp_path):
    preset = tmp_path / "ext.toml"
    preset.write_text(
        '[[chain]]\neffect = "plugin.external"\npath = "missing.vst3"\nparameters = {mix = 0.5}\n'
    )
    src = tmp_path / "in.wav"
    import numpy as np
    import soundfile as sf

    sf.write(src, np.zeros(1000, np.float32), 44100)
    result = run("process", src, "-p", preset, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: {preset}: chain entry 1 (plugin.external): "
        f"external plugin not found: {tmp_path / 'missing.vst3'}"
    )


def test_presets_list_show_validate(tmp_path):
    listed = json.loads(run("presets", "list", "--json").output)
    assert any(p["name"] == "demo" and p["source"] == "bundled" for p in listed)
    assert "pedalboard.Reverb" in run("presets", "show", "demo").output
    good = run("presets", "validate", "demo")
    assert good.exit_code == 0 and good.output.startswith("ok:")
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[[chain]]\neffect = "pedalboard.Gain"\ngain_db = "x"\n')
    bad = run("presets", "validate", "demo", bad_file)
    assert bad.exit_code == 1 and "invalid:" in bad.output and "gain_db: expected a number" in bad.output


def test_weights_list_empty_and_json():
    assert run("weights", "list", "--json").exit_code == 0
    assert isinstance(json.loads(run("weights", "list", "--json").output), list)


def test_weights_import_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"definitely not a checkpoint")
    for kind in ("texture", "grain"):
        result = run("weights", "import", fake, "--kind", kind, "--name", "x", "--stats", fake)
        assert (
            result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output
        )


def _fake_distribution(site: Path, body: str) -> None:
    """An installed distribution with a `cakfx` entry point, as pip would leave it."""
    (site / "broken_cakfx_plugin.py").write_text(body)
    dist = site / "broken_cakfx_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-cakfx-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cakfx]\nbroken = broken_cakfx_plugin\n")


def test_a_plugin_that_fails_to_import_is_reported_once_and_the_rest_works(tmp_path):
    _fake_distribution(tmp_path, "import no_such_module_anywhere\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CAKFX_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "cakfx", "effects", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0
    assert "pedalboard.Reverb" in proc.stdout
    assert proc.stderr.count("plugin 'broken' failed to load") == 1
    assert "no_such_module_anywhere" in proc.stderr and "Traceback" not in proc.stderr


def test_third_party_plugin_adds_an_effect_and_a_command(tmp_path):
    body = (
        "import click, pedalboard\nfrom cakfx.hookspecs import hookimpl\nfrom cakfx.params import Param\n"
        "@hookimpl\ndef register_effects(register):\n"
        "    register('acme.quiet', lambda level: pedalboard.Gain(gain_db=level), "
        "[Param('level', 'float', -12.0, min=-60, max=0)], summary='quieter')\n"
        "@hookimpl\ndef register_commands(cli):\n"
        "    @cli.command()\n    def hello():\n        click.echo('hello from acme')\n"
    )
    _fake_distribution(tmp_path, body)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CAKFX_HOME": str(tmp_path / "home")}
    listed = subprocess.run(
        [sys.executable, "-m", "cakfx", "effects", "show", "acme.quiet"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert listed.returncode == 0 and "level [float] default -12.0" in listed.stdout
    hello = subprocess.run([sys.executable, "-m", "cakfx", "hello"], capture_output=True, text=True, env=env)
    assert hello.stdout.strip() == "hello from acme"


@pytest.mark.slow
@pytest.mark.wheel
def test_installed_wheel_works_from_any_directory(tmp_path):
    """Build the wheel, install it (not editable) into a fresh venv, run cakfx elsewhere."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("cakfx-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "cakfx/plugins/pedalboard_bridge.py" in names and "cakfx/bundled_presets/demo.toml" in names
    assert not any(n.startswith(("plugins/", "trainers/", "presets/", "weights/", "tools/")) for n in names)
    assert "cakfx/demo.py" not in names and "cakfx/docs.py" not in names  # developer scripts stay out
    assert "cakfx/dsp/mel.py" in names and "cakfx/dsp/stft.py" in names
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Dependencies come from the test environment, appended after the venv's own site-packages (a plain
    # path entry: the editable install's finder there is not activated); the project comes from the wheel.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "test_deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CAKFX_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [str(env_dir / "bin" / "cakfx"), "effects", "list"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "pedalboard.Reverb" in out.stdout
    where = subprocess.run(
        [str(py), "-c", "import cakfx; print(cakfx.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    ).stdout
    assert str(env_dir) in where  # the wheel's copy, not the source tree
    presets = subprocess.run(
        [str(env_dir / "bin" / "cakfx"), "presets", "list"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    assert "demo" in presets.stdout
    # every package of the source tree is in the wheel: a neural effect runs from it
    code = (
        "import numpy as np, cakfx; x = np.random.default_rng(0).standard_normal((2, 22050)); "
        "y = cakfx.create_effect('cak.texture', amount=0.8, device='cpu')(x.astype(np.float32), 44100); "
        "print(cakfx.create_effect.__module__, y.shape, bool(np.isfinite(y).all()))"
    )
    run = subprocess.run(
        [str(py), "-c", code],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["cakfx.registry", "(2,", "22050)", "True"]
