"""Shared fixtures: an isolated $CAKFX_HOME, the reference data, synthetic audio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(
    os.environ.get("CAKFX_REFERENCE", Path(__file__).resolve().parents[1].parent / "shared" / "reference")
).resolve()


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: enabled with --runslow (.ci/run does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def cakfx_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty $CAKFX_HOME; user data is never touched."""
    home = tmp_path_factory.mktemp("cakfx-home")
    monkeypatch.setenv("CAKFX_HOME", str(home))
    monkeypatch.delenv("CAKFX_DEVICE", raising=False)
    return home


@pytest.fixture(scope="session")
def reference() -> Path:
    """The shared reference folder, or skip with the reason."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (set CAKFX_REFERENCE)")
    return REFERENCE
