"""TOML presets: reading, validation, resolution, building chains, sharing.

Resolution order for a preset reference: a path to a file, then
``$CAKFX_HOME/presets/NAME.toml``, then the bundled ``cakfx.bundled_presets`` (the repo's ``presets/``).
Every validation error names the file, the chain entry (index and id) and the key.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cakfx.chain import Chain
from cakfx.errors import CakfxError, describe_exception
from cakfx.paths import atomic_write_bytes, is_file, os_reason, user_presets_dir
from cakfx.registry import build_node, closest, effects, get_effect
from cakfx.weights import check_shapes, check_weights, remember, resolve_weights, settled_key, sha256_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENTRY_KEYS = ("id", "effect", "sha256")  # chain-entry keys that are not effect parameters
PRESET_KEYS = ("name", "description", "author", "version", "tags")
MAX_PRESET_BYTES = 1024 * 1024  # a real preset is a few hundred bytes


@dataclass(frozen=True)
class Entry:
    """One ``[[chain]]`` table, as written (parameters not yet checked). Immutable:
    overrides make a new entry."""

    index: int  # 1-based, as people count
    effect: str
    params: Mapping[str, Any]
    id: str | None = None
    sha256: str | None = None

    def label(self) -> str:
        return f"chain entry {self.index}" + (f" (id {self.id!r})" if self.id else f" ({self.effect})")


@dataclass(frozen=True)
class Preset:
    """A parsed preset file: structure checked, parameters not yet (see ``resolve_preset``)."""

    name: str
    path: Path
    entries: tuple[Entry, ...]
    description: str = ""
    author: str = ""
    source: str = "path"  # path | user | bundled
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class ResolvedEntry:
    """A chain entry checked once: parameters validated with defaults filled in, weights
    and paths resolved to files, pins verified. ``build_chain`` trusts it."""

    entry: Entry
    effect: str  # the registered name
    params: Mapping[str, Any]
    where: str  # "FILE: chain entry N (id 'x')", for errors while building


@dataclass(frozen=True)
class ResolvedPreset:
    """A preset with overrides applied and every entry resolved: ready to build."""

    preset: Preset
    entries: tuple[ResolvedEntry, ...]

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def path(self) -> Path:
        return self.preset.path


def bundled_dir() -> Path:
    return Path(str(resources.files("cakfx.bundled_presets")))


def list_presets() -> dict[str, tuple[Path, str]]:
    """Preset names -> (path, source); user presets shadow bundled ones."""
    found: dict[str, tuple[Path, str]] = {}
    for folder, source in ((bundled_dir(), "bundled"), (user_presets_dir(), "user")):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = (path, source)
    return dict(sorted(found.items()))


def preset_rows() -> list[dict[str, str]]:
    """One row per preset (``name``, ``source``, ``path``, ``description``), for listings.

    A preset that does not read shows ``(invalid: reason)`` as its description, so one
    malformed file never hides the others.
    """
    rows = []
    for name, (path, source) in list_presets().items():
        try:
            description = read_preset(path).description
        except CakfxError as exc:
            description = f"(invalid: {exc})"
        rows.append({"name": name, "source": source, "path": str(path), "description": description})
    return rows


def find_preset(ref: str | os.PathLike) -> tuple[Path, str]:
    """Locate a preset by path or name."""
    text = str(ref)
    path = Path(text).expanduser()
    if is_file(path):
        return path, "path"
    if text.endswith(".toml") or os.sep in text or "/" in text:
        raise CakfxError(f"preset file not found: {path}")
    known = list_presets()
    if text in known:
        return known[text]
    hint = closest(text, known)
    raise CakfxError(f"unknown preset {text!r}{hint}; see 'cakfx presets list'")


def read_preset(ref: str | os.PathLike) -> Preset:
    """Parse a preset file and check its structure (not yet its parameters)."""
    path, source = find_preset(ref)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
    except OSError as exc:
        raise CakfxError(f"{path}: cannot read preset ({describe_exception(exc)})") from None
    if len(raw) > MAX_PRESET_BYTES:
        raise CakfxError(f"{path}: preset file too large (limit {MAX_PRESET_BYTES // 1024} KiB)")
    return parse_preset(parse_toml(raw, path), path, source)


def parse_toml(raw: bytes, path: Path | str) -> dict:
    """TOML bytes -> dict, with one-line errors (bad UTF-8, bad TOML, nesting too deep)."""
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CakfxError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise CakfxError(f"{path}: invalid TOML ({exc})") from None
    except RecursionError:
        raise CakfxError(f"{path}: invalid TOML (nested too deeply)") from None


def parse_preset(data: dict, path: Path, source: str = "path") -> Preset:
    head = data.get("preset", {})
    if not isinstance(head, dict):
        raise CakfxError(f"{path}: [preset] must be a table")
    for key in data:
        if key not in ("preset", "chain"):
            raise CakfxError(f"{path}: unknown top-level key {key!r} (expected [preset] and [[chain]])")
    chain = data.get("chain")
    if not isinstance(chain, list) or not chain:
        raise CakfxError(f"{path}: no [[chain]] entries")
    entries = []
    seen_ids: set[str] = set()
    for i, table in enumerate(chain, start=1):
        if not isinstance(table, dict):
            raise CakfxError(f"{path}: chain entry {i} must be a table")
        params = dict(table)
        effect = params.pop("effect", None)
        entry_id = params.pop("id", None)
        sha = params.pop("sha256", None)
        where = f"{path}: chain entry {i}" + (f" (id {entry_id!r})" if entry_id else "")
        if not isinstance(effect, str) or not effect:
            raise CakfxError(f"{where}: missing 'effect' (e.g. effect = \"cak.texture\")")
        if entry_id is not None:
            if not isinstance(entry_id, str) or not entry_id or "." in entry_id:
                raise CakfxError(f"{where}: id must be a non-empty string without dots")
            if entry_id in seen_ids:
                raise CakfxError(f"{where}: duplicate id {entry_id!r}")
            seen_ids.add(entry_id)
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise CakfxError(f"{where}: sha256 must be a 64-character hex string")
        entries.append(Entry(i, effect, MappingProxyType(params), entry_id, sha))
    name = head.get("name") or path.stem
    return Preset(
        str(name),
        path,
        tuple(entries),
        str(head.get("description", "")),
        str(head.get("author", "")),
        source,
        MappingProxyType(dict(head)),
    )


# ---- overrides (--set) ---------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (``0.8``, ``true``, ``"x"``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def parse_set(items) -> dict[str, Any]:
    """``["texture.amount=0.8", ...]`` -> ``{"texture.amount": 0.8}``."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or "." not in key or not key.split(".", 1)[1]:
            raise CakfxError(f"--set {item!r}: expected ID.PARAM=VALUE, e.g. texture.amount=0.8")
        out[key.strip()] = parse_value(value.strip())
    return out


