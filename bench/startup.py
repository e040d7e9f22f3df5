"""Start-up time of the listing commands against ``import pedalboard`` (issue 14 item 6).

Each command runs in a fresh interpreter; the commands are interleaved, repeated, and
reported as min/median seconds plus the ratio to ``python -c "import pedalboard"``
measured in the same run (the machine is shared, so only same-run ratios mean much).
Target: ``cakfx --help`` median <= 0.4 s.

    .venv/bin/python bench/startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],  # the interpreter's own start-up: the floor
    "import pedalboard": [sys.executable, "-c", "import pedalboard"],
    "cakfx --help": [sys.executable, "-m", "cakfx", "--help"],
    "cakfx presets list": [sys.executable, "-m", "cakfx", "presets", "list"],
    "cakfx weights list": [sys.executable, "-m", "cakfx", "weights", "list"],
    "cakfx effects list": [sys.executable, "-m", "cakfx", "effects", "list"],
    "import torch": [sys.executable, "-c", "import torch"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "CAKFX_HOME": tempfile.mkdtemp()}
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():  # interleaved: load changes hit all alike
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["import pedalboard"])
    print(f"{'command':<22} {'min s':>7} {'median s':>9} {'x pedalboard':>13}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22} {min(ts):7.3f} {med:9.3f} {med / base:13.2f}")
    help_median = statistics.median(times["cakfx --help"])
    verdict = "met" if help_median <= 0.4 else "NOT met"
    print(f"target: cakfx --help median <= 0.4 s: {verdict} ({help_median:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
