"""The training history: ``history.json`` always, ``history.png`` when matplotlib is installed.

The picture is drawn once, at the end of a run (or on Ctrl-C), on a bare ``Figure`` with the Agg
canvas: ``matplotlib.pyplot`` (and its backend machinery) is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path

from cakfx.paths import as_new_file


def write_history(folder: Path, history: list[dict], title: str) -> list[Path]:
    """Write ``history.json`` (and ``history.png`` if possible); return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "history.json"]
    tmp = folder / ".history.json.tmp"
    tmp.write_text(json.dumps(history, indent=1))
    tmp.replace(written[0])
    keys = [k for k in (history[0] if history else {}) if k not in ("epoch", "seconds")]
    if keys and draw_history(folder / "history.png", history, keys, title):
        written.append(folder / "history.png")
    return written


def draw_history(path: Path, history: list[dict], keys: list[str], title: str) -> bool:
    """One panel per loss over the epochs; False when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(7, 1.8 * len(keys)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes[:, 0], keys):
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker=".")
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    as_new_file(tmp)
    tmp.replace(path)
    return True
