"""Bounded fuzz run of the two parsers that read strangers' files: presets (TOML) and
weights (safetensors).

Mutates real seeds (the bundled presets and weights) by bit flips, byte changes,
truncation, duplication and splices, and feeds each result to the same code the CLI
uses. The only acceptable outcomes are success or ``CakfxError`` (one clear line);
anything else is printed with the input that caused it and the run exits 1.

    .venv/bin/python bench/fuzz.py --seconds 60        # 30 s per target by default
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

from cakfx.errors import CakfxError
from cakfx.presets import bundled_dir as presets_dir
from cakfx.presets import parse_preset, parse_toml, resolved_entries
from cakfx.registry import effects
from cakfx.weights import bundled_dir as weights_dir
from cakfx.weights import check_weights


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        if not b:
            b = bytearray(rng.randbytes(rng.randint(1, 64)))
            continue
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice([0, 0xFF, 0x7F, 0x80, ord("["), ord("{"), ord('"'), ord("9")])
        elif op == 2:
            del b[i:]
        elif op == 3:
            j = rng.randrange(i, min(len(b), i + 64) + 1)
            b[i:i] = b[i:j] * rng.randint(1, 50)
        elif op == 4:
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        else:
            j = rng.randrange(len(b))
            b[i : i + 8] = b[j : j + 8]
    return bytes(b)


def fuzz_presets(seconds: float, rng: random.Random, folder: Path) -> tuple[int, int, list]:
    seeds = [p.read_bytes() for p in sorted(presets_dir().glob("*.toml"))]
    seeds += [b'[[chain]]\neffect = "pedalboard.Gain"\ngain_db = -3.0\n']
    effects()  # load the plugins before the clock starts
    tried = accepted = 0
    crashes = []
    end = time.monotonic() + seconds
    path = folder / "fuzz.toml"
    while time.monotonic() < end:
        data = mutate(rng.choice(seeds), rng)
        tried += 1
        try:
            preset = parse_preset(parse_toml(data, path), path)
            resolved_entries(preset)
            accepted += 1
        except CakfxError:
            pass
        except Exception:
            crashes.append((data, traceback.format_exc()))
    return tried, accepted, crashes


def fuzz_weights(seconds: float, rng: random.Random, folder: Path) -> tuple[int, int, list]:
    seeds = [p.read_bytes() for p in sorted(weights_dir().glob("*.safetensors"))]
    tried = accepted = 0
    crashes = []
    end = time.monotonic() + seconds
    path = folder / "fuzz.safetensors"
    while time.monotonic() < end:
        seed = rng.choice(seeds)
        # mutate the header (where the structure is) far more often than the data
        n = int.from_bytes(seed[:8], "little")
        head = mutate(seed[: 8 + n], rng) if rng.random() < 0.8 else seed[: 8 + n]
        data = head + (mutate(seed[8 + n :], rng) if rng.random() < 0.3 else seed[8 + n :])
        path.write_bytes(data)
        tried += 1
        try:
            check_weights(path)
            accepted += 1
        except CakfxError:
            pass
        except Exception:
            crashes.append((data[:200], traceback.format_exc()))
    return tried, accepted, crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="time per target")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("preset parser", fuzz_presets), ("safetensors loader", fuzz_weights)):
            tried, accepted, crashes = fn(args.seconds, rng, Path(tmp))
            print(
                f"{name}: {tried} inputs tried in {args.seconds:g}s, {accepted} accepted, "
                f"{tried - accepted - len(crashes)} refused with a clear error, {len(crashes)} crashes"
            )
            for data, tb in crashes[:3]:
                failed = True
                print(f"  input {data[:120]!r}\n{tb}")
            failed |= bool(crashes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
