"""The bundled weights' training corpus, assembled from two Debian packages (``make weights-corpus``).

    python -m cakfx.trainers.corpus OUT [--clips 4] [--clip-s 15]

* ``sonic-pi-samples`` (CC0): loops, ambiences, drums, bass, guitar, one-shots; linked as they are.
* ``wesnoth-1.16-music`` (GPL-2+): orchestral/folk game music, several minutes a track; cut into
  ``--clips`` 15 s clips per track, spread evenly through it (the published recipes trained on
  200 clips of 15 s of music; the texture recipe takes one centre segment per file, so a whole
  track would give it one segment).

None of it is in ``bench/quality.py``'s evaluation corpus (alsa-utils, frozen-bubble, lmms,
hydrogen VariBreaks, oxygen, freedesktop). Rebuilding is deterministic: same packages, same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from cakfx.audio import is_audio_path, read_audio, read_info

SOURCES = {
    "sonic-pi": Path("/usr/share/sonic-pi/samples"),
    "wesnoth": Path("/usr/share/games/wesnoth/1.16/data/core/music"),
}
PACKAGES = {"sonic-pi": "sonic-pi-samples", "wesnoth": "wesnoth-1.16-music"}
LICENCES = {"sonic-pi": "CC0", "wesnoth": "GPL-2+"}


def clip_starts(n: int, clip: int, clips: int) -> list[int]:
    """``clips`` start samples spread evenly through ``n`` samples (centres at (k + 1/2) / clips)."""
    if n <= clip:
        return [0]
    return sorted({min(n - clip, max(0, int((k + 0.5) / clips * n) - clip // 2)) for k in range(clips)})


def build(out: Path, clips: int = 4, clip_s: float = 15.0) -> dict[str, int]:
    """Fill ``out/sonic-pi`` (links) and ``out/wesnoth`` (FLAC clips); returns files per source."""
    counts = {}
    for name, src in SOURCES.items():
        if not src.is_dir():
            raise SystemExit(f"error: {src} missing (apt-get install {PACKAGES[name]})")
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in src.iterdir() if p.is_file() and is_audio_path(p))
        made = 0
        for path in files:
            if name == "sonic-pi":
                link = dest / path.name
                if not link.is_symlink():
                    link.symlink_to(path)
                made += 1
                continue
            info = read_info(path)
            clip = int(clip_s * info.sample_rate)
            starts = clip_starts(info.frames, clip, clips)
            targets = [dest / f"{path.stem}-{k}.flac" for k in range(len(starts))]
            if not all(t.exists() for t in targets):  # a rerun decodes nothing
                audio, _ = read_audio(path)
                for target, start in zip(targets, starts):
                    part = np.ascontiguousarray(audio[:, start : start + clip].T)
                    sf.write(target, part, info.sample_rate, subtype="PCM_16")
            made += len(targets)
        counts[name] = made
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", type=int, default=4, help="clips per music track")
    parser.add_argument("--clip-s", type=float, default=15.0, help="clip length in seconds")
    args = parser.parse_args(argv)
    counts = build(args.out, args.clips, args.clip_s)
    for name, n in counts.items():
        print(f"{args.out / name}: {n} files ({PACKAGES[name]}, {LICENCES[name]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
