"""Run the studio on uvicorn: bind, print the URL with its token, open the browser,
stop cleanly on Ctrl-C and remove the temporary files."""

from __future__ import annotations

import socket
import threading
import webbrowser
from typing import Callable

import uvicorn

from cakfx.studio.app import LOOPBACK_NAMES, create_app
from cakfx.studio.core import Studio


def studio_url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def serve(
    files=(),
    report=None,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = True,
    max_upload: int = 1 << 30,
    device=None,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve until Ctrl-C (or SIGTERM); the studio's temporary folder is removed on the way out."""
    studio = Studio(files=files, report=report, max_upload=max_upload, device=device)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until uvicorn serves them
        port = sock.getsockname()[1]
        hosts = set(LOOPBACK_NAMES) | {host}
        if host in ("0.0.0.0", "::"):
            hosts |= {socket.gethostname(), socket.getfqdn()}
        app = create_app(studio, hosts=hosts)
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        server = uvicorn.Server(config)
        url = studio_url("127.0.0.1" if host in ("0.0.0.0", "::") else host, port, studio.token)
        echo(f"cakfx studio: {url}")
        echo("Ctrl-C stops it.")
        if open_browser:
            threading.Timer(0.5, webbrowser.open, args=(url,)).start()
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; we are done anyway
            pass
    finally:
        studio.close()
    echo("cakfx studio: stopped, temporary files removed")