def _find_entry(preset: Preset, ref: str, key: str) -> Entry:
    for entry in preset.entries:
        if entry.id == ref:
            return entry
    if ref.isdigit() and 1 <= int(ref) <= len(preset.entries):
        return preset.entries[int(ref) - 1]
    matches = [
        e for e in preset.entries if ref.lower() in (e.effect.lower(), e.effect.split(".")[-1].lower())
    ]
    if len(matches) == 1:
        return matches[0]
    ids = [e.id or str(e.index) for e in preset.entries]
    raise CakfxError(
        f"--set {key}: preset {preset.name!r} has no chain entry {ref!r}{closest(ref, ids)} "
        f"(ids: {', '.join(ids)})"
    )


def apply_overrides(preset: Preset, overrides: dict[str, Any] | None) -> Preset:
    """A new ``Preset`` with ``{"ID.PARAM": value}`` overrides applied (``preset`` is left
    as it was)."""
    for key, value in (overrides or {}).items():
        ref, _, param = key.partition(".")
        entry = _find_entry(preset, ref, key)
        spec = get_effect(entry.effect)
        if param not in spec.param_map:
            raise CakfxError(
                f"--set {key}: {entry.effect} has no parameter {param!r}{closest(param, spec.param_map)}"
            )
        changed = replace(entry, params=MappingProxyType({**entry.params, param: value}))
        entries = tuple(changed if e is entry else e for e in preset.entries)
        preset = replace(preset, entries=entries)
    return preset


# ---- validation and building ----------------------------------------------------------


def resolved_entries(preset: Preset, weights_dirs: tuple[Path, ...] = ()) -> list[tuple[Entry, dict]]:
    """(entry, parameters ready for the factory) for every entry (see ``resolve_preset``)."""
    return [(r.entry, dict(r.params)) for r in resolve_preset(preset, weights_dirs).entries]


def resolve_preset(preset: Preset, weights_dirs: tuple[Path, ...] = ()) -> ResolvedPreset:
    """Check every entry once and return the immutable ``ResolvedPreset``.

    Parameters are validated (types, ranges, finite numbers) with defaults filled in;
    weights and path parameters are resolved relative to the preset file, weights files
    fully checked, and ``sha256`` pins verified. ``weights_dirs`` are searched first for
    weights names (an archive being installed).
    """
    from cakfx.registry import check_params

    out = []
    for entry in preset.entries:
        where = f"{preset.path}: {entry.label()}"
        if entry.effect not in effects():
            raise CakfxError(f"{where}: unknown effect {entry.effect!r}{closest(entry.effect, effects())}")
        spec = get_effect(entry.effect)
        params = check_params(spec, entry.params, where)
        weights_path = None
        for name, value in list(params.items()):
            ptype = spec.param_map[name].type
            if ptype == "weights":
                weights_path = _resolve_weights(value, preset.folder, weights_dirs, where)
                check_effect_weights(spec, weights_path, where)
                params[name] = str(weights_path)
            elif ptype == "path" and value and not Path(value).expanduser().is_absolute():
                params[name] = str(preset.folder / value)
        if entry.sha256:
            if weights_path is None:
                raise CakfxError(f"{where}: sha256 given but the entry has no weights")
            actual = sha256_file(weights_path)
            if actual != entry.sha256.lower():
                raise CakfxError(
                    f"{where}: weights checksum mismatch for {weights_path.name} "
                    f"(preset pins {entry.sha256[:12]}…, file is {actual[:12]}…)"
                )
        out.append(ResolvedEntry(entry, spec.name, MappingProxyType(params), where))
    return ResolvedPreset(preset, tuple(out))


