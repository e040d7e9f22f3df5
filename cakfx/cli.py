"""The ``cakfx`` command line: a thin click layer over the library."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import click

from cakfx import __version__
from cakfx.errors import CakfxError


class CakfxGroup(click.Group):
    """Turns ``CakfxError`` (and OS errors) into one ``Error: ...`` line and exit status 1.

    Heavy commands (``measure``) and plugin commands are loaded when asked for, so
    ``cakfx --help`` and the listing commands start without importing torch.
    """

    #: name -> (module, attribute, short help shown before the module is imported)
    lazy = {
        "measure": (
            "cakfx.measure",
            "measure",
            "Measure spectral flatness, centroid, RMS and format of audio files.",
        ),
        "studio": (
            "cakfx.studio.command",
            "studio",
            "Load, tweak, A/B and save in the browser: a local web app.",
        ),
    }

    def list_commands(self, ctx):
        _add_plugin_commands(full=False)
        return sorted(set(self.commands) | {n for n in self.lazy if _lazy_available(n)})

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name in self.lazy:
            module, attr, _ = self.lazy[name]
            try:
                command = getattr(importlib.import_module(module), attr)
            except ImportError:  # the module lands with another part of cakfx
                return None
            self.add_command(command, name)
            return command
        _add_plugin_commands(full=True)
        return self.commands.get(name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name not in self.commands and name in self.lazy:
                rows.append((name, self.lazy[name][2]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CakfxError as exc:
            raise click.ClickException(_printable(str(exc))) from None
        except (OSError, RecursionError, MemoryError) as exc:  # one line, never a traceback
            from cakfx.errors import describe_exception

            where = f" ({_printable(os.fsdecode(exc.filename))})" if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{describe_exception(exc)}{where}") from None


def _lazy_available(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(CakfxGroup.lazy[name][0]) is not None
    except (ImportError, ValueError):
        return False


_asked: set[str] = set()  # plugins already asked for their commands


def _add_plugin_commands(full: bool) -> None:
    """Ask plugins for top-level commands: third-party ones only (enough for --help),
    or all of them once a command name is not otherwise known."""
    from cakfx.plugin_manager import load_entry_point_plugins, load_plugins, pm, report_hook_failure

    load_plugins() if full else load_entry_point_plugins()
    for impl in pm.hook.register_commands.get_hookimpls():
        if impl.plugin_name in _asked:
            continue
        _asked.add(impl.plugin_name)
        try:
            impl.function(cli=cli)
        except Exception as exc:
            report_hook_failure(impl.plugin_name, "register_commands", exc)


class TrainGroup(click.Group):
    """``cakfx train``: its subcommands come from the trainer plugins, loaded on use."""

    _loaded = False

    def _load(self) -> None:
        if TrainGroup._loaded:
            return
        TrainGroup._loaded = True
        from cakfx.training import trainers

        for spec in trainers().values():
            self.add_command(_train_command(spec))

    def list_commands(self, ctx):
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._load()
        return super().get_command(ctx, name)


def _printable(text: str) -> str:
    """Text any terminal can take: lone surrogates (non-UTF-8 file names) as escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@click.group(cls=CakfxGroup)
@click.version_option(__version__, prog_name="cakfx")
def cli():
    """Apply learned CAK audio effects (texture, grain), chained with pedalboard effects, in bulk."""


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# ---- process --------------------------------------------------------------------------


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-p", "--preset", required=True, help="Preset name or path to a .toml file.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--set", "sets", multiple=True, metavar="ID.PARAM=VALUE", help="Override a preset parameter.")
@click.option("--device", default=None, help="auto, cpu, cuda[:N] or mps (default: $CAKFX_DEVICE or auto).")
@click.option(
    "--format",
    "out_format",
    default="same",
    show_default=True,
    type=click.Choice(["same", "wav", "flac", "ogg", "aiff"]),
    help="Output container.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them).")
