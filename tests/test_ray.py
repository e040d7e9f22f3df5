"""``cakfx process --executor ray`` on a real two-raylet Ray cluster, against a local run.

The cluster lives in a network namespace of its own (``unshare -n``, loopback only), as Ray
advertises the external interface otherwise: a holder process owns the namespace, ``ray
start --block`` runs the head and a second raylet inside it (``nsenter``), and every driver
(the ``cakfx`` CLI) runs there too. Everything started here is stopped by PID. The chain is
the bundled ``texture-drums`` preset (the neural texture model, a compressor and a reverb)
with a ``--set`` override, so the shipped preset, its pinned weights and the overrides all
have to reach the workers.

Outputs are compared byte for byte with a local run (WAV/FLAC/AIFF; Ogg is left out as its
stream serial number is random per write), except the write time that libsndfile stamps into
the PEAK chunk of float files: the audio and every other header byte are identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cakfx.cli import cli
from tests.signals import drums, tone

PORT = 6379  # the namespace is private, so the default port is free
PRESET = ["-p", "texture-drums", "--set", "texture.amount=0.5"]
# (relative path, sample rate, channels, format, subtype, seconds)
FILES = [
    ("kit/kick.wav", 44100, 1, "WAV", "PCM_16", 0.5),
    ("kit/snare_float.wav", 48000, 2, "WAV", "FLOAT", 0.6),
    ("kit/deep/hat24.wav", 96000, 2, "WAV", "PCM_24", 0.3),
    ("loops/loop.flac", 44100, 2, "FLAC", "PCM_24", 1.0),
    ("loops/loop.aiff", 32000, 1, "AIFF", "PCM_16", 0.7),
    ("loops/deep/loop2.wav", 22050, 2, "WAV", "PCM_16", 0.8),
]


def _ray_bin() -> Path:
    return Path(sys.executable).with_name("ray")


def _namespaces_work() -> str | None:
    """Why Ray tests cannot run here, or None."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cakfx[ray]')")
    if sys.platform != "linux" or not shutil.which("unshare") or not shutil.which("nsenter"):
        return "needs Linux with unshare and nsenter (util-linux)"
    if not shutil.which("ip"):
        return "needs 'ip' (iproute2) to bring loopback up in the namespace"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    if probe.returncode:
        return f"unshare -n not permitted here ({probe.stderr.decode().strip() or probe.returncode})"
    return None


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(*pids: int) -> list[int]:
    tree, out, todo = _children(), [], list(pids)
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Cluster:
    """A head and a second raylet in a private network namespace, stopped by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.auth: dict[str, str] = {}
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 86400"])
        for _ in range(100):  # wait until the holder has exec'd into the namespace with lo up
            # its own command line also names sleep: only once it *starts* with it has the shell
            # exec'd, so unshare made the namespace and lo is up (else nsenter would join ours)
            if cmdline(self.holder.pid).startswith("sleep"):
                break
            time.sleep(0.05)
        if os.readlink(f"/proc/{self.holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            self.holder.kill()
            raise RuntimeError("the test cluster's network namespace did not come up")
        # workers get their own empty $CAKFX_HOME: they must not need the driver's
        # token auth with a token of this cluster's own, passed to every process we start
        self.auth = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": os.urandom(16).hex(),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env = {**os.environ, **self.auth, "CAKFX_HOME": str(root / "worker-home")}
        common = ["--block", "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
        self.start(
            [
                _ray_bin(),
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={PORT}",
                "--include-dashboard=false",
                f"--temp-dir={root / 'ray'}",
                *common,
            ]
        )
        self.start(
            [_ray_bin(), "start", f"--address=127.0.0.1:{PORT}", "--node-ip-address=127.0.0.1", *common]
        )
        wait = (
            "import ray, time\n"
            f"ray.init(address='127.0.0.1:{PORT}', log_to_driver=False)\n"
            "while len([n for n in ray.nodes() if n['Alive']]) < 2: time.sleep(0.2)\n"
        )
        try:
            done = self.run([sys.executable, "-c", wait], timeout=240)
            if done.returncode:
                raise RuntimeError(f"the test cluster did not come up:\n{done.stderr[-3000:]}")
        except BaseException:
            self.stop()
            raise

    def inside(self, args) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", *map(str, args)]

    def start(self, args) -> None:
        self.procs.append(subprocess.Popen(self.inside(args), env=self.env, stdout=subprocess.DEVNULL))

    def run(self, args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.auth}
        return subprocess.run(
            self.inside(args), capture_output=True, text=True, timeout=timeout, env=env, **kw
        )

    def popen(self, args) -> subprocess.Popen:
        env = {**os.environ, **self.auth}
        return subprocess.Popen(
            self.inside(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def worker_pids(self) -> list[int]:
        """Live cakfx worker actors (``ray::RayFileWorker``) under our raylets."""
        pids = descendants(*(p.pid for p in self.procs))
        return [p for p in pids if cmdline(p).startswith("ray::RayFileWorker")]

    def stop(self) -> None:
        started = [p.pid for p in self.procs]
        family = descendants(*started)
        for proc in reversed(self.procs):  # ray start --block stops what it started on SIGTERM
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in family:  # anything that outlived its ray start
            if Path(f"/proc/{pid}").exists():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.holder.kill()
        self.holder.wait()


def test_packed_preset_builds_the_same_chain_in_another_home(tmp_path, monkeypatch):
    """What a worker does with the shipped archive, without Ray: same chain, same output."""
    from cakfx.executors.ray import install_packed, pack_preset
    from cakfx.presets import apply_overrides, build_chain, parse_set, read_preset

    preset = apply_overrides(read_preset("texture-drums"), parse_set(["texture.amount=0.9"]))
    archive = pack_preset(preset)
    x = drums(1.0, channels=2)
    expected = build_chain(preset)(x, 44100)
    monkeypatch.setenv("CAKFX_HOME", str(tmp_path / "driver-home-is-not-here"))
    (tmp_path / "worker").mkdir()
    chain = install_packed(archive, tmp_path / "worker")
    assert chain["texture"].amount == 0.9  # the override travelled (the preset says 0.7)
    np.testing.assert_array_equal(chain(x, 44100), expected)
    assert not np.allclose(expected, x)


@pytest.fixture(scope="module")
def cluster():
    reason = _namespaces_work()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="cakfx-rt-"))  # short: Ray's socket paths must fit
    c = None
    try:
        c = Cluster(root)
        yield c
    finally:
        if c is not None:
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


def make_library(root: Path, files=FILES, extras: bool = True) -> Path:
    for i, (rel, sr, ch, fmt, sub, seconds) in enumerate(files):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        x = drums(seconds, sr=sr, channels=ch, seed=i) if i % 2 else tone(seconds, sr=sr, channels=ch, seed=i)
        sf.write(path, x.T, sr, format=fmt, subtype=sub)
    if extras:
        (root / "kit" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
        (root / "readme.txt").write_text("not audio")
    return root


def canonical(data: bytes) -> bytes:
    """File bytes with the write time in libsndfile's PEAK chunk (float WAV/AIFF) zeroed."""
    i = data.find(b"PEAK")
    return data if i < 0 else data[: i + 12] + bytes(4) + data[i + 16 :]


def digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (PEAK time zeroed)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(canonical(p.read_bytes())).hexdigest() for p in files}


def run_local(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ray_process(cluster: Cluster, *args, **kw):
    cmd = [
        sys.executable,
        "-m",
        "cakfx",
        "process",
        *args,
        "--executor",
        "ray",
        "--address",
        f"127.0.0.1:{PORT}",
    ]
    return cluster.run(cmd, **kw)


def by_input(report: Path) -> dict[str, dict]:
    return {Path(f["input"]).name: f for f in json.loads(report.read_text())["files"]}


@pytest.mark.slow
def test_ray_run_equals_local_run_and_resumes(cluster, tmp_path):
    lib = make_library(tmp_path / "lib")
    before = digests(lib)
    local = run_local(
        "process", lib, *PRESET, "-o", tmp_path / "local", "--report", tmp_path / "local.json", "-q"
    )
    assert local.exit_code == 1  # the corrupt file

    out, report = tmp_path / "ray", tmp_path / "ray.json"
    done = ray_process(cluster, lib, *PRESET, "-o", out, "--report", report, "-q")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"failed: {lib / 'kit' / 'corrupt.wav'}: " in done.stderr
    assert digests(out) == digests(tmp_path / "local")  # byte-identical outputs, same tree
    assert len(digests(out)) == len(FILES)
    assert digests(lib) == before  # inputs never written

    data = json.loads(report.read_text())
    assert data["counts"] == json.loads((tmp_path / "local.json").read_text())["counts"]
    assert data["executor"]["executor"] == "ray" and data["executor"]["workers"] == 2
    files, local_files = by_input(report), by_input(tmp_path / "local.json")
    assert files["corrupt.wav"]["status"] == "failed"
    assert files["corrupt.wav"]["reason"] == local_files["corrupt.wav"]["reason"]
    ok = [f for f in files.values() if f["status"] == "ok"]
    assert len(ok) == len(FILES) and all(f["worker"] and f["seconds"] > 0 for f in ok)
    assert len({f["worker"].split(":")[0] for f in ok}) == 2  # both raylets did work
    for f in ok:
        assert {k: f[k] for k in ("duration", "sample_rate", "channels", "format", "subtype")} == {
            k: local_files[Path(f["input"]).name][k]
            for k in ("duration", "sample_rate", "channels", "format", "subtype")
        }

    # resume: outputs that exist are skipped, missing ones are made again, identically
    for rel in ("kit/kick.wav", "loops/loop.flac"):
        (out / rel).unlink()
    again = ray_process(cluster, lib, *PRESET, "-o", out, "--report", report, "-q")
    assert again.returncode == 1
    counts = json.loads(report.read_text())["counts"]
    assert (counts["ok"], counts["exists"], counts["failed"]) == (2, len(FILES) - 2, 1)
    assert digests(out) == digests(tmp_path / "local")
    assert not list(out.rglob("*.cakfx-tmp"))

    # workers reading and writing the paths themselves give the same bytes
    shared = ray_process(cluster, lib, *PRESET, "-o", tmp_path / "shared", "--shared-storage", "-q")
    assert shared.returncode == 1, shared.stderr
    assert digests(tmp_path / "shared") == digests(tmp_path / "local")


@pytest.mark.slow
def test_worker_killed_mid_run_costs_no_file(cluster, tmp_path):
    files = [(f"long/{i:02d}.wav", 44100, 2, "WAV", "PCM_16", 4.0) for i in range(12)]
    lib = make_library(tmp_path / "lib", files, extras=False)
    local = run_local("process", lib, *PRESET, "-o", tmp_path / "local", "-q")
    assert local.exit_code == 0

    out, report = tmp_path / "ray", tmp_path / "ray.json"
    cmd = [
        sys.executable,
        "-m",
        "cakfx",
        "process",
        lib,
        *PRESET,
        "-o",
        out,
        "--report",
        report,
        "-q",
        "--executor",
        "ray",
        "--address",
        f"127.0.0.1:{PORT}",
        "--workers",
        "2",
    ]
    driver = cluster.popen(cmd)
    victim = None
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        # kill a busy worker once the run is under way (its queue always holds a file)
        if victim is None and len(list(out.rglob("*.wav"))) >= 2:
            workers = cluster.worker_pids()
            if workers:
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = driver.communicate(timeout=300)
    assert victim is not None, "the run ended before a worker could be killed"
    assert driver.returncode == 0, stderr
    data = json.loads(report.read_text())
    assert data["counts"]["ok"] == len(files) and data["counts"]["failed"] == 0
    assert len(data["executor"]["worker_ids"]) == 3  # two, then one in place of the killed one
    assert any(w.endswith(f":{victim}") for w in data["executor"]["worker_ids"])  # a cakfx worker died
    assert digests(out) == digests(tmp_path / "local")
    assert not list(out.rglob("*.cakfx-tmp"))


# one driver process for several archives: ARGS = address, input folder, then (archive, out) pairs
SHIP = """
import sys
from cakfx.batch import run_batch
from cakfx.errors import CakfxError
from cakfx.executors.ray import RayExecutor
address, lib, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
for archive, out in zip(pairs[::2], pairs[1::2]):
    executor = RayExecutor(archive=open(archive, "rb").read(), address=address, workers=1)
    try:
        report = run_batch([lib], out, None, progress=False, executor=executor)
        print(f"ok {report.count('ok')}")
    except CakfxError as exc:
        print(f"error {exc}")
"""


def _repack(archive: bytes, change) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = change(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info, data)
    return out.getvalue()


@pytest.mark.slow
def test_missing_or_altered_weights_on_workers_is_one_clear_error(cluster, tmp_path, cakfx_home):
    from cakfx.executors.ray import pack_preset
    from cakfx.presets import read_preset
    from cakfx.weights import load_weights, resolve_weights, save_weights

    # weights that exist only in the driver's $CAKFX_HOME, not bundled, not on the workers
    wf = load_weights(resolve_weights("cak-texture-default"))
    save_weights(
        cakfx_home / "weights" / "my-texture.safetensors", wf.tensors, wf.kind, wf.stats, name="my-texture"
    )
    preset = tmp_path / "mine.toml"
    preset.write_text('[preset]\nname = "mine"\n[[chain]]\neffect = "cak.texture"\nweights = "my-texture"\n')
    archive = pack_preset(read_preset(preset))
    lib = make_library(tmp_path / "lib", FILES[:2])

    def weights(change):
        return lambda name, data: change(data) if name.endswith(".safetensors") else data

    cases = {  # archive -> what the one error line must say
        "missing": (_repack(archive, weights(lambda data: None)), "unknown weights 'my-texture'"),
        "altered": (_repack(archive, weights(lambda data: data[:-8] + bytes(8))), "checksum mismatch"),
        "intact": (archive, None),
    }
    args = []
    for case, (data, _) in cases.items():
        (tmp_path / f"{case}.zip").write_bytes(data)
        args += [tmp_path / f"{case}.zip", tmp_path / f"out-{case}"]
    done = cluster.run([sys.executable, "-c", SHIP, f"127.0.0.1:{PORT}", lib, *args])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(cases), done.stdout  # one line per run: no traceback, no noise
    for line, (case, (_, words)) in zip(lines, cases.items()):
        if words is None:  # the intact archive works from the driver's weights alone
            assert line == "ok 2", line
            y, _ = sf.read(tmp_path / "out-intact" / FILES[0][0])
            assert np.all(np.isfinite(y)) and np.abs(y).max() > 0.01
            continue
        assert line.startswith("error Ray workers cannot build the chain: shipped preset mine.toml"), line
        assert words in line, line
        assert not list((tmp_path / f"out-{case}").rglob("*.wav")), case


@pytest.mark.slow
def test_ctrl_c_cancels_cleanly_and_a_rerun_resumes(cluster, tmp_path):
    # enough work that the interrupt lands mid-run even when each file takes only a few ms
    files = [(f"loops/{i:02d}.wav", 44100, 2, "WAV", "PCM_16", 3.0) for i in range(48)]
    lib = make_library(tmp_path / "lib", files, extras=False)
    out, report = tmp_path / "ray", tmp_path / "ray.json"
    cmd = [sys.executable, "-m", "cakfx", "process", lib, *PRESET, "-o", out, "-q", "--workers", "2",
           "--executor", "ray", "--address", f"127.0.0.1:{PORT}"]  # fmt: skip
    driver = cluster.popen(cmd)  # nsenter execs: the driver is this very process
    deadline = time.monotonic() + 300
    while len(list(out.rglob("*.wav"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 1 and stderr.strip().endswith("Aborted!"), stderr
    done_before = {p.name for p in out.rglob("*.wav")}
    assert 2 <= len(done_before) < len(files)  # cancelled mid-run
    assert not list(out.rglob("*.cakfx-tmp"))  # nothing half-written
    for path in out.rglob("*.wav"):
        assert sf.info(path).frames == 3 * 44100

    again = cluster.run(
        cmd[:-4] + ["--report", report, "--executor", "ray", "--address", f"127.0.0.1:{PORT}"]
    )
    assert again.returncode == 0, again.stderr
    counts = json.loads(report.read_text())["counts"]
    assert counts["exists"] == len(done_before) and counts["ok"] == len(files) - len(done_before)
