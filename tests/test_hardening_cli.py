"""Issue 14 items 5 and 6: the listing commands start without torch, and a plugin that
raises inside a hook is reported by name and skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from cakfx.plugin_manager import failed_plugins, pm
from cakfx.registry import effects, refresh

PROBE = textwrap.dedent(
    """
    import sys
    from click.testing import CliRunner
    from cakfx.cli import cli
    result = CliRunner().invoke(cli, sys.argv[1:])
    assert result.exit_code == 0, result.output
    print("TORCH" if "torch" in sys.modules else "NO-TORCH")
    """
)


def torch_loaded_by(*args: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=os.environ
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1] == "TORCH"


@pytest.mark.parametrize(
    "args",
    [("--help",), ("presets", "list"), ("presets", "show", "texture-drums"), ("weights", "list")],
)
def test_listing_commands_do_not_import_torch(args):
    assert not torch_loaded_by(*args)


def _registration_imports_torch() -> list[str]:
    heavy = []
    for module in ("cakfx.plugins.texture", "cakfx.plugins.grain"):
        code = f"import sys, {module}; print('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        if out.endswith("True"):
            heavy.append(module)
    return heavy


@pytest.mark.parametrize("args", [("effects", "list"), ("presets", "validate", "texture-drums")])
def test_effect_listing_is_torch_free_once_plugins_import_lazily(args):
    heavy = _registration_imports_torch()
    if heavy:
        pytest.xfail(f"{', '.join(heavy)} import torch at import time (their lanes must import it lazily)")
    assert not torch_loaded_by(*args)


class Raising:
    from cakfx.hookspecs import hookimpl

    @hookimpl
    def register_effects(self, register):
        register("ok.before", lambda: None, [])
        raise RuntimeError("plugin bug")


def test_a_plugin_raising_in_register_effects_is_reported_and_skipped(capfd):
    pm.register(Raising(), "raising-plugin")
    refresh()
    try:
        table = effects()
        assert "pedalboard.Gain" in table  # the others still work
        assert "ok.before" not in table  # nothing half-registered from the broken one
        assert failed_plugins["raising-plugin"] == "RuntimeError: plugin bug"
        err = capfd.readouterr().err
        assert (
            "plugin 'raising-plugin' failed in register_effects and was skipped (RuntimeError: plugin bug)"
            in err
        )
    finally:
        pm.unregister(name="raising-plugin")
        failed_plugins.pop("raising-plugin", None)
        refresh()


@pytest.mark.parametrize(
    "module", ["cakfx", "cakfx.registry", "cakfx.batch", "cakfx.presets", "cakfx.neural"]
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_public_api_exports_and_error_types():
    import cakfx

    assert issubclass(cakfx.CakfxError, ValueError)
    assert cakfx.Param("x", "float").check(1) == 1.0
    assert cakfx.hookimpl.project_name == "cakfx"
    for name in cakfx.__all__:
        assert getattr(cakfx, name) is not None
    with pytest.raises(ValueError, match="finite"):
        cakfx.Param("x", "float").check(float("nan"))
