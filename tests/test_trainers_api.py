"""Trainers as a library: registration without torch, ``cakfx.train``, the Adam the recipes use,
the default thread count, and what a run imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cakfx.errors import CakfxError
from tests.test_train import make_samples

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, returned here."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})},
        cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_listing_trainers_and_train_help_import_no_torch():
    """What the trainers add to start-up: their registration and ``train X --help`` import no torch
    (the effects' registration is checked by the CLI start-up tests)."""
    out = run_python(
        "import json, sys\n"
        "import cakfx.registry\n"
        "cakfx.registry.effects()\n"
        "before = 'torch' in sys.modules\n"
        "from click.testing import CliRunner\n"
        "from cakfx.training import trainers\n"
        "names = sorted(trainers())\n"
        "after_list = 'torch' in sys.modules\n"
        "import cakfx.cli\n"
        "r = CliRunner().invoke(cakfx.cli.cli, ['train', 'texture', '--help'])\n"
        "print(json.dumps({'names': names, 'code': r.exit_code, 'help': r.output, 'before': before,"
        " 'after_list': after_list, 'after_help': 'torch' in sys.modules}))"
    )
    assert out["names"] == ["grain", "texture"]
    assert out["code"] == 0 and "--batch-size" in out["help"] and "--checkpoint-every" in out["help"]
    if out["before"]:
        pytest.skip("the effect plugins import torch at registration (the CLI start-up tests cover that)")
    assert out["after_list"] is False and out["after_help"] is False


@pytest.mark.parametrize("betas", [(0.0, 0.9), (0.5, 0.999)])
def test_adam_is_torch_adam_bit_for_bit_and_shares_its_state_layout(betas):
    from cakfx.trainers.optim import Adam

    nn = torch.nn
    torch.manual_seed(0)
    ours_net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 1))
    theirs_net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 1))
    theirs_net.load_state_dict(ours_net.state_dict())
    ours = Adam(ours_net.parameters(), lr=1e-3, betas=betas)
    theirs = torch.optim.Adam(theirs_net.parameters(), lr=1e-3, betas=betas)
    x = torch.randn(4, 1, 12, 12)
    for step in range(6):
        for net, opt in ((ours_net, ours), (theirs_net, theirs)):
            opt.zero_grad()
            net(x * (step + 1)).square().mean().backward()
            opt.step()
    for a, b in zip(ours_net.parameters(), theirs_net.parameters()):
        assert torch.equal(a, b)
    # checkpoints written by either resume with the other
    resumed = Adam(theirs_net.parameters(), lr=1e-3, betas=betas)
    resumed.load_state_dict(theirs.state_dict())
    back = torch.optim.Adam(ours_net.parameters(), lr=1e-3, betas=betas)
    back.load_state_dict(ours.state_dict())
    for opt_a, opt_b in ((resumed, theirs), (ours, back)):
        for net, opt in ((theirs_net, opt_a), (ours_net, opt_b)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours_net.parameters(), theirs_net.parameters()):
        assert torch.equal(a, b)


def test_adam_refuses_state_of_another_model():
    from cakfx.trainers.optim import Adam

    opt = Adam(torch.nn.Linear(3, 2).parameters())
    one_param = {"state": {}, "param_groups": [{"params": [0], "lr": 1, "eps": 1, "betas": (0, 1)}]}
    with pytest.raises(ValueError, match="does not match"):
        opt.load_state_dict(one_param)
    net = torch.nn.Linear(5, 2)
    other = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 5)).sum().backward()
    other.step()
    with pytest.raises(ValueError, match="does not match"):
        opt.load_state_dict(other.state_dict())


def test_python_api_trains_and_the_run_is_lean(tmp_path):
    """``cakfx.training.train`` writes usable weights; the run imports neither torch._dynamo nor pyplot,
    and on the CPU uses the recipe's measured thread default (1) unless told otherwise."""
    samples = make_samples(tmp_path / "samples", n=4, seconds=1.0)
    home = tmp_path / "home"
    out = run_python(
        "import json, sys, torch\n"
        "torch.set_num_threads(2)\n"
        "from cakfx.training import train\n"
        f"r = train('grain', {str(samples)!r}, 'api-grain', epochs=1, device='cpu', quiet=True)\n"
        "from cakfx.weights import load_weights\n"
        "w = load_weights(r.weights)\n"
        "print(json.dumps({'kind': w.kind, 'threads': w.training['threads'], 'preset': str(r.preset),"
        " 'dynamo': 'torch._dynamo' in sys.modules, 'pyplot': 'matplotlib.pyplot' in sys.modules,"
        " 'png': (r.run_dir / 'history.png').is_file()}))",
        env={"CAKFX_HOME": str(home)},
    )
    assert out["kind"] == "cak.grain"
    assert out["threads"] == 1
    assert Path(out["preset"]).is_file()
    assert out["dynamo"] is False and out["pyplot"] is False
    assert out["png"] is True  # drawn without pyplot (matplotlib comes with the dev extra)


def test_python_api_errors_are_one_line(tmp_path):
    from cakfx.training import train

    with pytest.raises(CakfxError, match="unknown trainer 'tape'"):
        train("tape", tmp_path, "x")
    with pytest.raises(CakfxError, match="unknown training option"):
        train("texture", tmp_path, "x", epoch=3)


def test_trainers_honour_cakfx_device(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cakfx.cli import cli

    samples = make_samples(tmp_path / "samples", n=2, seconds=0.5)
    monkeypatch.setenv("CAKFX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAKFX_DEVICE", "tpu")
    result = CliRunner().invoke(cli, ["train", "texture", str(samples), "-n", "dev"])
    assert result.exit_code == 1
    assert "unknown device 'tpu'" in result.output and "Traceback" not in result.output
