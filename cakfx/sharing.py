"""Sharing presets: a zip holding the preset and every weights file it uses.

Archive layout: ``NAME.toml`` at the top and ``weights/W.safetensors`` for
each weights file. In the archived preset, weights are referred to by name and
pinned by sha256, so the receiver gets exactly the weights the author used.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import tomli_w

from cakfx.errors import CakfxError, describe_exception
from cakfx.paths import atomic_write_bytes, user_presets_dir, user_weights_dir
from cakfx.presets import parse_preset, read_preset, resolved_entries, tomllib
from cakfx.registry import effects, get_effect
from cakfx.weights import check_weights, sha256_file

WEIGHTS_FOLDER = "weights"


def export_preset(ref: str, out_file: str | Path) -> dict:
    """Write ``out_file`` (zip) with the preset and its weights; return a summary."""
    preset = read_preset(ref)
    data = tomllib.loads(preset.path.read_text(encoding="utf-8"))
    weights: dict[str, Path] = {}
    for (entry, params), table in zip(resolved_entries(preset), data["chain"]):
        spec = get_effect(entry.effect)
        for name, value in params.items():
            ptype = spec.param_map[name].type
            if ptype == "weights":
                path = Path(value)
                meta = check_weights(path)[0]
                wname = meta.get("name") or path.name.removesuffix(".safetensors")
                if wname in weights and weights[wname] != path:
                    raise CakfxError(f"{preset.path}: two different weights files are both named {wname!r}")
                weights[wname] = path
                table[name] = wname
                table["sha256"] = sha256_file(path)
            elif ptype == "path" and value:
                raise CakfxError(
                    f"{preset.path}: {entry.label()} uses a file ({name} = {value!r}) that cannot be shared"
                )
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{preset.path.stem}.toml", tomli_w.dumps(data))
        for wname, path in weights.items():
            zf.write(path, f"{WEIGHTS_FOLDER}/{wname}.safetensors")
    tmp.replace(out_file)
    return {"preset": preset.path.stem, "weights": sorted(weights), "path": str(out_file)}


MAX_MEMBERS = 64
MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024  # all members together, as extracted


def _check_members(zf: zipfile.ZipFile, archive: Path) -> tuple[str, list[str]]:
    preset_name, weights = None, []
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CakfxError(f"{archive}: {len(infos)} archive members (limit {MAX_MEMBERS})")
    for info in infos:
        if info.is_dir():
            continue
        member = PurePosixPath(info.filename)
        bad = member.is_absolute() or ".." in member.parts or "\\" in info.filename or ":" in info.filename
        if bad:
            raise CakfxError(
                f"{archive}: refusing archive member {info.filename!r} (outside the user folders)"
            )
        if len(member.parts) == 1 and member.suffix == ".toml":
            if preset_name:
                raise CakfxError(f"{archive}: more than one preset in the archive")
            preset_name = info.filename
        elif len(member.parts) == 2 and member.parts[0] == WEIGHTS_FOLDER and member.suffix == ".safetensors":
            weights.append(info.filename)
        else:
            raise CakfxError(f"{archive}: unexpected archive member {info.filename!r}")
    if not preset_name:
        raise CakfxError(f"{archive}: no preset (.toml) in the archive")
    return preset_name, weights


def _extract(zf: zipfile.ZipFile, member: str, dest: Path, limit: int, archive: Path) -> int:
    """Copy one member, counting bytes as they are decompressed: the header's sizes may
    lie, so the limit holds for what is actually written (a zip bomb stops at ``limit``)."""
    written = 0
    with zf.open(member) as src, open(dest, "wb") as dst:
        while True:
            block = src.read(1 << 16)
            if not block:
                break
            written += len(block)
            if written > limit:
                raise CakfxError(f"{archive}: member {member!r} is larger than the limit ({limit} bytes)")
            dst.write(block)
    return written


def _check_portable(preset, archive: Path) -> None:
    """Installed presets refer to files inside the user folders only: no absolute paths,
    no ``..``, no native plugin files from elsewhere."""
    for entry in preset.entries:
        spec = get_effect(entry.effect)
        for name, value in entry.params.items():
            param = spec.param_map.get(name)
            if param is None or param.type not in ("weights", "path") or not isinstance(value, str):
                continue
            ref = PurePosixPath(value.replace("\\", "/"))
            if value.startswith(("~", "/")) or Path(value).is_absolute() or ".." in ref.parts or ":" in value:
                raise CakfxError(
                    f"{archive}: {entry.label()}: {name} = {value!r} points outside the preset folder; "
                    "shared presets may only use the weights in the archive"
                )
            if param.type == "path":
                raise CakfxError(
                    f"{archive}: {entry.label()}: {name} = {value!r}: shared presets cannot install files "
                    "such as plugins or impulse responses"
                )


def install_preset(archive: str | Path, force: bool = False) -> dict:
    """Validate a shared preset zip and install it into ``$CAKFX_HOME``.

    Everything in the archive is treated as data from a stranger: member count and sizes
    are limited while extracting, weights are fully checked (kind, metadata, finite
    values, the shapes the effect expects), and the preset may refer to nothing outside
    the archive. Existing weights or presets of the same name, and names that would
    shadow bundled ones, are only replaced with ``force``.
    """
    from cakfx.presets import MAX_PRESET_BYTES, list_presets, parse_toml
    from cakfx.weights import MAX_WEIGHTS_BYTES, bundled_dir, check_weights

    archive = Path(archive)
    if not archive.is_file():
        raise CakfxError(f"archive not found: {archive}")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CakfxError(f"{archive}: not a zip archive ({describe_exception(exc)})") from None
    with zf, tempfile.TemporaryDirectory() as tmp:
        preset_member, weight_members = _check_members(zf, archive)
        staging = Path(tmp)
        (staging / WEIGHTS_FOLDER).mkdir()
        total = 0
        try:
            total += _extract(zf, preset_member, staging / preset_member, MAX_PRESET_BYTES, archive)
            for member in weight_members:
                total += _extract(zf, member, staging / member, MAX_WEIGHTS_BYTES, archive)
                if total > MAX_ARCHIVE_BYTES:
                    raise CakfxError(f"{archive}: archive contents larger than {MAX_ARCHIVE_BYTES} bytes")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
            raise CakfxError(f"{archive}: cannot extract ({describe_exception(exc)})") from None
        for member in weight_members:
            try:
                check_weights(staging / member)  # a real weights file, with metadata
            except CakfxError as exc:
                raise CakfxError(f"{archive}: {member}: {str(exc).split(': ', 1)[-1]}") from None
        raw = (staging / preset_member).read_bytes()
        data = parse_toml(raw, f"{archive}: {preset_member}")
        text = raw.decode("utf-8")
        target = user_presets_dir() / preset_member
        preset = parse_preset(data, target)
        for entry in preset.entries:  # unknown effects get the usual message below
            if entry.effect in effects():
                _check_portable(preset, archive)
                break
        resolved_entries(preset, weights_dirs=(staging / WEIGHTS_FOLDER,))  # validates, checks pins
        plan = []
        for member in weight_members:
            src, dst = staging / member, user_weights_dir() / PurePosixPath(member).name
            if (bundled_dir() / dst.name).exists() and not force:
                raise CakfxError(
                    f"{archive}: weights {dst.stem!r} would shadow the bundled weights of that name; "
                    "rename them or use --force"
                )
            if dst.exists() and sha256_file(dst) != sha256_file(src) and not force:
                raise CakfxError(
                    f"{archive}: weights {dst.stem!r} already installed with different content "
                    f"({dst}); use --force to replace"
                )
            plan.append((src, dst))
        known = list_presets()
        if target.stem in known and known[target.stem][1] == "bundled" and not force:
            raise CakfxError(
                f"{archive}: preset {target.stem!r} would shadow the bundled preset of that name; "
                "rename it or use --force"
            )
        if target.exists() and target.read_bytes() != raw and not force:
            raise CakfxError(f"{archive}: preset {target.stem!r} already installed at {target}; use --force")
        for src, dst in plan:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst.with_name(f".{dst.name}.tmp"))
            dst.with_name(f".{dst.name}.tmp").replace(dst)
        atomic_write_bytes(target, text.encode("utf-8"))
    return {"preset": target.stem, "path": str(target), "weights": [Path(m).stem for m in weight_members]}