@click.option("--dry-run", is_flag=True, help="Show what would be written, write nothing.")
@click.option("--report", type=click.Path(path_type=Path), help="Write per-file results as JSON.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 64),
    help="Files in parallel, each on one thread (default: one per CPU core, at most one per file).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
# ---- --executor ray (cakfx.executors.ray) ----
@click.option(
    "--executor",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="Where files are processed: local threads, or Ray actors (the cakfx[ray] extra).",
)
@click.option("--address", help="Ray cluster: auto, ray://HOST:10001 or HOST:PORT (default: start one).")
@click.option("--workers", type=click.IntRange(1), help="Ray workers (default: as the cluster allows).")
@click.option("--cpus-per-worker", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Fractional GPUs per Ray worker, e.g. 0.25 packs four on one GPU.",
)
@click.option(
    "--shared-storage",
    is_flag=True,
    help="Ray workers read and write the paths themselves (all see the same storage).",
)
def process(
    inputs,
    preset,
    out_dir,
    sets,
    device,
    out_format,
    overwrite,
    dry_run,
    report,
    jobs,
    quiet,
    executor,
    address,
    workers,
    cpus_per_worker,
    gpus_per_worker,
    shared_storage,
):
    """Process audio files and folders (recursively) through a preset's chain.

    The output tree mirrors the input tree; each file keeps its sample rate,
    channels, length, container and sample format. Existing outputs are
    skipped unless --overwrite, so rerunning resumes an interrupted batch.
    """
    from cakfx.audio import display_path
    from cakfx.batch import check_report_path, run_batch, write_report
    from cakfx.device import resolve_device
    from cakfx.presets import apply_overrides, build_chain, parse_set, read_preset, resolve_preset

    if report:
        report = check_report_path(report)  # refuse a bad path before any file is processed
    overrides = parse_set(sets)
    dev = resolve_device(device)
    # checked once, before touching any file; every worker builds from the same result
    spec = resolve_preset(apply_overrides(read_preset(preset), overrides))
    runner = None
    if executor == "ray" and not dry_run:  # workers build their own chains from the shipped preset
        from cakfx.executors.ray import RayExecutor

        runner = RayExecutor(spec, address, workers, cpus_per_worker, gpus_per_worker, device, shared_storage)
    first_chain = [build_chain(spec, device=dev)] if not (dry_run or runner) else []

    def chain_factory():
        # the first worker reuses the chain built up front; others get their own
        return first_chain.pop() if first_chain else build_chain(spec, device=dev)

    def on_result(result):
        if result.status in ("failed", "skipped"):
            click.echo(f"{result.status}: {result.input}: {result.reason}", err=True)
        elif result.status == "planned":
            click.echo(f"would write {result.output}")
        for warning in result.warnings:
            click.echo(f"warning: {result.input}: {warning}", err=True)

    result = run_batch(
        inputs,
        out_dir,
        chain_factory,
        out_format=out_format,
        overwrite=overwrite,
        dry_run=dry_run,
        jobs=jobs,
        progress=not quiet and not dry_run,
        on_result=on_result,
        executor=runner,
    )
    if report:
        write_report(
            report,
            result,
            preset=spec.name,
            preset_path=display_path(spec.path),
            output=display_path(out_dir),
            device=str(dev),
            overrides=overrides,
            executor=runner.describe() if runner else {"executor": "local", "jobs": result.jobs},
        )
    click.echo(f"{result.summary()} -> {display_path(out_dir)}", err=True)
    if not result.ok:
        sys.exit(1)


# ---- inspect --------------------------------------------------------------------------


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-p", "--preset", required=True, help="Preset name or path.")
@click.option("-o", "--out", "out_png", required=True, type=click.Path(path_type=Path), help="OUT.png")
@click.option("--set", "sets", multiple=True, metavar="ID.PARAM=VALUE", help="Override a preset parameter.")
@click.option(
    "--sweep", metavar="ID.PARAM=V1,V2,...", help="One row per value, e.g. texture.amount=0,0.5,1,2."
)
@click.option("--seconds", metavar="A:B", help="Only this part of the file, in seconds.")
@click.option("--device", default=None, help="auto, cpu, cuda[:N] or mps.")
def inspect(file, preset, out_png, sets, sweep, seconds, device):
    """Picture the effect: input, output and difference spectrograms (needs the viz extra)."""
    from cakfx.device import resolve_device
    from cakfx.presets import parse_set
    from cakfx.spectrogram import inspect_file

    info = inspect_file(file, preset, out_png, parse_set(sets), sweep, seconds, resolve_device(device))
    click.echo(f"wrote {info['path']} ({info['width']}x{info['height']}, {info['rows']} row(s))")


# ---- effects --------------------------------------------------------------------------


@cli.group()
def effects():
    """List and describe the registered effects."""


@effects.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def effects_list(as_json):
    """All registered effects."""
    from cakfx.registry import effects as registry

    table = registry()
    if as_json:
        _echo_json([spec.to_dict() for spec in table.values()])
        return
    width = max(len(n) for n in table)
    for name, spec in table.items():
        click.echo(f"{name:<{width}}  {spec.summary}")


@effects.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--weights", help="With --png: the weights to analyse (default: the effect's default).")
@click.option("--png", type=click.Path(path_type=Path), help="Draw the model's analysis picture (viz extra).")
def effects_show(name, as_json, weights, png):
    """One effect: what it does and its parameters."""
    from cakfx.registry import get_effect

    spec = get_effect(name)
    if png:
        from cakfx.weights import load_weights, resolve_weights

        if spec.analyse is None:
            raise CakfxError(f"{spec.name} has no analysis picture")
        ref = weights or spec.param_map["weights"].default
        info = spec.analyse(load_weights(resolve_weights(ref), expect_kind=spec.name), png)
        click.echo(f"wrote {info['path']} ({info['width']}x{info['height']})")
        return
    if as_json:
        _echo_json(spec.to_dict())
        return
    click.echo(f"{spec.name}  (plugin {spec.plugin})")
    if spec.description:
        click.echo()
        click.echo(spec.description)
    click.echo()
    click.echo("Parameters:")
    for p in spec.params:
        extra = p.range_text() or (f" (one of {', '.join(map(str, p.choices))})" if p.choices else "")
        default = "required" if p.required else f"default {p.default!r}"
        click.echo(f"  {p.name} [{p.type}] {default}{extra}")
        if p.help:
            click.echo(f"      {p.help}")


# ---- presets --------------------------------------------------------------------------


@cli.group()
def presets():
    """List, show, validate and share presets."""


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def presets_list(as_json):
    """Bundled and user presets (user presets shadow bundled ones)."""
    from cakfx.presets import preset_rows

    rows = preset_rows()
    if as_json:
        _echo_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['source']:<7}  {r['description']}")


@presets.command("show")
@click.argument("name")
def presets_show(name):
    """A preset's chain and its file."""
    from cakfx.presets import read_preset

    p = read_preset(name)
    click.echo(f"{p.name}  ({p.source}: {p.path})")
    if p.description:
        click.echo(p.description)
    if p.author:
        click.echo(f"author: {p.author}")
    for e in p.entries:
        params = ", ".join(f"{k}={v!r}" for k, v in e.params.items())
        ident = e.id or str(e.index)
        pin = f"  sha256={e.sha256[:12]}…" if e.sha256 else ""
        click.echo(f"  {e.index}. [{ident}] {e.effect}  {params}{pin}")


@presets.command("validate")
@click.argument("files", nargs=-1, required=True)
def presets_validate(files):
    """Check preset files: effects, parameters, weights and checksums."""
    from cakfx.presets import validate_preset

    bad = 0
    for f in files:
        try:
            p = validate_preset(f)
            click.echo(f"ok: {p.path} ({len(p.entries)} effects)")
        except CakfxError as exc:
            bad += 1
            click.echo(f"invalid: {exc}", err=True)
    if bad:
        sys.exit(1)


@presets.command("export")
@click.argument("name")
@click.option("-o", "--out", "out_file", required=True, type=click.Path(path_type=Path), help="FILE.zip")
def presets_export(name, out_file):
    """Pack a preset and every weights file it uses (pinned by sha256) into a zip."""
    from cakfx.sharing import export_preset

    info = export_preset(name, out_file)
    click.echo(f"wrote {out_file} ({info['preset']}, {len(info['weights'])} weights file(s))")


@presets.command("install")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace existing weights/presets of the same name.")
def presets_install(archive, force):
    """Install a shared preset zip into the user folders."""
    from cakfx.sharing import install_preset

    info = install_preset(archive, force=force)
    click.echo(f"installed preset {info['preset']!r} -> {info['path']}")
    for w in info["weights"]:
        click.echo(f"  weights {w}")


# ---- weights --------------------------------------------------------------------------


@cli.group()
def weights():
    """List and import model weights."""


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def weights_list(as_json):
    """Installed weights (user folder first, then bundled)."""
    from cakfx.weights import bundled_dir, check_weights, list_weights

    rows = []
    for name, path in list_weights().items():
        try:  # a full check, with numpy only: no torch needed to list
            meta, _, _, training = check_weights(path)
            kind, trainer = meta["kind"], str(training.get("trainer", training.get("source", "")))
        except CakfxError as exc:
            kind, trainer = "invalid", str(exc)
        source = "bundled" if path.parent == bundled_dir() else "user"
        rows.append({"name": name, "kind": kind, "source": source, "path": str(path), "origin": trainer})
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no weights installed (see 'cakfx weights import' and 'cakfx train')")
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['kind']:<12} {r['source']:<8} {r['origin']}")


