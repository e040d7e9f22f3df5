"""Render a signal through a chain block by block, equal to one offline call.

``render_stream`` is the seam between the batch engine (which reads and writes files in
blocks) and the nodes (which stream with ``reset=False``). Contract::

    render_stream(chain, blocks, sample_rate, sink, buffer_size=8192)

* ``blocks()`` returns a fresh iterator of ``(channels, n)`` float32 blocks of the input
  (it may be called more than once: nodes whose level stage needs the whole signal get a
  measuring pass first, so the file is read twice instead of held in memory);
* ``sink(block)`` receives the output, ``(channels, n)``, in order; the blocks it receives
  add up to exactly the input length, aligned with the input (latency removed, tail flushed);
* the concatenated output equals ``chain(whole_input, sample_rate)`` (``reset=True``) to
  float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np


def render_stream(
    chain,
    blocks: Callable[[], Iterator[np.ndarray] | Iterable[np.ndarray]],
    sample_rate: float,
    sink: Callable[[np.ndarray], None],
    buffer_size: int = 8192,
) -> None:
    """Stream ``blocks()`` through ``chain`` into ``sink`` (see the module docstring).

    Placeholder until the nodes stream: gathers the input and makes one offline call.
    """
    parts = [np.asarray(b, dtype=np.float32) for b in blocks()]
    if not parts:
        return
    whole = np.concatenate(parts, axis=-1)
    out = chain(whole, sample_rate, buffer_size=buffer_size, reset=True)
    for start in range(0, out.shape[-1], max(1, buffer_size)):
        sink(out[:, start : start + buffer_size])
