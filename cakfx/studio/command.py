"""The ``cakfx studio`` command (a built-in plugin: ``register_commands``).

Imports neither starlette nor torch at import time, so ``cakfx --help`` stays light.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cakfx.hookspecs import hookimpl

INSTALL_HINT = "cakfx studio needs the studio extra: pip install 'cakfx[studio]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _have_server() -> bool:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


@click.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--report", type=click.Path(path_type=Path), help="A batch report (cakfx process --report).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="Port (default: a free one).")
@click.option("--no-browser", is_flag=True, help="Print the URL, do not open a browser.")
@click.option(
    "--max-upload-mb",
    default=1024,
    show_default=True,
    type=click.IntRange(1, 1 << 20),
    help="Largest upload accepted.",
)
@click.option("--device", default=None, help="auto, cpu, cuda[:N] or mps (default: $CAKFX_DEVICE or auto).")
def studio(files, report, host, port, no_browser, max_upload_mb, device):
    """Load, tweak, A/B and save in the browser: a local web app.

    Opens the studio on FILES (optional; files can also be dropped on the page),
    or on a batch with --report out/report.json. It listens on 127.0.0.1 and
    every request needs the random token in the printed URL. Ctrl-C stops it
    and removes its temporary files.
    """
    if not _have_server():
        raise click.ClickException(INSTALL_HINT)
    from cakfx.studio.server import serve

    if host not in LOOPBACK:
        click.secho(
            f"WARNING: listening on {host}: anyone who can reach this machine and learns the URL's token "
            "can read the files you give the studio and use this computer's CPU/GPU.",
            fg="red",
            bold=True,
            err=True,
        )
    serve(
        files=list(files),
        report=report,
        host=host,
        port=port,
        open_browser=not no_browser,
        max_upload=max_upload_mb * 1024 * 1024,
        device=device,
        echo=lambda line: click.echo(line, err=True),
    )
    sys.exit(0)


@hookimpl
def register_commands(cli):
    cli.add_command(studio)
