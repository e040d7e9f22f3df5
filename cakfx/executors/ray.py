"""Run a batch on Ray: stateful actors, the preset shipped once, audio through the object store.

``cakfx process IN... -p PRESET -o OUT --executor ray`` (the ``cakfx[ray]`` extra) hands the
processing of the planned files to :class:`RayExecutor`; planning, the report, the progress
bar and the exit status stay those of a local run (:mod:`cakfx.batch`).

How it works:

* The resolved preset (``--set`` overrides included) and every weights file it uses are
  packed once into a ``cakfx presets export`` archive, weights pinned by sha256
  (:func:`pack_preset`). Its bytes go into the object store once; each worker (a Ray actor)
  installs it into a private temporary ``$CAKFX_HOME``, checks the pins and builds its chain
  once. Workers need cakfx installed, not the driver's disk or its ``$CAKFX_HOME``.
* By default audio moves through the object store: the driver reads each input's bytes,
  the worker decodes, processes and encodes to the output format in memory (the very
  :func:`cakfx.batch.process_file` of a local run, so outputs are byte-identical to it), and
  the driver writes the result atomically. With ``shared_storage=True`` workers read inputs
  and write outputs (atomically) by path themselves: use it when every worker sees the same
  paths (NFS, a cluster file system), so file bytes never cross the driver.
* At most ``workers * depth`` files are in flight, so driver memory stays flat however many
  files there are.
* A worker process that dies mid-file (killed, a crashing plugin) is replaced and its files
  are retried up to ``retries`` times, then reported failed; nothing half-written lands
  (outputs are renamed into place only when complete). Ctrl-C kills the workers; outputs
  already written stay, so a rerun resumes.

Example (a cluster already running; ``address=None`` starts a local Ray for the run)::

    from cakfx.batch import run_batch
    from cakfx.executors.ray import RayExecutor
    from cakfx.presets import read_preset

    executor = RayExecutor(read_preset("texture-drums"), address="auto", workers=8)
    report = run_batch(["samples/"], "out/", None, executor=executor)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import tomli_w

from cakfx.errors import CakfxError
from cakfx.paths import atomic_write_bytes

#: the name workers show as (``ray::RayFileWorker`` in ``ps``)
WORKER_CLASS = "RayFileWorker"


# ---- shipping the preset ----------------------------------------------------------------


def pack_preset(preset) -> bytes:
    """The ``presets export`` archive (zip bytes) of ``preset`` as it stands (overrides applied).

    Weights are referred to by name and pinned by sha256 inside the archive; files given by
    path (``path`` parameters) cannot be shipped and give a clear error.
    """
    from cakfx.presets import resolved_entries
    from cakfx.registry import get_effect
    from cakfx.sharing import export_preset

    preset = getattr(preset, "preset", preset)  # a ResolvedPreset packs the preset it came from
    chain = []
    for entry, params in resolved_entries(preset):  # validates and checks pins on the driver
        spec = get_effect(entry.effect)
        table: dict[str, Any] = {"effect": entry.effect}
        if entry.id:
            table["id"] = entry.id
        for name, value in entry.params.items():
            # weights and paths as resolved (absolute), so the temporary copy finds them
            table[name] = params[name] if spec.param_map[name].type in ("weights", "path") else value
        for name, value in params.items():
            if spec.param_map[name].type == "weights":
                table[name] = value
        chain.append(table)
    head = {k: v for k, v in preset.meta.items() if v is not None}
    head["name"] = preset.name
    with tempfile.TemporaryDirectory(prefix="cakfx-pack-") as tmp:
        toml_path = Path(tmp) / f"{preset.path.stem}.toml"
        toml_path.write_text(tomli_w.dumps({"preset": head, "chain": chain}), encoding="utf-8")
        zip_path = Path(tmp) / "preset.zip"
        export_preset(str(toml_path), zip_path)
        return zip_path.read_bytes()


def install_packed(archive: bytes, home: Path, device: Any = None):
    """Install packed preset bytes into ``home`` (made the process's ``$CAKFX_HOME``); return
    the chain it describes. Pins are checked; a missing or altered weights file raises
    :class:`CakfxError` saying which."""
    from cakfx.presets import build_chain, read_preset
    from cakfx.sharing import install_preset

    os.environ["CAKFX_HOME"] = str(home)
    zip_path = home / "shipped-preset.zip"
    zip_path.write_bytes(archive)
    # the home is private to this worker: the shipped preset and weights are meant to take the
    # place of any bundled ones of the same name (their sha256 pins are still checked)
    info = install_preset(zip_path, force=True)
    return build_chain(read_preset(info["path"]), device=device)


# ---- the worker -------------------------------------------------------------------------


def _scratch_dir() -> str | None:
    shm = Path("/dev/shm")  # decode/encode in memory where the OS offers it
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


SCRATCH_PREFIX = "cakfx-rayworker-"


def _sweep_dead_workers() -> None:
    """Remove temporary folders left by workers on this machine that were killed."""
    for folder in {tempfile.gettempdir(), _scratch_dir() or tempfile.gettempdir()}:
        for path in Path(folder).glob(f"{SCRATCH_PREFIX}*-*-*"):
            pid = path.name.removeprefix(SCRATCH_PREFIX).split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(path, ignore_errors=True)


class _Worker:
    """One Ray actor: builds its chain once from the shipped preset, then processes files."""

    def __init__(self, archive: bytes, device: str | None, threads: int | None) -> None:
        import ray

        _sweep_dead_workers()
        self.home = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-home-"))
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-io-", dir=_scratch_dir()))
        ctx = ray.get_runtime_context()
        self.id = f"{ctx.get_node_id()[:8]}:{os.getpid()}"
        self.error = None
        try:
            if threads:
                import torch

                torch.set_num_threads(threads)
            from cakfx.device import resolve_device

            self.chain = install_packed(archive, self.home, resolve_device(device))
        except CakfxError as exc:
            # say where the preset came from instead of this worker's temporary paths
            self.error = str(exc).replace(str(self.home / "presets") + "/", "shipped preset ")
        except Exception as exc:  # a worker that cannot build the chain says why, once
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict:
        return {"worker": self.id, "error": self.error}

    def process_path(self, src: str, dst: str, out_format: str):
        """Shared storage: read ``src`` and write ``dst`` (atomically) by path."""
        return self._run(src, dst, out_format, lambda: (Path(src), Path(dst)))[0]

    def process_bytes(self, data: bytes, src: str, dst: str, out_format: str):
        """Object store: the input's bytes in, ``(result, output bytes or None)`` out."""
        job = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            tmp_in, tmp_out = job / "in" / Path(src).name, job / "out" / Path(dst).name
            tmp_in.parent.mkdir()
            tmp_in.write_bytes(data)
            result, ok = self._run(src, dst, out_format, lambda: (tmp_in, tmp_out), str(tmp_in))
            return result, (tmp_out.read_bytes() if ok else None)
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def _run(self, src: str, dst: str, out_format: str, paths: Callable, alias: str | None = None):
        from cakfx.batch import FileResult, process_file

        t0 = time.perf_counter()
        in_path, out_path = paths()
        try:
            result = process_file(in_path, out_path, self.chain, out_format)
        except CakfxError as exc:
            reason = str(exc).removeprefix(f"{in_path}: ")
            if alias:
                reason = reason.replace(alias, src)
            result = FileResult(src, dst, "failed", reason, seconds=round(time.perf_counter() - t0, 4))
        except MemoryError:
            result = FileResult(
                src, dst, "failed", "out of memory", seconds=round(time.perf_counter() - t0, 4)
            )
        result.input, result.output = src, dst
        result.worker = self.id
        return result, result.status == "ok"

    def close(self) -> None:
        """Remove this worker's temporary folders (a killed worker's are swept by the next)."""
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


# ---- the driver -------------------------------------------------------------------------


class RayExecutor:
    """Process a batch's files on Ray actors (see the module docstring).

    Args:
        preset: the resolved :class:`cakfx.presets.Preset` (overrides applied).
        address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
            ``None`` starts a local Ray instance for the run and stops it after.
        workers: actors to start (default: as many as the cluster's CPUs / GPUs allow).
        cpus_per_worker, gpus_per_worker: Ray resources per actor; ``gpus_per_worker=0.25``
            packs four workers on one GPU, and the neural nodes run there.
        device: the workers' torch device (default ``cuda`` with GPUs, else ``cpu``).
        shared_storage: workers read and write paths themselves instead of the driver.
        retries: how many times a file is retried after its worker died.
        depth: files queued per worker (one processing, the rest already shipped).
        archive: the packed preset bytes (default: ``pack_preset(preset)``).
    """

    def __init__(
        self,
        preset=None,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        device: str | None = None,
        shared_storage: bool = False,
        retries: int = 2,
        depth: int = 2,
        archive: bytes | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise CakfxError(f"--workers must be at least 1, got {workers}")
        if cpus_per_worker <= 0 or gpus_per_worker < 0:
            raise CakfxError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
        if archive is None and preset is None:
            raise CakfxError("RayExecutor needs a preset or a packed preset archive")
        self.archive = archive if archive is not None else pack_preset(preset)
        self.address = address
        self.workers = workers
        self.cpus_per_worker = float(cpus_per_worker)
        self.gpus_per_worker = float(gpus_per_worker)
        self.device = device or ("cuda" if gpus_per_worker > 0 else "cpu")
        self.shared_storage = shared_storage
        self.retries = max(0, int(retries))
        self.depth = max(1, int(depth))
        self.worker_ids: list[str] = []
        self.startup_seconds = 0.0  # connecting and starting the workers (chains built), last run

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, workers={self.workers!r}, "
            f"cpus_per_worker={self.cpus_per_worker!r}, gpus_per_worker={self.gpus_per_worker!r}, "
            f"device={self.device!r}, shared_storage={self.shared_storage!r}, retries={self.retries!r}, "
            f"depth={self.depth!r})"
        )

    def describe(self) -> dict:
        """Settings and the workers that ran, for the batch report."""
        return {
            "executor": "ray",
            "address": self.address,
            "workers": len(self.worker_ids),
            "worker_ids": list(self.worker_ids),
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "device": self.device,
            "shared_storage": self.shared_storage,
        }

    # -- cluster ----------------------------------------------------------------------

    def _connect(self) -> bool:
        """``ray.init`` unless already connected; True when this call connected."""
        try:
            import ray
        except ImportError:
            raise CakfxError("--executor ray needs Ray: pip install 'cakfx[ray]'") from None
        if ray.is_initialized():
            return False
        try:
            local = {} if self.address else {"_node_ip_address": "127.0.0.1"}  # a private instance
            ray.init(
                address=self.address,
                **local,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray instance"
            raise CakfxError(f"cannot connect to Ray at {where} ({str(exc).splitlines()[0]})") from None
        return True

    def _worker_count(self, ray) -> int:
        if self.workers:
            return self.workers
        total = ray.cluster_resources()
        n = int(total.get("CPU", 1) // self.cpus_per_worker)
        if self.gpus_per_worker:
            n = min(n, int(total.get("GPU", 0) // self.gpus_per_worker))
        if n < 1:
            raise CakfxError(f"the Ray cluster has no room for one worker ({total})")
        return n

    def _start(self, ray, actor_cls, archive_ref, count: int = 1, timeout: float = 300.0) -> list:
        """``count`` new actors, started together, once all are ready; or CakfxError with the reason."""
        options = {"num_cpus": self.cpus_per_worker, "num_gpus": self.gpus_per_worker}
        threads = max(1, int(self.cpus_per_worker))
        actors = [
            actor_cls.options(**options).remote(archive_ref, self.device, threads) for _ in range(count)
        ]
        try:
            states = ray.get([a.ready.remote() for a in actors], timeout=timeout)
            error = next((s["error"] for s in states if s["error"]), None)
            if error:
                raise CakfxError(f"Ray workers cannot build the chain: {error}")
        except ray.exceptions.GetTimeoutError:
            error = CakfxError(f"Ray workers did not start within {timeout:.0f} s (is the cluster too busy?)")
        except ray.exceptions.RayError as exc:
            error = CakfxError(f"a Ray worker failed to start ({str(exc).strip().splitlines()[0]})")
        except CakfxError as exc:
            error = exc
        else:
            self.worker_ids += [s["worker"] for s in states]
            return actors
        for actor in actors:
            ray.kill(actor)
        raise error

    # -- the run ----------------------------------------------------------------------

    def run(self, todo: list[tuple[Path, Path]], out_format: str, record: Callable[[Any], None]) -> None:
        """Process ``todo`` ((input, output) pairs), calling ``record(FileResult)`` per file."""
        import ray

        from cakfx.batch import FileResult

        t0 = time.perf_counter()
        started = self._connect()
        actors: list = []
        finished = False
        try:
            actor_cls = ray.remote(max_restarts=0, max_task_retries=0)(
                type(WORKER_CLASS, (_Worker,), {"__module__": __name__})
            )
            archive_ref = ray.put(self.archive)  # shipped once; each worker fetches it once
            count = min(self._worker_count(ray), max(1, len(todo)))
            actors = self._start(ray, actor_cls, archive_ref, count)
            self.startup_seconds = time.perf_counter() - t0
            queue = deque((src, dst, 0) for src, dst in todo)
            pending: dict = {}  # ObjectRef -> (slot, actor, src, dst, attempt)
            load = [0] * len(actors)

            def submit(slot: int) -> None:
                while queue and load[slot] < self.depth:
                    src, dst, attempt = queue.popleft()
                    actor = actors[slot]
                    if self.shared_storage:
                        ref = actor.process_path.remote(str(src), str(dst), out_format)
                    else:
                        try:
                            data = Path(src).read_bytes()
                        except OSError as exc:
                            record(FileResult(str(src), str(dst), "failed", f"cannot read ({exc.strerror})"))
                            continue
                        ref = actor.process_bytes.remote(data, str(src), str(dst), out_format)
                    pending[ref] = (slot, actor, src, dst, attempt)
                    load[slot] += 1

            for slot in range(len(actors)):
                submit(slot)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                slot, actor, src, dst, attempt = pending.pop(ref)
                load[slot] -= 1
                try:
                    value = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                    if actors[slot] is actor:  # not yet replaced (its other files fail over too)
                        self._replace(ray, actors, slot, actor_cls, archive_ref)
                    if attempt < self.retries:
                        queue.appendleft((src, dst, attempt + 1))
                    else:
                        reason = f"its Ray worker died while processing it ({attempt + 1} attempts)"
                        record(FileResult(str(src), str(dst), "failed", reason))
                except ray.exceptions.RayTaskError as exc:
                    record(FileResult(str(src), str(dst), "failed", str(exc).strip().splitlines()[-1]))
                else:
                    result, data = (value, None) if self.shared_storage else value
                    if data is not None:
                        try:
                            atomic_write_bytes(Path(dst), data)
                        except OSError as exc:
                            result.status, result.reason = "failed", f"cannot write output ({exc.strerror})"
                    record(result)
                del ref
                live = [s for s, a in enumerate(actors) if a is not None]
                if not live:
                    for src, dst, _ in queue:
                        record(FileResult(str(src), str(dst), "failed", "no Ray worker left"))
                    queue.clear()
                for other in live:  # files of a dead worker were requeued: anyone may take them
                    submit(other)
            finished = True
        finally:
            alive = [a for a in actors if a is not None]
            if finished:  # after Ctrl-C or an error: kill at once (the next worker sweeps up)
                try:
                    ray.get([a.close.remote() for a in alive], timeout=30)
                except ray.exceptions.RayError:
                    pass
            for actor in alive:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def _replace(self, ray, actors, slot, actor_cls, archive_ref) -> None:
        """A worker died: start another in its place, or carry on with the others."""
        try:
            ray.kill(actors[slot])
        except Exception:  # already gone
            pass
        try:
            actors[slot] = self._start(ray, actor_cls, archive_ref, timeout=120.0)[0]
        except CakfxError:
            actors[slot] = None
