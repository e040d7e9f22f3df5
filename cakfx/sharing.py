"""Sharing presets: a zip holding the preset and every weights file it uses.

Archive layout: ``NAME.toml`` at the top and ``weights/W.safetensors`` for
each weights file. In the archived preset, weights are referred to by name and
pinned by sha256, so the receiver gets exactly the weights the author used.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import tomli_w

from cakfx.errors import CakfxError
from cakfx.paths import user_presets_dir, user_weights_dir
from cakfx.presets import parse_preset, read_preset, resolved_entries, tomllib
from cakfx.registry import get_effect
from cakfx.weights import load_weights, sha256_file

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
                wname = load_weights(path).name
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


def _check_members(zf: zipfile.ZipFile, archive: Path) -> tuple[str, list[str]]:
    preset_name, weights = None, []
    for info in zf.infolist():
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


def install_preset(archive: str | Path, force: bool = False) -> dict:
    """Validate a shared preset zip and install it into ``$CAKFX_HOME``.

    Existing weights of the same name but different content, or an existing
    preset of the same name, are only replaced with ``force``.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise CakfxError(f"archive not found: {archive}")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise CakfxError(f"{archive}: not a zip archive") from None
    with zf, tempfile.TemporaryDirectory() as tmp:
        preset_member, weight_members = _check_members(zf, archive)
        staging = Path(tmp)
        (staging / WEIGHTS_FOLDER).mkdir()
        for member in [preset_member, *weight_members]:
            with zf.open(member) as src, open(staging / member, "wb") as dst:
                shutil.copyfileobj(src, dst)
        for member in weight_members:
            load_weights(staging / member)  # a real weights file, with metadata
        text = (staging / preset_member).read_text(encoding="utf-8")
        try:
            data = tomllib.load(io.BytesIO(text.encode()))
        except tomllib.TOMLDecodeError as exc:
            raise CakfxError(f"{archive}: {preset_member}: invalid TOML ({exc})") from None
        target = user_presets_dir() / preset_member
        preset = parse_preset(data, target)
        resolved_entries(preset, weights_dirs=(staging / WEIGHTS_FOLDER,))  # validates, checks pins
        plan = []
        for member in weight_members:
            src, dst = staging / member, user_weights_dir() / PurePosixPath(member).name
            if dst.exists() and sha256_file(dst) != sha256_file(src) and not force:
                raise CakfxError(
                    f"{archive}: weights {dst.stem!r} already installed with different content "
                    f"({dst}); use --force to replace"
                )
            plan.append((src, dst))
        if target.exists() and target.read_text(encoding="utf-8") != text and not force:
            raise CakfxError(f"{archive}: preset {target.stem!r} already installed at {target}; use --force")
        for src, dst in plan:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst.with_name(f".{dst.name}.tmp"))
            dst.with_name(f".{dst.name}.tmp").replace(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return {"preset": target.stem, "path": str(target), "weights": [Path(m).stem for m in weight_members]}
