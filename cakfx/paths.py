"""Where user data lives: ``$CAKFX_HOME`` or the platform's data folder."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cakfx_home() -> Path:
    env = os.environ.get("CAKFX_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("cakfx", appauthor=False))


def user_presets_dir() -> Path:
    return cakfx_home() / "presets"


def user_weights_dir() -> Path:
    return cakfx_home() / "weights"


def as_new_file(path: str | os.PathLike) -> None:
    """Give a temporary file the permissions a plain new file would get (mkstemp and
    safetensors create them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
