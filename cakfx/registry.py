"""The effect registry: what ``register_effects`` hooks registered, and ``create_effect``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from cakfx.errors import CakfxError
from cakfx.params import Param
from cakfx.plugin_manager import load_plugins, pm, report_hook_failure

if TYPE_CHECKING:  # annotations only: importing pedalboard here would slow every command
    from pedalboard import Plugin

    from cakfx.node import EffectNode


@dataclass
class EffectSpec:
    """A registered effect.

    ``factory(**params)`` builds the node. Neural effects also provide
    ``load_model(weights_file, device) -> torch.nn.Module`` (for
    ``cakfx.load_model``) and ``import_checkpoint(path, **options) -> (tensors,
    metadata)`` (for ``cakfx weights import``); ``takes_device`` says the factory
    accepts a ``device=`` keyword.
    """

    name: str
    factory: Callable[..., Any]
    params: list[Param]
    summary: str = ""
    description: str = ""
    load_model: Callable[..., Any] | None = None
    import_checkpoint: Callable[..., Any] | None = None
    takes_device: bool = False
    # draw the model's analysis picture: analyse(weights_file, out_png) -> {"path", "width", "height"}
    analyse: Callable[..., Any] | None = None
    # extra per-value validation (e.g. pedalboard setters); raises ValueError(param, message)
    validate: Callable[[dict], None] | None = None
    # the tensors a weights file must hold: expected_shapes(stats) -> {name: shape}; a name
    # ending in "?" is optional
    expected_shapes: Callable[[dict], dict[str, tuple[int, ...]]] | None = None
    plugin: str = ""
    param_map: dict[str, Param] = field(init=False)

    def __post_init__(self) -> None:
        self.param_map = {p.name: p for p in self.params}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "description": self.description,
            "plugin": self.plugin,
            "params": [p.to_dict() for p in self.params],
        }


_effects: dict[str, EffectSpec] | None = None


def effects() -> dict[str, EffectSpec]:
    """All registered effects by name (plugins are loaded on first use)."""
    global _effects
    if _effects is None:
        load_plugins()
        found: dict[str, EffectSpec] = {}
        for impl in pm.hook.register_effects.get_hookimpls():
            plugin_name = impl.plugin_name
            mine: dict[str, EffectSpec] = {}

            def register(name, factory, params, _plugin=plugin_name, _mine=mine, **info):
                _mine[name] = EffectSpec(name, factory, list(params), plugin=_plugin, **info)

            try:  # a plugin that raises while registering is reported and skipped, not fatal
                impl.function(register=register)
            except Exception as exc:
                report_hook_failure(plugin_name, "register_effects", exc)
                continue
            found.update(mine)
        _effects = dict(sorted(found.items()))
    return _effects


def refresh() -> None:
    """Forget the registry so the next ``effects()`` asks the plugins again."""
    global _effects
    _effects = None


def closest(name: str, options) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def get_effect(name: str) -> EffectSpec:
    table = effects()
    if name not in table:
        lowered = {k.lower(): k for k in table}
        if name.lower() in lowered:
            return table[lowered[name.lower()]]
        raise CakfxError(f"unknown effect {name!r}{closest(name, table)}")
    return table[name]


def check_params(spec: EffectSpec, params: dict, where: str = "") -> dict:
    """Validate ``params`` against ``spec``; return them with defaults filled in.

    Errors name ``where`` (file / chain entry), the key and the problem.
    """
    prefix = f"{where}: " if where else ""
    out: dict[str, Any] = {}
    for key, value in params.items():
        param = spec.param_map.get(key)
        if param is None:
            raise CakfxError(
                f"{prefix}unknown parameter {key!r} for {spec.name}{closest(key, spec.param_map)}"
            )
        try:
            out[key] = param.check(value)
        except ValueError as exc:
            raise CakfxError(f"{prefix}{key}: {exc}") from None
    for param in spec.params:
        if param.name not in out:
            if param.required:
                raise CakfxError(f"{prefix}missing required parameter {param.name!r}")
            if param.default is not None:
                out[param.name] = param.default
    if spec.validate is not None:
        try:
            spec.validate(out)
        except ValueError as exc:
            raise CakfxError(f"{prefix}{exc}") from None
    return out


def create_effect(name: str, *, device: Any = None, where: str = "", **params: Any) -> EffectNode | Plugin:
    """Build the effect ``name`` with validated ``params``.

    Returns a node: an ``EffectNode`` or a native ``pedalboard.Plugin``. A bad value
    is a ``CakfxError`` (a ``ValueError``) naming the parameter and its range.

    >>> import cakfx
    >>> cakfx.create_effect("pedalboard.Gain", gain_db=-6.0)
    <pedalboard.Gain gain_db=-6 at ...>
    >>> cakfx.create_effect("pedalboard.Reverb", room_size=2.0)
    Traceback (most recent call last):
    ...
    cakfx.errors.CakfxError: room_size: 2.0 is above the maximum 1.0 (range 0 … 1)
    """
    spec = get_effect(name)
    return build_node(spec, check_params(spec, params, where), device, where)


def build_node(spec: EffectSpec, checked: dict[str, Any], device: Any = None, where: str = "") -> Any:
    """Call ``spec``'s factory with parameters that ``check_params`` already accepted."""
    kwargs = dict(checked)
    if spec.takes_device:
        kwargs["device"] = device
    try:
        return spec.factory(**kwargs)
    except CakfxError as exc:
        if where and not str(exc).startswith(where):
            raise CakfxError(f"{where}: {exc}") from None
        raise
