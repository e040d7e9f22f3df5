"""Effect parameter descriptions: used for validation, ``--set`` and ``effects show``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cakfx.errors import CakfxTypeError

TYPES = ("float", "int", "bool", "str", "choice", "weights", "path", "table")


@dataclass(frozen=True)
class Param:
    """One parameter of an effect.

    ``type`` is one of ``TYPES``; ``weights`` is a weights name or a path to a
    ``.safetensors`` file, ``table`` a TOML table (e.g. external plugin
    parameter values). ``min``/``max`` bound numeric values (inclusive).
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = field(default_factory=tuple)
    required: bool = False

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``ValueError``
        (``CakfxTypeError``, also a ``TypeError``, for a value of the wrong type)."""
        t = self.type
        if t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CakfxTypeError(f"expected a number, got {_describe(value)}")
            try:
                value = float(value)
            except OverflowError:  # an integer too large for a float
                raise ValueError(f"{value} is too large") from None
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value!r}")
        elif t == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise CakfxTypeError(f"expected an integer, got {_describe(value)}")
        elif t == "bool":
            if not isinstance(value, bool):
                raise CakfxTypeError(f"expected true or false, got {_describe(value)}")
        elif t in ("str", "weights", "path"):
            if not isinstance(value, str):
                raise CakfxTypeError(f"expected a string, got {_describe(value)}")
        elif t == "choice":
            if value not in self.choices:
                options = ", ".join(repr(c) for c in self.choices)
                raise ValueError(f"expected one of {options}, got {_describe(value)}")
        elif t == "table":
            if not isinstance(value, dict):
                raise CakfxTypeError(f"expected a table, got {_describe(value)}")
            check_finite_tree(value, self.name)
        if t in ("float", "int"):
            if self.min is not None and value < self.min:
                raise ValueError(f"{value} is below the minimum {self.min}{self.range_text()}")
            if self.max is not None and value > self.max:
                raise ValueError(f"{value} is above the maximum {self.max}{self.range_text()}")
        return value

    def range_text(self) -> str:
        if self.min is None and self.max is None:
            return ""
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return f" (range {lo} … {hi})"

    def to_dict(self) -> dict:
        out = {"name": self.name, "type": self.type, "default": self.default, "help": self.help}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        if self.required:
            out["required"] = True
        return out


def check_finite_tree(
    value: Any, where: str, max_abs: float = math.inf, max_depth: int = 32, depth: int = 0
) -> None:
    """Nested tables and lists (external plugin settings, weights metadata) hold only finite
    numbers within ``max_abs``, nested at most ``max_depth`` deep; else ``ValueError`` naming
    the key path."""
    if depth > max_depth:
        raise ValueError(f"{where}: nested too deeply")
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= max_abs):
        limit = f" within ±{max_abs:g}" if math.isfinite(max_abs) else ""
        raise ValueError(f"{where}: {value!r} is not a finite number{limit}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite_tree(v, f"{where}.{k}", max_abs, max_depth, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite_tree(v, f"{where}[{i}]", max_abs, max_depth, depth + 1)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
