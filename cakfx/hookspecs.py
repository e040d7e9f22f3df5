"""The hooks a cakfx plugin can implement."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("cakfx")
hookimpl = HookimplMarker("cakfx")


@hookspec
def register_effects(register):
    """Register effects: ``register(name, factory, params, **info)``.

    ``factory(**params)`` returns a node (an ``EffectNode`` or a
    ``pedalboard.Plugin``); ``params`` is a list of ``cakfx.params.Param``.
    ``info`` may carry ``summary``, ``description``, ``load_model`` and
    ``import_checkpoint`` (see ``cakfx.registry.EffectSpec``).
    """


@hookspec
def register_trainers(register):
    """Register trainers: ``register(spec)`` with a ``cakfx.trainers.options.TrainerSpec``
    (or a ``cakfx.trainers.base.Trainer`` subclass); ``cakfx train NAME`` and
    ``cakfx.train(NAME, ...)`` run it."""


@hookspec
def register_commands(cli):
    """Add extra click commands to the ``cakfx`` command group."""
