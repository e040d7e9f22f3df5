"""cakfx: learned CAK audio effects as pedalboard-compatible nodes, in bulk.

Public API::

    import cakfx
    node = cakfx.create_effect("cak.texture", amount=0.6)
    chain = cakfx.load_preset("texture-drums")
    out = chain(audio, 44100)
    cakfx.process_file("in.wav", "out.wav", chain)
"""

from __future__ import annotations

from cakfx.chain import Chain
from cakfx.errors import CakfxError
from cakfx.node import EffectNode
from cakfx.registry import create_effect
from cakfx.weights import load_model

__version__ = "0.1.0"


def load_preset(name_or_path, device=None, overrides=None) -> Chain:
    """Build the ``Chain`` a preset describes (a path, a user preset or a bundled one).

    ``overrides`` maps ``"ID.PARAM"`` to values, as ``--set`` does.
    """
    from cakfx.presets import load_preset as _load

    return _load(name_or_path, device=device, overrides=overrides)


def process_file(in_path, out_path, chain):
    """Process one file through ``chain``, keeping its rate, channels, length and format.

    Returns a ``cakfx.batch.FileResult``; raises ``CakfxError`` on bad input.
    """
    from cakfx.batch import process_file as _process

    return _process(in_path, out_path, chain)


__all__ = [
    "CakfxError",
    "Chain",
    "EffectNode",
    "create_effect",
    "load_model",
    "load_preset",
    "process_file",
    "__version__",
]