@weights.command("import")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--kind", required=True, type=click.Choice(["texture", "grain"]), help="Which model it is.")
@click.option("--name", "-n", required=True, help="Name to store the weights under.")
@click.option("--stats", type=click.Path(path_type=Path), help="Normalisation stats JSON (texture).")
@click.option("--force", is_flag=True, help="Replace existing weights of the same name.")
def weights_import(checkpoint, kind, name, stats, force):
    """Convert an original research checkpoint (.pt) to safetensors, without unpickling code."""
    from cakfx.paths import user_weights_dir
    from cakfx.registry import get_effect
    from cakfx.weights import bundled_dir, save_weights

    spec = get_effect(f"cak.{kind}")
    if spec.import_checkpoint is None:
        raise CakfxError(f"{spec.name} cannot import checkpoints")
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise CakfxError(f"bad weights name {name!r}: use letters, digits, '-', '_' and '.'")
    target = user_weights_dir() / f"{name}.safetensors"
    if (bundled_dir() / target.name).exists() and not force:
        raise CakfxError(f"weights {name!r} would shadow the bundled weights of that name (use --force)")
    if target.exists() and not force:
        raise CakfxError(f"weights {name!r} already exist at {target} (use --force to replace)")
    tensors, stats_data, training = spec.import_checkpoint(checkpoint, stats)
    save_weights(target, tensors, kind=spec.name, stats=stats_data, training=training, name=name)
    click.echo(f"imported {checkpoint} -> {target}")


