"""Training data: finding the audio under a folder, the feature cache, pairing by a measure.

* ``find_audio``: recursive walk; non-audio is counted and skipped; one clear error for a
  missing/empty folder or a folder without audio.
* ``FeatureCache``: preprocessed tensors per file, keyed by the file's content hash and the
  recipe's settings, so a rerun never decodes audio again.
* ``preprocess``: every file through the cache; unreadable files reported and skipped.
* ``low_high_pairs``: the published recipes' pairing of the lower half with the upper half.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cakfx.audio import is_audio_path, read_audio, walk_files
from cakfx.dsp.resample import resample
from cakfx.dsp.stft import MODEL_SR
from cakfx.errors import CakfxError
from cakfx.paths import cakfx_home
from cakfx.weights import sha256_file


@dataclass
class Found:
    """The audio files under a folder, and what was left out."""

    root: Path
    files: list[Path]
    non_audio: int = 0
    excluded: int = 0

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def find_audio(folder: str | os.PathLike, exclude: tuple[str, ...] = ()) -> Found:
    """Every audio file under ``folder`` (sorted, recursive).

    ``exclude`` holds glob patterns matched against paths relative to ``folder``
    (e.g. ``"VariBreaks/*"`` to hold a kit out of training).
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise CakfxError(f"{root}: no such folder")
    if not root.is_dir():
        raise CakfxError(f"{root}: not a folder (give the folder of samples to train on)")
    everything = walk_files(root)
    if not everything:
        raise CakfxError(f"{root}: the folder is empty (no files to train on)")
    kept, excluded = [], 0
    for p in everything:
        rel = p.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) for pat in exclude):
            excluded += 1
        else:
            kept.append(p)
    audio = [p for p in kept if is_audio_path(p)]
    non_audio = len(kept) - len(audio)
    if not audio:
        detail = f"{non_audio} non-audio file{'s' * (non_audio != 1)}"
        if excluded:
            detail += f", {excluded} excluded"
        raise CakfxError(f"{root}: no audio files found ({detail})")
    return Found(root, audio, non_audio, excluded)


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def to_model_mono(audio: np.ndarray, sr: int) -> torch.Tensor:
    """``(C, N)`` audio -> mono float32 at the models' 44.1 kHz (the published recipes downmix)."""
    mono = torch.from_numpy(np.asarray(audio, dtype=np.float32)).mean(dim=0)
    if sr != MODEL_SR:
        mono = resample(mono, sr, MODEL_SR)
    return mono


class FeatureCache:
    """Preprocessed features per file in ``$CAKFX_HOME/cache/train/TRAINER``.

    The key is the file's SHA-256 plus a digest of the settings, so changed
    audio or a changed recipe misses the cache and an unchanged rerun only
    reads bytes to hash them: no decoding.
    """

    def __init__(self, trainer: str, settings: dict) -> None:
        self.folder = cakfx_home() / "cache" / "train" / trainer
        self.settings_key = settings_digest(settings)
        self.hits = 0
        self.misses = 0

    def get(
        self, path: Path, make: Callable[[np.ndarray, int], dict[str, torch.Tensor]]
    ) -> tuple[str, dict[str, torch.Tensor]]:
        """``(content digest, tensors)``; ``make(audio, sr)`` runs only on a miss.

        Raises ``CakfxError`` when the file cannot be read.
        """
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise CakfxError(f"{path}: cannot read ({exc.strerror or exc})") from None
        entry = self.folder / f"{digest[:32]}-{self.settings_key}.safetensors"
        if entry.is_file():
            try:
                tensors = load_file(str(entry))
                self.hits += 1
                return digest, tensors
            except Exception:  # a damaged cache entry is rebuilt, never fatal
                pass
        audio, info = read_audio(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in make(audio, info.sample_rate).items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, entry)
        self.misses += 1
        return digest, tensors


@dataclass
class Item:
    """One readable training file and its cached features."""

    rel: str
    digest: str
    features: dict[str, torch.Tensor]


def preprocess(
    found: Found,
    cache: FeatureCache,
    make: Callable[[np.ndarray, int], dict[str, torch.Tensor]],
    need: int,
    what: str,
    quiet: bool = False,
) -> tuple[list[Item], list[str]]:
    """Cache features for every file; unreadable files are reported by path and skipped.

    Raises ``CakfxError`` when fewer than ``need`` files are usable.
    """
    from tqdm.auto import tqdm

    items: list[Item] = []
    failed: list[str] = []
    bar = tqdm(found.files, desc="preparing", unit="file", disable=quiet, leave=False, file=sys.stderr)
    for path in bar:
        try:
            digest, feats = cache.get(path, make)
        except CakfxError as exc:
            failed.append(str(exc))
            tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
            continue
        items.append(Item(found.rel(path), digest, feats))
    bar.close()
    if len(items) < need:
        extra = f" ({len(failed)} unreadable)" if failed else ""
        raise CakfxError(
            f"{found.root}: the {what} recipe needs at least {need} audio files, "
            f"found {len(items)} usable{extra}"
        )
    return items, failed


def low_high_pairs(values: list[float]) -> list[tuple[int, int]]:
    """Sort by value; pair the i-th of the lower half with the i-th of the upper half.

    Returns ``(low_index, high_index)`` into ``values`` (an odd middle file is
    left unpaired, as in the published recipes).
    """
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    half = len(order) // 2
    return list(zip(order[:half], order[len(order) - half :]))