def check_effect_weights(spec, path: Path, where: str = "") -> None:
    """Open and fully check a weights file for ``spec``: kind, metadata, finite values,
    and the tensor names and shapes the effect's model expects (when it says).

    A pass is kept per process while the file is unchanged (``cakfx.weights.settled_key``):
    each chain build checks its weights, and parsing their training metadata took 2 ms.
    """
    settled = settled_key(path)
    key = None if settled is None else (spec.name, *settled)
    if key is not None and _checked.get(key) is spec:
        return
    try:
        meta, arrays, stats, _ = check_weights(path, expect_kind=spec.name)
        if spec.expected_shapes is not None:
            try:
                expected = spec.expected_shapes(stats)
            except (KeyError, TypeError, ValueError) as exc:
                raise CakfxError(
                    f"{path}: weights stats do not fit {spec.name} ({describe_exception(exc)})"
                ) from None
            check_shapes({k: tuple(v.shape) for k, v in arrays.items()}, expected, path)
    except CakfxError as exc:
        raise CakfxError(f"{where}: weights: {exc}" if where else str(exc)) from None
    if key is not None:
        remember(_checked, key, spec)


_checked: dict[tuple, object] = {}  # settled weights files that passed, and the effect they passed for


def _resolve_weights(ref: str, folder: Path, extra_dirs: tuple[Path, ...], where: str) -> Path:
    for d in extra_dirs:
        candidate = d / f"{ref}.safetensors"
        if is_file(candidate):
            return candidate
    try:
        return resolve_weights(ref, relative_to=folder)
    except CakfxError as exc:
        raise CakfxError(f"{where}: weights: {exc}") from None


def validate_preset(ref: str | os.PathLike, overrides: dict | None = None) -> Preset:
    """Read and fully check a preset without loading any model."""
    preset = apply_overrides(read_preset(ref), overrides)
    resolve_preset(preset)
    return preset


def build_chain(preset: Preset | ResolvedPreset, device: Any = None) -> Chain:
    """The ``Chain`` of a preset; a ``ResolvedPreset`` is built as it is, without checking
    it again (so a batch resolves once and builds one chain per worker)."""
    resolved = preset if isinstance(preset, ResolvedPreset) else resolve_preset(preset)
    items = [build_node(get_effect(r.effect), dict(r.params), device, r.where) for r in resolved.entries]
    return Chain(items, [r.entry.id for r in resolved.entries])


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def save_preset(
    name: str,
    entries: list[dict[str, Any]],
    description: str = "",
    author: str = "",
    folder: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Check a chain and write it as a TOML preset; return the file's path.

    ``entries`` are dicts like ``[[chain]]`` tables (``effect``, optional ``id``,
    parameters). The preset is validated exactly as ``cakfx presets validate``
    would, then written atomically to ``folder`` (default: the user preset
    folder), so ``cakfx process -p NAME`` can use it at once. An existing preset
    of that name is replaced only with ``overwrite=True``.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> path = save_preset("warm", [{"effect": "pedalboard.Gain", "gain_db": -3.0}], folder=folder)
    >>> path.name
    'warm.toml'
    """
    import tomli_w

    if not isinstance(name, str) or not _NAME_OK.match(name) or name.endswith(".toml"):
        raise CakfxError(
            f"preset name {name!r}: use letters, digits, '-', '_' or '.' (no path, no extension)"
        )
    if not isinstance(entries, (list, tuple)) or not all(isinstance(e, dict) for e in entries):
        raise CakfxError(f"preset {name!r}: entries must be a list of tables (dicts)")
    folder = Path(folder) if folder is not None else user_presets_dir()
    path = folder / f"{name}.toml"
    head: dict[str, Any] = {"name": name}
    if description:
        head["description"] = str(description)
    if author:
        head["author"] = str(author)
    data = {"preset": head, "chain": [dict(e) for e in entries]}
    preset = parse_preset(data, path, "user")
    resolved_entries(preset)  # parameters, weights, pins: the same checks as validate
    if path.exists() and not overwrite:
        raise CakfxError(f"{path}: a preset of that name exists (pass overwrite=True to replace it)")
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError) as exc:
        raise CakfxError(f"preset {name!r}: cannot be written as TOML ({exc})") from None
    try:
        return atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise CakfxError(f"{path}: cannot write preset ({os_reason(exc)})") from None


def load_preset(name_or_path, device=None, overrides=None) -> Chain:
    """The ``Chain`` a preset describes, with ``--set``-style overrides applied."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_set(overrides)
    preset = apply_overrides(read_preset(name_or_path), overrides)
    return build_chain(resolve_preset(preset), device=device)
