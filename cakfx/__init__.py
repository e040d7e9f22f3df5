"""cakfx: learned CAK audio effects as pedalboard-compatible nodes, in bulk.

Public API::

    import cakfx
    node = cakfx.create_effect("cak.texture", amount=0.6)
    chain = cakfx.load_preset("texture-drums")
    out = chain(audio, 44100)
    cakfx.process_file("in.wav", "out.wav", chain)

Names are imported on first use, so ``import cakfx`` (and ``cakfx --help``) stays
fast and never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cakfx.errors import CakfxError

if TYPE_CHECKING:
    import pedalboard

    from cakfx.batch import FileResult
    from cakfx.chain import Chain
    from cakfx.neural import NeuralEffect, NeuralNode
    from cakfx.node import EffectNode
    from cakfx.params import Param
    from cakfx.registry import create_effect
    from cakfx.training import train
    from cakfx.weights import load_model

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "Chain": "cakfx.chain",
    "EffectNode": "cakfx.node",
    "Param": "cakfx.params",
    "create_effect": "cakfx.registry",
    "load_model": "cakfx.weights",
    "hookimpl": "cakfx.hookspecs",
    "FileResult": "cakfx.batch",
    "train": "cakfx.training",
    "NeuralEffect": "cakfx.neural",
    "NeuralNode": "cakfx.neural",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cakfx' has no attribute {name!r}")


def load_preset(
    name_or_path: str | os.PathLike,
    device: Any = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Chain:
    """Build the ``Chain`` a preset describes (a path, a user preset or a bundled one).

    ``overrides`` maps ``"ID.PARAM"`` to values, as ``--set`` does (or is a list of
    ``"ID.PARAM=VALUE"`` strings). The preset file is never modified. Errors are
    ``CakfxError`` (a ``ValueError``) naming the file, the chain entry and the key.

    >>> import cakfx, numpy as np
    >>> chain = cakfx.load_preset("demo", overrides={"room.wet_level": 0.1})
    >>> out = chain(np.zeros((2, 4410), np.float32), 44100)
    >>> out.shape
    (2, 4410)
    """
    from cakfx.presets import load_preset as _load

    return _load(name_or_path, device=device, overrides=overrides)


def process_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    chain: EffectNode | pedalboard.Plugin | Callable[[Any, float], Any],
    out_format: str = "same",
) -> FileResult:
    """Stream one file through ``chain``, keeping its rate, channels, length and format.

    ``chain`` is a node (a ``Chain`` streams block by block), a pedalboard plugin, or any
    callable ``f(audio, sample_rate)`` (called once on the whole file).

    Returns a ``cakfx.batch.FileResult`` (with the output's peak, true peak and clipped
    samples); raises ``CakfxError`` on bad input. See ``cakfx.batch.process_file``.
    """
    from cakfx.batch import process_file as _process

    return _process(in_path, out_path, chain, out_format)


__all__ = [
    "CakfxError",
    "Chain",
    "EffectNode",
    "FileResult",
    "NeuralEffect",
    "NeuralNode",
    "Param",
    "create_effect",
    "hookimpl",
    "train",
    "load_model",
    "load_preset",
    "process_file",
    "__version__",
]
