"""Streaming: peak memory of `cakfx process` on long files, and real-time factor per buffer size (issue 10).

(a) Peak RSS: generates 96 kHz stereo 24-bit FLAC files of each ``--minutes`` length
(written block by block), runs ``cakfx process --preset P`` on each in a child process and
reads that child's peak RSS from ``os.wait4``. Target for texture-subtle and grain-noisy:
<= 600 MB and independent of length (5 and 20 minutes).

(b) Real-time factor: for each bundled preset and buffer size (256/512/1024), processes
``--seconds`` of 44.1 kHz stereo audio in blocks of that size with ``reset=False``;
RTF = processing time / audio time (< 1 keeps up). Per preset, the buffer sizes are
interleaved over ``--repeats`` rounds so they see the same machine load; min and median are shown,
plus the worst single block's time over the block's duration (what a live callback
must stay under).

    .venv/bin/python bench/stream.py                       # both parts, defaults
    .venv/bin/python bench/stream.py --part rss --preset demo --minutes 1 4
    .venv/bin/python bench/stream.py --part rss --preset demo --minutes 1 4 --engine render_stream
    .venv/bin/python bench/stream.py --part rtf --seconds 5 --presets demo texture-subtle
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RSS_SR = 96000
RTF_SR = 44100


def write_test_flac(path: Path, minutes: float, sr: int = RSS_SR, block: int = 1 << 18) -> None:
    """A stereo 24-bit FLAC of tones, noise and bursts, written block by block (bounded memory)."""
    import soundfile as sf

    total = int(minutes * 60 * sr)
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, format="FLAC", subtype="PCM_24") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / sr
            bursts = (np.sin(2 * np.pi * 2.0 * t) > 0.95) * rng.standard_normal(n) * 0.3
            left = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.03 * rng.standard_normal(n) + bursts
            right = 0.2 * np.sin(2 * np.pi * 331 * t) + 0.03 * rng.standard_normal(n) + bursts
            f.write(np.stack([left, right], axis=1).astype(np.float32))


def child_peak_rss_mb(cmd: list[str], env: dict) -> tuple[float, int, float]:
    """Run ``cmd``; return its peak RSS (MB), exit status and wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.returncode:
        print(f"  {' '.join(cmd)} failed ({proc.returncode}): {err.splitlines()[-1] if err else ''}")
    return usage.ru_maxrss / 1024, proc.returncode, time.perf_counter() - start


def child_render(preset: str, src: str, dst: str, device: str, block: int = 8192) -> None:
    """``render_stream`` straight from a FLAC to a FLAC in blocks (the engine, without the CLI)."""
    import soundfile as sf

    import cakfx
    from cakfx.streaming import render_stream

    chain = cakfx.load_preset(preset, device=device)
    info = sf.info(src)

    def blocks():
        with sf.SoundFile(src) as f:
            for part in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                yield part.T

    with sf.SoundFile(dst, "w", info.samplerate, info.channels, format="FLAC", subtype="PCM_24") as out:
        render_stream(chain, blocks, info.samplerate, lambda y: out.write(y.T), buffer_size=block)


