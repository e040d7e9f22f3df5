"""Render a signal through a chain block by block, equal to one offline call.

``render_stream`` is the seam between the batch engine (which reads and writes files in
blocks) and the nodes (which stream with ``reset=False``). Contract::

    render_stream(chain, blocks, sample_rate, sink, buffer_size=8192)

* ``blocks()`` returns a fresh iterator of ``(channels, n)`` float32 blocks of the input
  (it may be called more than once: nodes whose level stage needs the whole signal get a
  measuring pass first, so the file is read twice instead of held in memory; a node may keep
  what it computed in that pass (``KeptPass``, over a ``Spool``) and read it back in the render pass);
* ``sink(block)`` receives the output, ``(channels, n)``, in order; the blocks it receives
  add up to exactly the input length, aligned with the input (latency removed, tail flushed);
* the concatenated output equals ``chain(whole_input, sample_rate)`` (``reset=True``) to
  float rounding.

Memory is bounded by the block size and the chain's latency, not the input's length; with
``hold=N`` an input of at most ``N`` samples (all channels together) is gathered and rendered
by that one offline call instead, so each model runs once rather than once more per measuring
pass (the batch engine does this for files that fit its budget).
A file played in real time is the same loop at the device's block size::

    >>> import numpy as np, pedalboard, cakfx
    >>> from cakfx.streaming import render_stream
    >>> chain = cakfx.Chain([pedalboard.Reverb(), pedalboard.Resample(target_sample_rate=16000)])
    >>> audio = np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32) * 0.1
    >>> out = []
    >>> render_stream(chain, lambda: (audio[:, i:i + 512] for i in range(0, 44100, 512)),
    ...               44100, out.append, buffer_size=512)
    >>> streamed = np.concatenate(out, axis=1)
    >>> streamed.shape
    (2, 44100)
    >>> bool(np.allclose(streamed, chain(audio, 44100), atol=1e-6))
    True
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from cakfx.node import EffectNode

SINK_BLOCK = 1 << 16  # output blocks of a held (offline) render: fewer, larger writes and meter calls
#: temporary-file bytes a ``Spool`` may hold (12 min of 44.1 kHz stereo float32): where /tmp is in
#: memory (tmpfs) a spool is memory too, so longer streams compute again instead
SPOOL_BYTES = 1 << 28


def render_stream(
    chain,
    blocks: Callable[[], Iterator[np.ndarray] | Iterable[np.ndarray]],
    sample_rate: float,
    sink: Callable[[np.ndarray], None],
    buffer_size: int = 8192,
    hold: int = 0,
) -> None:
    """Stream ``blocks()`` through ``chain`` into ``sink`` (see the module docstring).

    First, for each node whose ``needs_measure`` is true (in chain order), one measuring
    pass streams the whole input through the chain up to that node; then the render
    pass streams it through the whole chain with ``reset=False``, drops the first
    ``latency_samples`` output samples and flushes the tail with silence. Measurements
    are forgotten at the end, so the chain's later live use starts from its running
    estimates.

    ``hold``: inputs of at most this many samples (all channels) take one offline call
    (``reset=True``) instead, unless the chain holds a stage whose stream differs from its
    offline output (``cakfx.chain.NOT_STREAM_EQUAL``); longer ones stream, after one
    partial read.
    """
    import pedalboard

    from cakfx.chain import Chain

    if not isinstance(chain, (EffectNode, pedalboard.Plugin)):
        # any other callable ``f(audio, sample_rate)`` cannot stream: one offline call
        _render_whole(chain, blocks, sample_rate, sink, buffer_size)
        return
    if not isinstance(chain, EffectNode):
        chain = Chain([chain])  # a bare pedalboard plugin
    if hold > 0 and _offline_equals_stream(chain):
        whole = _gather(blocks, hold)
        if whole is not None:
            if whole.shape[1]:
                out = chain.process_block(whole, float(sample_rate), max(1, int(buffer_size)), True)
                _sink_blocks(out, sink, max(buffer_size, SINK_BLOCK))  # the output is held anyway
            return
    measured: list[EffectNode] = []
    try:
        for node, upto in _measure_targets(chain):
            node.begin_measure()
            measured.append(node)
            _run(upto, blocks, sample_rate, None, buffer_size)
            node.end_measure()
        _run(chain, blocks, sample_rate, sink, buffer_size)
    finally:
        for node in measured:
            node.forget_measure()


def _render_whole(fn, blocks, sample_rate: float, sink, buffer_size: int) -> None:
    """Gather the input, call ``fn(audio, sample_rate)`` once, hand the result to ``sink`` in blocks."""
    parts = [np.asarray(b, dtype=np.float32) for b in blocks()]
    if not parts:
        return
    _sink_blocks(np.asarray(fn(np.concatenate(parts, axis=-1), sample_rate)), sink, buffer_size)


def _sink_blocks(out: np.ndarray, sink, buffer_size: int) -> None:
    step = max(1, int(buffer_size))
    for start in range(0, out.shape[-1], step):
        sink(out[:, start : start + step])


def _gather(blocks, hold: int) -> np.ndarray | None:
    """The whole input as one ``(channels, n)`` float32 array, or None once it passes ``hold`` samples."""
    parts, total, channels = [], 0, None
    source = iter(blocks())
    try:
        for block in source:
            block = np.atleast_2d(np.asarray(block, dtype=np.float32))
            if channels is None:
                channels = block.shape[0]
            elif block.shape[0] != channels:
                raise ValueError(f"a block has {block.shape[0]} channels, the stream {channels}")
            total += block.size
            if total > hold:
                return None
            parts.append(block)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # a generator reading a file lets it go now
    if not parts:
        return np.zeros((1, 0), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _offline_equals_stream(chain: EffectNode) -> bool:
    """False where a native stage streams differently from its own offline output."""
    import pedalboard

    from cakfx.chain import NOT_STREAM_EQUAL, Chain, _natives

    items = chain.items if isinstance(chain, Chain) else [chain]
    for item in items:
        if isinstance(item, Chain) and not _offline_equals_stream(item):
            return False
        if isinstance(item, pedalboard.Plugin) and any(
            type(leaf).__name__ in NOT_STREAM_EQUAL for leaf in _natives(item)
        ):
            return False
    return True


def _run(chain: EffectNode, blocks, sample_rate: float, sink, buffer_size: int) -> None:
    """One streamed pass; ``sink=None`` for a measuring pass (the output is dropped)."""
    if not sample_rate > 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    sample_rate, buffer_size = float(sample_rate), max(1, int(buffer_size))
    chain.reset()
    latency = -1  # fixed once the stream has started
    total = emitted = 0
    channels = None

    def feed(block: np.ndarray, stop: int | None) -> None:
        # keep output samples with stream index in [latency, stop): the first `latency`
        # are priming, and the flush stops at the input's length
        nonlocal emitted, latency
        out = chain.process_block(block, sample_rate, buffer_size, False)
        if latency < 0:
            latency = int(chain.latency_samples(sample_rate))
        end = out.shape[1] if stop is None else max(0, stop - emitted)
        keep = out[:, max(0, latency - emitted) : end]
        emitted += out.shape[1]
        if sink is not None and keep.shape[1]:
            sink(keep)

    for block in blocks():
        block = np.atleast_2d(np.asarray(block, dtype=np.float32))
        if channels is None:
            channels = block.shape[0]
        elif block.shape[0] != channels:
            raise ValueError(f"a block has {block.shape[0]} channels, the stream {channels}")
        if block.shape[1]:
            feed(block, None)
            total += block.shape[1]
    if channels is None or total == 0:
        return
    if hasattr(chain, "end_input"):
        chain.end_input(total)
    while emitted < total + latency:  # flush the tail with silence
        n = min(buffer_size, total + latency - emitted)
        feed(np.zeros((channels, n), np.float32), total + latency)


def _measure_targets(chain: EffectNode) -> list[tuple[EffectNode, EffectNode]]:
    """``(node, what to stream to measure it)`` for each node that needs a measurement.

    Top-level nodes of a ``Chain`` are measured through the chain up to them; nodes in
    nested chains through the whole top-level item that holds them.
    """
    from cakfx.chain import Chain

    if not isinstance(chain, Chain):
        return [(chain, chain)] if chain.needs_measure else []
    targets = []
    for i, item in enumerate(chain.items):
        if not isinstance(item, EffectNode) or not item.needs_measure:
            continue
        upto = Chain(chain.items[: i + 1])
        for node in _leaves_needing_measure(item):
            targets.append((node, upto))
    return targets


def _leaves_needing_measure(node: EffectNode) -> list[EffectNode]:
    from cakfx.chain import Chain

    if isinstance(node, Chain):
        return [
            leaf
            for item in node.items
            if isinstance(item, EffectNode)
            for leaf in _leaves_needing_measure(item)
        ]
    return [node] if node.needs_measure else []


class Spool:
    """``(channels, n)`` float32 blocks written once, then read back in order in any chunking,
    kept in an unnamed temporary file: memory stays bounded by a block however long the stream.

    A node keeps its measuring pass's output here (``KeptPass``) so the render pass that follows
    reads it instead of computing it again. ``push`` raises ``OSError`` when the disk
    is full or the spool would pass ``limit`` bytes; the node then computes as before.

    >>> spool = Spool(2)
    >>> spool.push(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> spool.pop(2).tolist(), spool.pop(5).tolist(), spool.size
    ([[0.0, 1.0], [3.0, 4.0]], [[2.0], [5.0]], 0)
    """

    def __init__(self, channels: int, limit: int = SPOOL_BYTES) -> None:
        self.channels, self.limit = int(channels), int(limit)
        self.size = 0  # samples written and not read yet
        self._file = tempfile.TemporaryFile()
        self._reading = False

    def push(self, block: np.ndarray) -> None:
        if self._reading:
            raise RuntimeError("Spool: written after reading began")
        if block.shape[0] != self.channels:
            raise ValueError(f"Spool holds {self.channels} channels, got {block.shape[0]}")
        if (self.size + block.shape[1]) * self.channels * 4 > self.limit:
            raise OSError(f"Spool: over its limit of {self.limit} bytes")
        self._file.write(np.ascontiguousarray(block.T, dtype=np.float32))  # frames, channels interleaved
        self.size += block.shape[1]

    def pop(self, n: int) -> np.ndarray:
        """The next ``min(n, size)`` samples, ``(channels, m)``."""
        if not self._reading:
            self._file.flush()
            self._file.seek(0)
            self._reading = True
        frames = np.empty((min(int(n), self.size), self.channels), np.float32)
        if self._file.readinto(frames.data.cast("B")) != frames.nbytes:
            raise OSError("Spool: the temporary file ended early")
        self.size -= frames.shape[0]
        return np.ascontiguousarray(frames.T)

    def close(self) -> None:
        self._file.close()


class KeptPass:
    """A node's measuring-pass output, kept in a ``Spool`` for the render pass that follows, with
    the stream state the pass ended in: the render pass reads the output back, then carries on
    from that state, so a streamed file runs the node's model once (``cak.texture``, ``cak.grain``).

    The node calls ``begin``/``end``/``forget`` from its measuring protocol, ``record`` with what
    it computes while measuring, ``reset`` from its own ``reset``; at a render stream's start
    ``resume(matches)`` gives the kept state (if ``matches(state)``) and ``take(n)`` then returns the
    next kept samples until none are left. A full disk or spool drops what was kept: the render
    pass computes again.
    """

    def __init__(self) -> None:
        self.measuring = False
        self._keep = False  # keep what the measuring pass computes (until a write fails)
        self._recording: Spool | None = None
        self._replay: Spool | None = None
        self._state = None  # the stream state the measuring pass ended in
        self._started = False  # a render pass has read from the replay

    def begin(self) -> None:
        self.forget()
        self.measuring = self._keep = True

    def record(self, rows: np.ndarray) -> None:
        if not (self.measuring and self._keep and rows.shape[1]):
            return
        try:
            if self._recording is None:
                self._recording = Spool(rows.shape[0])
            self._recording.push(rows)
        except OSError:  # no room: the render pass computes again
            self._drop_recording()
            self._keep = False

    def end(self, state) -> None:
        self.measuring = False
        recording, self._recording = self._recording, None
        if recording is not None and recording.size and state is not None:
            self._replay, self._state, self._started = recording, state, False
        elif recording is not None:
            recording.close()

    def resume(self, matches: Callable[[object], bool]):
        """The measuring pass's final stream state where a replay waits and ``matches`` it, else None
        (and nothing is replayed)."""
        if self._replay is not None and not self._started and matches(self._state):
            self._started = True
            return self._state
        self._drop_replay()
        return None

    def take(self, n: int) -> np.ndarray | None:
        """The next at most ``n`` kept samples, or None when no replay is running."""
        if self._replay is None or not self._started:
            return None
        kept = self._replay.pop(n)
        if not self._replay.size:
            self._drop_replay()  # the stream carries on from the measuring pass's state
        return kept

    def reset(self) -> None:
        """A stream starts over: a replay that has begun is stale, a recording incomplete."""
        if self._started:
            self._drop_replay()
        self._drop_recording()

    def forget(self) -> None:
        self.measuring = False
        self._drop_replay()
        self._drop_recording()

    def _drop_replay(self) -> None:
        if self._replay is not None:
            self._replay.close()
        self._replay, self._state, self._started = None, None, False

    def _drop_recording(self) -> None:
        if self._recording is not None:
            self._recording.close()
            self._recording = None
