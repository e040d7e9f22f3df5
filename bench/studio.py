"""cakfx studio: the round trip of re-processing a 10 s clip after a control change.

What the page does on every change, through the real API (Starlette's test
client, in-process): POST /api/process with the edited chain, poll the job
until done, GET the result's audio and its analysis (waveform, spectrogram,
level). Interleaved with the same chain called directly
(``cakfx.load_preset(...)(audio, sr)``), so the printed ratios — round trip /
direct processing, and round trip / clip length — are measured in one run on
the same (possibly busy) machine.

Usage: .venv/bin/python bench/studio.py [--preset texture-drums] [--seconds 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def clip(seconds: float, sr: int = 44100) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    out = np.zeros((2, n))
    beat = sr // 4
    env = np.exp(-np.arange(beat) / (0.03 * sr))
    for start in range(0, n - beat, beat):
        out[:, start : start + beat] += rng.standard_normal((2, beat)) * env * 0.4
    return out.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="texture-drums")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    from starlette.testclient import TestClient

    import cakfx
    from cakfx.studio.app import create_app
    from cakfx.studio.core import Studio

    sr = 44100
    audio = clip(args.seconds, sr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(str(path), audio.T, sr, subtype="PCM_24")
        studio = Studio(files=[path])
        with TestClient(create_app(studio), headers={"X-Cakfx-Token": studio.token}) as client:
            file_id = client.get("/api/files").json()[0]["id"]
            chain = client.get(f"/api/presets/{args.preset}").json()["chain"]
            neural = next((e for e in chain if e["effect"] == "cak.texture"), None)
            key = "amount" if neural else None

            def edit(i: int) -> None:
                if key:
                    neural["params"][key] = 0.5 + 0.1 * (i % 10)  # a new value every time, like a slider

            def round_trip(i: int) -> float:
                edit(i)
                start = time.perf_counter()
                job = client.post(
                    "/api/process", json={"file": file_id, "chain": chain, "preset": args.preset}
                ).json()
                while True:
                    job = client.get(f"/api/jobs/{job['id']}").json()
                    if job["state"] not in ("queued", "running"):
                        break
                    time.sleep(0.02)  # the page polls every 60 ms; finer here so polling does not dominate
                assert job["state"] == "done", job
                assert client.get(f"/api/files/{job['result']}/audio").content
                client.get(f"/api/files/{job['result']}/analysis").json()
                return time.perf_counter() - start

            def direct(i: int) -> float:
                edit(i)
                overrides = {f"{neural['id']}.{key}": neural["params"][key]} if key else None
                start = time.perf_counter()
                cakfx.load_preset(args.preset, overrides=overrides)(audio, sr)
                return time.perf_counter() - start

            round_trip(0), direct(0)  # warm up: model files, caches
            trips, directs = [], []
            for i in range(args.repeats):  # interleaved, so both see the same machine load
                trips.append(round_trip(i + 1))
                directs.append(direct(i + 1))
    med_t, med_d = statistics.median(trips), statistics.median(directs)
    print(f"cakfx studio round trip: {args.seconds:g} s stereo clip, {args.preset}, {args.repeats} repeats")
    print(f"  round trip (process, poll, audio, analysis): min {min(trips):.3f} s, median {med_t:.3f} s")
    print(f"  direct load_preset(...)(audio):              min {min(directs):.3f} s, median {med_d:.3f} s")
    print(f"  ratio round trip / direct (median): {med_t / med_d:.2f}")
    print(f"  ratio round trip / clip length (median): {med_t / args.seconds:.3f}")


if __name__ == "__main__":
    main()