# ---- train ----------------------------------------------------------------------------


@cli.group(cls=TrainGroup)
def train():
    """Train a model on your own folder of samples."""


def _train_command(spec) -> click.Command:
    """``cakfx train NAME``, with one click option per ``Options`` field (declared once there)."""
    from dataclasses import MISSING, fields

    from cakfx.trainers.options import DEVICES, Options

    params: list[click.Parameter] = []
    for f in fields(Options):
        meta = f.metadata
        if meta.get("argument"):
            params.append(click.Argument([f.name], type=click.Path(path_type=str)))
            continue
        flag = "--" + f.name.replace("_", "-")
        decls = [flag] + ([meta["short"]] if "short" in meta else []) + [f.name]
        kwargs: dict = {"help": meta.get("help", "")}
        if f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            kwargs["show_default"] = f.default not in (None, False, ())
        if meta.get("flag"):
            kwargs["is_flag"] = True
        elif meta.get("multiple"):
            kwargs.update(multiple=True, metavar=meta.get("metavar"))
        elif "choices" in meta:
            kwargs["type"] = click.Choice(meta["choices"])
        elif "type" in meta:
            kwargs["type"] = meta["type"]
        if f.name == "device":
            kwargs["metavar"] = "|".join(DEVICES)
        params.append(click.Option(decls, **kwargs))

    def run(**kwargs) -> None:
        from cakfx.trainers.loop import run_training

        kwargs["exclude"] = tuple(kwargs.get("exclude") or ())
        try:
            run_training(spec.load(), Options(**kwargs), lambda text: click.echo(text, err=True))
        except CakfxError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    return click.Command(spec.name, callback=run, params=params, help=spec.help, short_help=spec.summary)
