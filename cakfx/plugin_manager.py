"""The plugin manager: built-in plugin modules plus the ``cakfx`` entry points."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

import pluggy

from cakfx import hookspecs

DEFAULT_PLUGINS = (
    "cakfx.plugins.pedalboard_bridge",
    "cakfx.plugins.texture",
    "cakfx.plugins.grain",
    "cakfx.plugins.limiter",
    "cakfx.trainers",
    "cakfx.studio.command",
)

pm = pluggy.PluginManager("cakfx")
pm.add_hookspecs(hookspecs)

#: plugin name -> one-line reason, for every plugin that failed to load
failed_plugins: dict[str, str] = {}
_loaded = False


def _report(name: str, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    failed_plugins[name] = reason
    print(f"cakfx: plugin {name!r} failed to load and was skipped ({reason})", file=sys.stderr)


def load_plugins() -> None:
    """Register the built-in modules and third-party entry points, once.

    A plugin that fails to import is reported by name and skipped; the rest
    keep working.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written yet / removed: nothing to register
                continue
            _report(module_name, exc)
            continue
        except Exception as exc:  # a broken built-in must not take the CLI down either
            _report(module_name, exc)
            continue
        if pm.get_plugin(module_name) is None:
            pm.register(module, module_name)
    load_entry_point_plugins()


_entry_points_loaded = False


def load_entry_point_plugins() -> None:
    """Register the third-party plugins (``cakfx`` entry points) only, once: enough to
    list their commands without importing the built-in neural effects."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="cakfx"):
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, ep.name)
        except Exception as exc:
            _report(ep.name, exc)


def call_hook(hook_name: str, **kwargs) -> None:
    """Call every plugin's ``hook_name`` one by one: a plugin that raises is reported by
    name and skipped, and the others still run."""
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        try:
            impl.function(**kwargs)
        except Exception as exc:
            report_hook_failure(impl.plugin_name, hook_name, exc)


def report_hook_failure(plugin: str, hook_name: str, exc: BaseException) -> None:
    """Say on stderr, once per line, that ``plugin`` raised inside ``hook_name``."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    failed_plugins[plugin] = reason
    print(f"cakfx: plugin {plugin!r} failed in {hook_name} and was skipped ({reason})", file=sys.stderr)