def bench_rss(presets: list[str], minutes: list[float], device: str, engine: str = "cli") -> None:
    cakfx_cli = shutil.which("cakfx", path=str(Path(sys.executable).parent)) or "cakfx"
    env = dict(os.environ)
    what = "`cakfx process`" if engine == "cli" else "render_stream FLAC -> FLAC (no CLI)"
    print(f"(a) peak RSS of {what} on {RSS_SR // 1000} kHz stereo 24-bit FLAC (child process)")
    print(f"{'preset':16} {'minutes':>8} {'file MB':>8} {'peak RSS MB':>12} {'wall s':>8}")
    with tempfile.TemporaryDirectory(prefix="cakfx-bench-stream-") as tmp:
        tmp = Path(tmp)
        files = []
        for m in minutes:
            path = tmp / f"in-{m:g}min.flac"
            write_test_flac(path, m)
            files.append((m, path))
        for preset in presets:
            rows = []
            for m, path in files:
                out = tmp / f"out-{preset}-{m:g}"
                if engine == "cli":
                    cmd = [cakfx_cli, "process", "-p", preset, "-o", str(out), str(path), "-q", "--overwrite"]
                    cmd += ["--device", device]
                else:
                    out.mkdir(parents=True, exist_ok=True)
                    cmd = [sys.executable, __file__, "--child-render", preset, str(path), str(out / "o.flac")]
                    cmd += ["--device", device]
                rss, rc, wall = child_peak_rss_mb(cmd, env)
                rows.append(rss)
                flag = "" if rc == 0 else "  FAILED"
                size = path.stat().st_size / 1e6
                print(f"{preset:16} {m:8g} {size:8.0f} {rss:12.0f} {wall:8.1f}{flag}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            if len(rows) > 1:
                growth = rows[-1] / rows[0]
                verdict = "independent of length" if growth < 1.2 else "GROWS with length"
                print(
                    f"{preset:16} longest/shortest RSS = {growth:.2f} ({verdict}); target <= 600 MB: "
                    f"{'met' if max(rows) <= 600 else 'NOT met'}"
                )


def bench_rtf(presets: list[str], seconds: float, buffer_sizes: list[int], repeats: int, device: str) -> None:
    import cakfx

    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * RTF_SR)) / RTF_SR
    audio = np.stack(
        [0.2 * np.sin(2 * np.pi * f * t) + 0.03 * rng.standard_normal(t.size) for f in (220, 331)]
    )
    audio = audio.astype(np.float32)
    chains = {}
    for name in presets:
        try:
            chains[name] = cakfx.load_preset(name, device=device)
        except Exception as exc:  # a preset this checkout cannot build: say so, bench the rest
            print(f"  {name}: skipped ({exc})")
    print(f"(b) real-time factor, {seconds:g} s of {RTF_SR} Hz stereo, reset=False blocks, {repeats} rounds")
    head = f"{'preset':16} {'buffer':>6} {'latency ms':>10} {'RTF min':>8} {'RTF med':>8} {'worst blk':>9}"
    print(head + "  keeps up?", flush=True)
    for name, chain in chains.items():
        times: dict[int, list[float]] = {bs: [] for bs in buffer_sizes}
        worst = dict.fromkeys(buffer_sizes, 0.0)
        for _ in range(repeats):  # interleaved: every buffer size once per round
            for bs in buffer_sizes:
                chain.reset()
                start = time.perf_counter()
                for i in range(0, audio.shape[1], bs):
                    t0 = time.perf_counter()
                    chain(audio[:, i : i + bs], RTF_SR, buffer_size=bs, reset=False)
                    worst[bs] = max(worst[bs], (time.perf_counter() - t0) / (bs / RTF_SR))
                times[bs].append((time.perf_counter() - start) / seconds)
        for bs in buffer_sizes:
            lat_ms = 1000 * chain.latency_samples(RTF_SR, bs) / RTF_SR
            med = statistics.median(times[bs])
            verdict = "yes" if med < 0.5 else ("barely" if med < 1 else "NO")
            cells = f"{name:16} {bs:6d} {lat_ms:10.1f} {min(times[bs]):8.3f} {med:8.3f} {worst[bs]:9.2f}"
            print(f"{cells}  {verdict}", flush=True)
    print("keeps up: yes = median RTF < 0.5 (room for a live callback), barely = median RTF < 1;")
    print("worst blk = slowest block's time / its duration (> 1: a live callback would have dropped out)")


def main() -> None:
    from cakfx.presets import bundled_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["rss", "rtf", "both"], default="both")
    parser.add_argument("--preset", action="append", help="preset(s) for the RSS part (repeatable)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0])
    parser.add_argument("--presets", nargs="+", help="presets for the RTF part (default: every bundled one)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--buffer-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 cores on the shared box)")
    parser.add_argument(
        "--engine", choices=["cli", "render_stream"], default="cli", help="what the RSS child runs"
    )
    parser.add_argument("--child-render", nargs=3, metavar=("PRESET", "IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_render:
        child_render(*args.child_render, device=args.device)
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.part in ("rss", "both"):
        bench_rss(args.preset or ["texture-subtle", "grain-noisy"], args.minutes, args.device, args.engine)
    if args.part in ("rtf", "both"):
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
        bench_rtf(
            args.presets or sorted(p.stem for p in bundled_dir().glob("*.toml")),
            args.seconds,
            args.buffer_sizes,
            args.repeats,
            args.device,
        )


if __name__ == "__main__":
    main()
