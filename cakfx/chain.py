"""``Chain``: cakfx nodes and pedalboard plugins, run in order, offline or streaming."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Union

import numpy as np
import pedalboard

from cakfx.errors import CakfxError
from cakfx.node import EffectNode

# Native classes whose ``reset=False`` output lags their input (pedalboard 0.9 returns
# fewer samples than it was given until its internal buffers fill). Every other built-in
# effect streams sample for sample; external plugins (VST3/AU) may report latency too.
LATENT_NATIVE = ("BrickwallLimiter", "Resample", "MP3Compressor", "GSMFullRateCompressor", "PitchShift")
# Native classes whose streamed output differs from their own offline output in pedalboard
# itself (measured on 0.9.26), so no chunking of a chain holding them equals one call.
NOT_STREAM_EQUAL = ("GSMFullRateCompressor", "PitchShift")
# Block size for measuring a native stage's delay; the bound adds ``_PROBE - 1`` samples so
# any chunking (down to one sample per call) stays within it.
_PROBE = 16
#: what a chain holds: cakfx nodes (chains too) and pedalboard plugins
Item = Union[EffectNode, pedalboard.Plugin]


def _natives(plugin: pedalboard.Plugin) -> list[pedalboard.Plugin]:
    """The leaf plugins of a native plugin or container."""
    if isinstance(plugin, pedalboard.PluginContainer):
        return [leaf for child in plugin for leaf in _natives(child)]
    return [plugin]


def _settings(plugin: pedalboard.Plugin) -> dict:
    """Readable settings of a native leaf plugin (what a fresh equivalent needs)."""
    out = {}
    for klass in type(plugin).__mro__:
        for key, value in vars(klass).items():
            if isinstance(value, property) and not key.startswith("_") and key not in out:
                if key in ("is_effect", "is_instrument", "reported_latency_samples"):
                    continue
                out[key] = getattr(plugin, key)
    return out


def _fresh_copy(plugin: pedalboard.Plugin) -> pedalboard.Plugin:
    """A new plugin with the same settings and empty state (the original is left alone)."""
    if isinstance(plugin, pedalboard.PluginContainer):
        return type(plugin)([_fresh_copy(child) for child in plugin])
    copy = type(plugin)()
    for key, value in _settings(plugin).items():
        try:
            setattr(copy, key, value)
        except (AttributeError, TypeError):  # read-only or constructor-only settings
            pass
    return copy


class _NativeStage:
    """One native plugin (or a grouped ``Pedalboard``) made to keep the node streaming contract.

    pedalboard's ``reset=False`` output is aligned with its offline output but shorter:
    a latent plugin returns nothing until its buffers fill. A FIFO primed with
    ``latency`` zeros turns that into blocks of the input's length, delayed by exactly
    ``latency`` samples.
    """

    def __init__(self, plugin: pedalboard.Plugin) -> None:
        self.plugin = plugin
        self.fifo: np.ndarray | None = None
        self.stream_latency = 0
        self.block_size = 0
        self._latency_cache: dict = {}

    def latency_samples(self, sample_rate: float, buffer_size: int = 8192) -> int:
        leaves = _natives(self.plugin)
        external = [p for p in leaves if hasattr(p, "reported_latency_samples")]
        if not external and not any(type(p).__name__ in LATENT_NATIVE for p in leaves):
            return 0
        key = (
            float(sample_rate),
            int(buffer_size),
            tuple((type(p).__name__, repr(sorted(_settings(p).items()))) for p in leaves),
        )
        if key not in self._latency_cache:
            try:
                self._latency_cache[key] = self._measure(sample_rate, buffer_size)
            except Exception:  # no fresh copy possible (an external plugin): trust its report
                self._latency_cache[key] = sum(int(p.reported_latency_samples) for p in external)
        return self._latency_cache[key]

    def _measure(self, sample_rate: float, buffer_size: int) -> int:
        """Most output a fresh equivalent ever owes its input, fed silence in small blocks
        (plus ``_PROBE - 1``: any finer chunking) and in ``buffer_size`` blocks."""
        small = self._owed(sample_rate, _PROBE)
        return max(small + _PROBE - 1 if small else 0, self._owed(sample_rate, buffer_size))

    def _owed(self, sample_rate: float, block_size: int) -> int:
        probe = _fresh_copy(self.plugin)
        block = np.zeros((1, block_size), np.float32)
        fed = produced = owed = 0
        # run well past the largest debt seen (a quarter second beyond twice it), at most 10 s
        while fed < min(2 * owed + sample_rate / 4, 10 * sample_rate):
            got = probe(block, sample_rate, buffer_size=block_size, reset=False).shape[-1]
            fed, produced = fed + block_size, produced + got
            owed = max(owed, fed - produced)
        return owed

    def process(self, audio: np.ndarray, sample_rate: float, buffer_size: int) -> np.ndarray:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        return self.plugin(audio, sample_rate, buffer_size=buffer_size, reset=True)

    def stream(self, audio: np.ndarray, sample_rate: float, buffer_size: int) -> np.ndarray:
        channels, n = audio.shape
        if self.fifo is None:
            if n <= channels:  # pedalboard must see one unambiguous block before short ones
                raise CakfxError(
                    f"the first block of a stream through {type(self.plugin).__name__} must have more "
                    f"samples than channels, got {n} samples of {channels} channels"
                )
            self.stream_latency = self.latency_samples(sample_rate, buffer_size)
            self.fifo = np.zeros((channels, self.stream_latency), np.float32)
            # pedalboard re-prepares (and so clears) a plugin given a larger block than its
            # first one: keep every later call within the first block's size
            self.block_size = min(int(buffer_size), n)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        out = self.plugin(audio, sample_rate, buffer_size=self.block_size, reset=False)
        if out.size:
            self.fifo = np.concatenate([self.fifo, out.reshape(channels, -1)], axis=1)
        if self.fifo.shape[1] < n:  # the measured bound was wrong: say so rather than misalign
            raise RuntimeError(
                f"{self.plugin!r} delayed its output by more than the {self.stream_latency} samples "
                "measured for it; streamed output would be misaligned"
            )
        block, self.fifo = self.fifo[:, :n], self.fifo[:, n:]
        return block

    def reset(self) -> None:
        self.plugin.reset()
        self.fifo = None


def _check_item(item: object) -> Item:
    if not isinstance(item, (EffectNode, pedalboard.Plugin)):
        raise TypeError(f"Chain items must be cakfx nodes or pedalboard plugins, got {item!r}")
    return item


class Chain(EffectNode):
    """A list of effects run in order; itself a node, so chains nest.

    Items may be cakfx nodes, ``pedalboard.Plugin`` objects (a
    ``pedalboard.Pedalboard`` too) or nested ``Chain`` objects. Consecutive
    native plugins run as one native ``Pedalboard`` (built once and kept, so its
    state streams; rebuilt when ``items`` change). ``ids`` optionally names each
    item (preset chain ids).

    ``chain(audio, sr, buffer_size, reset)`` passes ``buffer_size`` and ``reset``
    to every stage. Offline (``reset=True``) the output is aligned with the input.
    Streaming (``reset=False``) every stage keeps the node contract, so the chain
    output is the offline output delayed by ``latency_samples(sr)``, the sum of
    its stages' latencies. pedalboard's latent effects (``BrickwallLimiter``,
    ``Resample``, ``MP3Compressor``, ...) return short blocks while streaming; the chain pads
    them to full blocks and reports their delay, measured once per setting on a
    fresh copy fed silence. pedalboard's own ``PitchShift`` and
    ``GSMFullRateCompressor`` stream differently from their offline output, so a
    chain holding them does too.

    A cakfx node cannot go inside a ``pedalboard.Pedalboard`` (pedalboard accepts
    only its native plugins there); put pedalboard plugins in a ``cakfx.Chain``
    instead.
    """

    name = "chain"

    def __init__(self, items: Iterable[Item] = (), ids: Sequence[str | None] | None = None) -> None:
        self.items = [_check_item(item) for item in items]
        self.ids = list(ids) if ids is not None else [None] * len(self.items)
        if len(self.ids) != len(self.items):
            raise ValueError("ids must have one entry per chain item")
        self._built: tuple = ()
        self._stages: list = []
        self._buffer_size = 8192
        self._skip: list[int] = []  # streaming: priming samples each stage still drops
        self._dropped: list[int] = []
        self._fed: list[int] = []  # samples each stage has been given this stream
        self._end: int | None = None
        self._out_fifo: np.ndarray | None = None  # streaming output owed, None between streams

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __getitem__(self, key: int | str) -> Item:
        """An item by position or by id (``chain["texture"]``)."""
        if isinstance(key, str):
            return self.items[self.ids.index(key)]
        return self.items[key]

    def append(self, item: Item, id: str | None = None) -> None:
        self.items.append(_check_item(item))
        self.ids.append(id)

    def stages(self) -> list:
        """Items with consecutive native plugins grouped into one ``Pedalboard``.

        Built once and kept while ``items`` hold the same objects.
        """
        return [s.plugin if isinstance(s, _NativeStage) else s for s in self._current_stages()]

    def _current_stages(self) -> list:
        built = tuple(id(item) for item in self.items)
        if built == self._built:
            return self._stages
        out: list = []
        run: list = []
        for item in self.items:
            if isinstance(item, pedalboard.Plugin):
                run.append(item)
                continue
            if run:
                out.append(_NativeStage(run[0] if len(run) == 1 else pedalboard.Pedalboard(run)))
                run = []
            out.append(item)
        if run:
            out.append(_NativeStage(run[0] if len(run) == 1 else pedalboard.Pedalboard(run)))
        self._built, self._stages = built, out
        return out

    def process_block(
        self, audio: np.ndarray, sample_rate: float, buffer_size: int, reset: bool
    ) -> np.ndarray:
        self._buffer_size = int(buffer_size)
        return super().process_block(audio, sample_rate, buffer_size, reset)

    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        dtype = audio.dtype
        for stage in self._current_stages():
            if isinstance(stage, _NativeStage):
                audio = stage.process(audio, sample_rate, self._buffer_size)
            else:
                audio = stage.process_block(audio, sample_rate, self._buffer_size, True)
        return np.asarray(audio, dtype=dtype)

    def stream_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        # Each stage gets its input without the previous stage's priming zeros: a stage that
        # looks ahead offline would otherwise "see" them as signal before the start. Until
        # the last stage has output, the chain emits zeros: exactly the priming it owes.
        stages = self._current_stages()
        channels, n = audio.shape
        if self._out_fifo is None:
            lats = [self._stage_latency(stage, sample_rate) for stage in stages]
            self._skip = [0] + lats  # the last entry applies to the chain output
            self._skip[-1] = 0
            self._dropped = [0] * len(stages)
            self._fed = [0] * len(stages)
            self._out_fifo = np.zeros((channels, 0), audio.dtype)
        for k, stage in enumerate(stages):
            if self._skip[k]:
                drop = min(self._skip[k], audio.shape[1])
                audio = audio[:, drop:]
                self._skip[k] -= drop
                self._dropped[k] += drop
            if audio.shape[1] == 0:
                break
            if self._end is not None and self._fed[k] + audio.shape[1] > self._end:
                audio = audio.copy()  # past the input's end a stage hears silence, as offline
                audio[:, max(0, self._end - self._fed[k]) :] = 0
            self._fed[k] += audio.shape[1]
            if isinstance(stage, _NativeStage):
                if stage.fifo is None and audio.shape[1] <= channels and self._dropped[k]:
                    # pedalboard cannot start on a block this short: give back a few of the
                    # dropped zeros (silence into a causal plugin) and drop them after it
                    z = min(channels + 1 - audio.shape[1], self._dropped[k])
                    audio = np.concatenate([np.zeros((channels, z), audio.dtype), audio], axis=1)
                    self._skip[k + 1] += z
                audio = stage.stream(audio, sample_rate, self._buffer_size)
            else:
                audio = stage.process_block(audio, sample_rate, self._buffer_size, False)
        else:
            drop = min(self._skip[-1], audio.shape[1])
            audio, self._skip[-1] = audio[:, drop:], self._skip[-1] - drop
        fifo = self._out_fifo
        if audio.shape[1]:
            fifo = np.concatenate([fifo, audio.astype(fifo.dtype)], axis=1)
        if fifo.shape[1] < n:  # only before the last stage's first output
            fifo = np.concatenate([np.zeros((channels, n - fifo.shape[1]), fifo.dtype), fifo], axis=1)
        out, self._out_fifo = fifo[:, :n], fifo[:, n:]
        return out

    def _stage_latency(self, stage, sample_rate: float) -> int:
        if isinstance(stage, (_NativeStage, Chain)):
            return int(stage.latency_samples(sample_rate, self._buffer_size))
        return int(stage.latency_samples(sample_rate))

    def latency_samples(self, sample_rate: float, buffer_size: int | None = None) -> int:
        """Sum of the stages' streaming delays at ``sample_rate``.

        Native latent stages' delay can depend on ``buffer_size``; by default the
        one of the last call (8192 before any).
        """
        if buffer_size is not None:
            self._buffer_size = int(buffer_size)
        return sum(self._stage_latency(stage, sample_rate) for stage in self._current_stages())

    def end_input(self, length: int) -> None:
        """Mark the end of the streamed input after ``length`` samples.

        Offline, every stage's output stops at the input's length; streaming, a
        reverb's tail would flow on into the next stage while the latency is
        flushed with silence. After this call each stage hears silence past
        ``length``, so the flushed stream equals the offline output to the last
        sample (``render_stream`` calls it). ``reset()`` clears it.
        """
        self._end = int(length)
        for stage in self._current_stages():
            if isinstance(stage, Chain):
                stage.end_input(length)

    def reset(self) -> None:
        for stage in self._current_stages():
            stage.reset()
        self._out_fifo = None
        self._end = None

    @property
    def needs_measure(self) -> bool:
        return any(isinstance(item, EffectNode) and item.needs_measure for item in self.items)

    def begin_measure(self) -> None:
        for item in self._nodes():
            item.begin_measure()

    def end_measure(self) -> None:
        for item in self._nodes():
            item.end_measure()

    def forget_measure(self) -> None:
        for item in self._nodes():
            item.forget_measure()

    def _nodes(self) -> list[EffectNode]:
        return [item for item in self.items if isinstance(item, EffectNode)]

    def __repr__(self) -> str:
        inner = ", ".join(repr(i) for i in self.items)
        return f"Chain([{inner}])"
