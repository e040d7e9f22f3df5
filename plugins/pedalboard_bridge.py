"""Every built-in pedalboard effect as ``pedalboard.<Class>``, plus ``plugin.external``.

Parameters are read from the classes: every property of a default instance
becomes a ``Param`` with that default. Values are checked by the class itself
(its setters raise on bad values) and, where pedalboard documents a range, by
``RANGES`` so ``--set`` and presets fail with a clear message.
"""

from __future__ import annotations

import enum
import inspect
from pathlib import Path

import pedalboard

from cakfx.errors import CakfxError
from cakfx.hookspecs import hookimpl
from cakfx.params import Param

# Plugin classes that are containers, abstract, or hosts for external plugins.
EXCLUDED = {
    "Plugin",
    "Pedalboard",
    "Chain",
    "Mix",
    "PluginContainer",
    "ExternalPlugin",
    "VST3Plugin",
    "AudioUnitPlugin",
    "IIRFilter",
}
# Documented ranges (pedalboard/JUCE); anything else is left to the class's setter.
RANGES = {
    "Reverb": {
        p: (0.0, 1.0) for p in ("room_size", "damping", "wet_level", "dry_level", "width", "freeze_mode")
    },
    "Chorus": {"mix": (0.0, 1.0), "depth": (0.0, 1.0), "feedback": (-1.0, 1.0), "rate_hz": (0.0, 100.0)},
    "Delay": {"mix": (0.0, 1.0), "feedback": (0.0, 1.0), "delay_seconds": (0.0, None)},
    "Phaser": {"mix": (0.0, 1.0), "depth": (0.0, 1.0), "feedback": (-1.0, 1.0)},
    "Compressor": {"ratio": (1.0, None), "attack_ms": (0.0, None), "release_ms": (0.0, None)},
    "NoiseGate": {"ratio": (1.0, None), "attack_ms": (0.0, None), "release_ms": (0.0, None)},
    "Limiter": {"release_ms": (0.0, None)},
    "LadderFilter": {"resonance": (0.0, 1.0), "cutoff_hz": (0.0, None), "drive": (1.0, None)},
    "Bitcrush": {"bit_depth": (0.0, 32.0)},
    "PitchShift": {"semitones": (-72.0, 72.0)},
    "MP3Compressor": {"vbr_quality": (0.0, 10.0)},
    "Resample": {"target_sample_rate": (1.0, None)},
    "Convolution": {"mix": (0.0, 1.0)},
    "HighpassFilter": {"cutoff_frequency_hz": (0.0, None)},
    "LowpassFilter": {"cutoff_frequency_hz": (0.0, None)},
}
# Classes whose constructor needs arguments that have no sensible default.
REQUIRED = {
    "Convolution": [
        Param("impulse_response_filename", "path", help="impulse response audio file", required=True)
    ],
}


def effect_classes() -> dict[str, type]:
    """Built-in pedalboard effect classes by name."""
    found = {}
    for name, obj in vars(pedalboard).items():
        if inspect.isclass(obj) and issubclass(obj, pedalboard.Plugin) and not name.startswith("_"):
            if name not in EXCLUDED:
                found[name] = obj
    return dict(sorted(found.items()))


def _properties(cls: type) -> list[str]:
    names = []
    for klass in cls.__mro__:
        names += [k for k, v in vars(klass).items() if isinstance(v, property) and not k.startswith("_")]
    return [
        n for n in dict.fromkeys(names) if n not in ("is_effect", "is_instrument", "reported_latency_samples")
    ]


def class_params(name: str, cls: type) -> list[Param]:
    """Parameters of a pedalboard class, read from a default instance."""
    params = list(REQUIRED.get(name, []))
    required = {p.name for p in params}
    try:
        instance = cls()
    except TypeError:
        instance = None
    ranges = RANGES.get(name, {})
    for prop in _properties(cls):
        if prop in required:
            continue
        doc = (getattr(cls, prop).__doc__ or "").strip().splitlines()
        help_text = doc[0] if doc else ""
        default = getattr(instance, prop) if instance is not None else None
        lo, hi = ranges.get(prop, (None, None))
        if isinstance(default, enum.Enum) or hasattr(default, "__members__"):
            members = tuple(type(default).__members__)
            params.append(Param(prop, "choice", default.name, help_text, choices=members))
        elif isinstance(default, bool):
            params.append(Param(prop, "bool", default, help_text))
        elif isinstance(default, (int, float)):
            params.append(Param(prop, "float", round(float(default), 6), help_text, min=lo, max=hi))
        elif name == "Convolution" and prop == "mix":
            params.append(Param(prop, "float", 1.0, help_text, min=0.0, max=1.0))
    return params


def _factory(name: str, cls: type, params: list[Param]):
    enums = {p.name for p in params if p.type == "choice"}

    def build(**values):
        kwargs = {}
        for key, value in values.items():
            if key in enums:
                enum_type = type(getattr(cls(), key))
                value = enum_type.__members__[value]
            kwargs[key] = value
        if name == "Convolution":
            path = Path(kwargs["impulse_response_filename"]).expanduser()
            if not path.is_file():
                raise CakfxError(f"impulse response not found: {path}")
            kwargs["impulse_response_filename"] = str(path)
        try:
            return cls(**kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise CakfxError(f"pedalboard.{name}: {exc}") from None

    return build


def _validator(name: str, cls: type):
    def validate(values: dict) -> None:
        # Let the class's own setters judge each value (they raise on impossible ones).
        if name in REQUIRED:
            return
        instance = cls()
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    setattr(instance, key, value)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{key}: {exc}") from None

    return validate


def load_external(path: str, parameters: dict | None = None, plugin_name: str = ""):
    """A VST3/AU file through ``pedalboard.load_plugin`` with parameter values."""
    file = Path(path).expanduser()
    if not file.exists():
        raise CakfxError(f"external plugin not found: {file}")
    try:
        return pedalboard.load_plugin(
            str(file), parameter_values=dict(parameters or {}), plugin_name=plugin_name or None
        )
    except (ImportError, ValueError, RuntimeError, TypeError) as exc:
        raise CakfxError(f"cannot load external plugin {file}: {exc}") from None


@hookimpl
def register_effects(register):
    for name, cls in effect_classes().items():
        params = class_params(name, cls)
        doc = (cls.__doc__ or "").strip()
        register(
            f"pedalboard.{name}",
            _factory(name, cls, params),
            params,
            summary=doc.splitlines()[0] if doc else name,
            description=doc,
            validate=_validator(name, cls),
        )
    register(
        "plugin.external",
        load_external,
        [
            Param("path", "path", help="VST3 or Audio Unit plugin file", required=True),
            Param("parameters", "table", {}, help="parameter values by name, e.g. {mix = 0.5}"),
            Param("plugin_name", "str", "", help="which plugin of a multi-plugin shell to load"),
        ],
        summary="A VST3 or Audio Unit plugin loaded with pedalboard.load_plugin",
        description="Loads a VST3 (.vst3) or Audio Unit (.component) file and sets its parameters "
        "from the `parameters` table. Paths in presets are relative to the preset file.",
    )
