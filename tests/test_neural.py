"""The neural-effect base (cakfx.neural): one declaration gives registration, validation,
weights handling and node properties, for the built-in effects and for a plugin's own."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

import cakfx
from cakfx.errors import CakfxError, CakfxTypeError
from cakfx.plugin_manager import pm
from cakfx.registry import get_effect, refresh
from cakfx.weights import save_weights, user_weights_dir
from tests.signals import tone

README = Path(__file__).resolve().parents[1] / "README.md"
SR = 44100


@pytest.fixture
def acme():
    """The README's plugin example, run as a module and registered through the real hooks."""
    block = README.read_text().split("<!-- runnable: neural-plugin -->", 1)[1]
    block = block.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("acme_tilt")
    exec(compile(block, "README.md (neural-plugin)", "exec"), module.__dict__)
    pm.register(module, "acme-tilt")
    refresh()
    yield module
    pm.unregister(name="acme-tilt")
    refresh()


def install_tilt(gain: float, name: str = "acme-tilt-default") -> Path:
    path = user_weights_dir() / f"{name}.safetensors"
    return save_weights(path, {"gain": torch.tensor([gain])}, kind="acme.tilt")


def test_a_plugins_neural_effect_gets_registration_validation_and_weights(acme):
    install_tilt(0.5)
    spec = get_effect("acme.tilt")
    assert [p.name for p in spec.params] == ["amount", "weights"]  # the weights parameter is added
    assert spec.param_map["weights"].default == "acme-tilt-default" and spec.takes_device
    node = cakfx.create_effect("acme.tilt", amount=0.8)
    assert repr(node) == "<cakfx.TiltNode amount=0.8 weights='acme-tilt-default' device='cpu'>"
    x = tone(0.1, channels=2)
    np.testing.assert_allclose(node(x, SR), x * 1.4, rtol=1e-6)  # 1 + 0.8 * the stored 0.5
    node.amount = 0.2  # applies from the next call
    np.testing.assert_allclose(node(x, SR), x * 1.1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"acme\.tilt: amount: 2\.0 is above the maximum 1\.0"):
        node.amount = 2
    with pytest.raises(TypeError, match="acme.tilt: amount: expected a number, got str 'loud'"):
        node.amount = "loud"
    assert node.amount == 0.2  # a refused value leaves the setting as it was
    with pytest.raises(AttributeError, match="weights are fixed"):
        node.weights = "other"
    assert node.parameters["amount"].max == 1.0 and list(node.parameters) == ["amount", "weights"]
    # other weights by name; building it again reads the file once (cached by path, size, mtime)
    install_tilt(-1.0, "acme-dark")
    dark = cakfx.create_effect("acme.tilt", amount=1.0, weights="acme-dark")
    assert dark.weights == "acme-dark" and np.allclose(dark(x, SR), 0.0)
    assert acme.EFFECT.load_weights("acme-dark") is acme.EFFECT.load_weights("acme-dark")
    with pytest.raises(CakfxError, match="weights are for cak.texture, not acme.tilt"):
        cakfx.create_effect("acme.tilt", weights="cak-texture-default")


def test_missing_default_weights_give_the_effects_hint(acme):
    with pytest.raises(CakfxError, match="unknown weights 'acme-tilt-default'.*pip install acme-tilt-"):
        cakfx.create_effect("acme.tilt")
    with pytest.raises(CakfxError, match="unknown weights 'nope'") as info:
        cakfx.create_effect("acme.tilt", weights="nope")
    assert "pip install" not in str(info.value)  # the hint is for the default weights only


@pytest.mark.parametrize("kind", ["cak.texture", "cak.grain"])
def test_builtin_nodes_are_validated_and_show_every_setting(kind):
    node = cakfx.create_effect(kind, device="cpu")
    spec = get_effect(kind)
    assert list(node.parameters) == [p.name for p in spec.params]  # declared once, in one order
    for p in spec.params:  # every setting and the weights name appear in the repr
        assert f" {p.name}=" in repr(node)
    assert f"weights='{kind.replace('.', '-')}-default'" in repr(node)
    control = spec.params[0].name
    with pytest.raises(CakfxTypeError):
        setattr(node, control, "loud")
    with pytest.raises(CakfxError, match="above the maximum"):
        setattr(node, control, 5)
    with pytest.raises(CakfxError, match="level: expected one of 'match', 'original', 'off'"):
        node.level = "loud"
    node.level, node.ceiling_db = "off", -3
    assert "level='off' ceiling_db=-3" in repr(node)


@pytest.mark.parametrize("kind", ["cak.texture", "cak.grain"])
def test_a_setting_changed_on_a_built_node_equals_a_node_built_with_it(kind):
    """The level stage is rebuilt for the new setting: the same output as a fresh node."""
    control = get_effect(kind).params[0].name
    node = cakfx.create_effect(kind, device="cpu", level="off", **{control: 1.0})
    x = tone(1.0, channels=1)
    raw = node(x, SR)
    node.level, node.ceiling_db = "match", -6.0
    fresh = cakfx.create_effect(kind, device="cpu", level="match", ceiling_db=-6.0, **{control: 1.0})
    changed = node(x, SR)
    np.testing.assert_array_equal(changed, fresh(x, SR))
    assert not np.allclose(changed, raw)
    assert 20 * np.log10(np.abs(changed).max()) <= -6.0 + 0.05  # the new ceiling holds


def test_registering_a_neural_effect_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, cakfx.registry as r; r.effects(); "
        "assert 'cak.texture' in r.effects() and 'cak.grain' in r.effects(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
