"""``Chain``: cakfx nodes and pedalboard plugins, run in order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pedalboard

from cakfx.node import EffectNode


class Chain(EffectNode):
    """A list of effects run in order; itself a node, so chains nest.

    Items may be cakfx nodes, ``pedalboard.Plugin`` objects (a
    ``pedalboard.Pedalboard`` too) or nested ``Chain`` objects. Consecutive
    native plugins are run as one native ``Pedalboard`` call.
    ``ids`` optionally names each item (preset chain ids).
    """

    name = "chain"

    def __init__(self, items: Iterable = (), ids: Sequence[str | None] | None = None) -> None:
        self.items = list(items)
        for item in self.items:
            if not isinstance(item, (EffectNode, pedalboard.Plugin)):
                raise TypeError(f"Chain items must be cakfx nodes or pedalboard plugins, got {item!r}")
        self.ids = list(ids) if ids is not None else [None] * len(self.items)
        if len(self.ids) != len(self.items):
            raise ValueError("ids must have one entry per chain item")

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.items[self.ids.index(key)]
        return self.items[key]

    def append(self, item, id: str | None = None) -> None:
        self.items.append(item)
        self.ids.append(id)

    def stages(self) -> list:
        """Items with consecutive native plugins grouped into one ``Pedalboard``."""
        out: list = []
        run: list = []
        for item in self.items:
            if isinstance(item, pedalboard.Plugin):
                run.append(item)
                continue
            if run:
                out.append(run[0] if len(run) == 1 else pedalboard.Pedalboard(run))
                run = []
            out.append(item)
        if run:
            out.append(run[0] if len(run) == 1 else pedalboard.Pedalboard(run))
        return out

    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        dtype = audio.dtype
        for stage in self.stages():
            if isinstance(stage, pedalboard.Plugin):
                audio = stage(np.ascontiguousarray(audio, dtype=np.float32), sample_rate)
            else:
                audio = stage.process(audio, sample_rate)
        return np.asarray(audio, dtype=dtype)

    def reset(self) -> None:
        for item in self.items:
            item.reset()

    def __repr__(self) -> str:
        inner = ", ".join(repr(i) for i in self.items)
        return f"Chain([{inner}])"
