"""Training, as a library: the registered trainers and ``train(...)``.

Trainer plugins implement ``register_trainers(register)`` and call ``register(spec)`` with a
``cakfx.trainers.options.TrainerSpec`` (or a ``Trainer`` subclass). Listing trainers imports no
torch; a run imports its recipe.

>>> sorted(trainers())
['grain', 'texture']
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

from cakfx.errors import CakfxError
from cakfx.trainers.options import Options, TrainerSpec

_trainers: dict[str, TrainerSpec] | None = None


def trainers() -> dict[str, TrainerSpec]:
    """Every registered trainer by name (plugins are loaded on first use)."""
    global _trainers
    if _trainers is None:
        from cakfx.plugin_manager import load_plugins, pm, report_hook_failure

        load_plugins()
        found: dict[str, TrainerSpec] = {}
        for impl in pm.hook.register_trainers.get_hookimpls():

            def register(spec: Any, _plugin: str = impl.plugin_name) -> None:
                if isinstance(spec, type):  # a Trainer subclass registered directly
                    summary = (spec.__doc__ or "").strip().splitlines()[:1]
                    target = f"{spec.__module__}:{spec.__qualname__}"
                    spec = TrainerSpec(spec.name, spec.kind, target, summary=" ".join(summary))
                found[spec.name] = TrainerSpec(**{**spec.__dict__, "plugin": spec.plugin or _plugin})

            try:  # a plugin raising inside its hook is reported by name and skipped
                impl.function(register=register)
            except Exception as exc:
                report_hook_failure(impl.plugin_name, "register_trainers", exc)
        _trainers = dict(sorted(found.items()))
    return _trainers


def train(trainer: str, samples: str | os.PathLike, name: str, echo=None, **options: Any):
    """Train the model ``trainer`` (``"texture"`` or ``"grain"``) on the audio under ``samples``.

    Writes the weights ``name`` and a ready preset of the same name into ``$CAKFX_HOME``, exactly
    as ``cakfx train TRAINER SAMPLES -n NAME`` does; ``options`` are that command's options
    (``profile="fast"``, ``epochs=None``, ``batch_size=None``, ``device=None``, ``seed=42``,
    ``resume=False``, ``checkpoint_every=5``, ``out=None``, ``exclude=()``, ``threads=None``,
    ``quiet=False``). ``echo`` receives one-line progress notes. Returns a
    ``cakfx.trainers.loop.TrainingResult`` (paths of the weights, preset and history).

    Example::

        import cakfx
        result = cakfx.train("texture", "~/samples/my-drums", "my-texture", epochs=5, quiet=True)
        chain = cakfx.load_preset("my-texture")
    """
    specs = trainers()
    if trainer not in specs:
        raise CakfxError(f"unknown trainer {trainer!r} (choose from {', '.join(specs)})")
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CakfxError(
            f"unknown training option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if "exclude" in options:
        options["exclude"] = tuple(options["exclude"])
    from cakfx.trainers.loop import run_training

    run_options = Options(samples=os.fspath(samples), name=name, **options)
    return run_training(specs[trainer].load(), run_options, echo or (lambda text: None))
