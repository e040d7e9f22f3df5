"""The neural-effect base: what every learned effect (``cak.texture``, ``cak.grain``, a plugin's
own) declares once, and the weights handling they share.

A plugin declares one ``NeuralEffect``: its kind, default weights, parameters, node class and
model loader. From that single declaration come the registered effect (``register``), the
``weights`` parameter, validation and defaults (``cakfx.registry.check_params``), the node's
validated properties and repr (``NeuralNode``), weights resolution with a cache, and the hint
printed when the default weights are missing. Importing this module imports no torch: the
node class is named by ``"module:Class"`` and imported when the first node is built.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cakfx.errors import CakfxError
from cakfx.node import EffectNode
from cakfx.params import Param

if TYPE_CHECKING:
    from cakfx.weights import WeightsFile

#: loaded weights kept per process (by path, size and mtime): a batch's workers and a chain
#: with two nodes of one model read the file once
CACHE_SIZE = 8


class NeuralEffect:
    """One learned effect, declared once.

    ``params`` are the effect's settings without the weights; the ``weights`` parameter
    (default ``default_weights``) is added after the first one, the effect's main control.
    ``node`` is the ``NeuralNode`` subclass or its ``"module:Class"`` name (imported on the
    first build, so registering never imports torch). ``load_model(weights_file, device)``
    returns the torch module in eval mode on ``device``. ``missing_hint`` says how to get the
    default weights when they are not installed. ``import_checkpoint``, ``expected_shapes``
    and ``analyse`` are passed to the registry as they are (see ``cakfx.registry.EffectSpec``).

    A plugin registers it from its ``register_effects`` hook::

        EFFECT = NeuralEffect("acme.tilt", default_weights="acme-tilt-default", params=[...],
                              node="acme_tilt.node:TiltNode", load_model=load_model)

        @cakfx.hookimpl
        def register_effects(register):
            EFFECT.register(register)
    """

    def __init__(
        self,
        kind: str,
        *,
        default_weights: str,
        params: Sequence[Param],
        node: str | type[NeuralNode],
        load_model: Callable[[WeightsFile, Any], Any],
        summary: str = "",
        description: str = "",
        missing_hint: str = "",
        weights_help: str = "",
        import_checkpoint: Callable[..., Any] | None = None,
        expected_shapes: Callable[[dict], dict[str, tuple[int, ...]]] | None = None,
        analyse: Callable[..., Any] | None = None,
    ) -> None:
        if not params:
            raise ValueError(f"{kind}: a neural effect needs at least one parameter (its control)")
        self.kind = kind
        self.default_weights = default_weights
        help_text = weights_help or f"weights name or .safetensors path (kind {kind})"
        weights = Param("weights", "weights", default_weights, help_text)
        self.params: tuple[Param, ...] = (params[0], weights, *params[1:])
        self.load_model = load_model
        self.summary, self.description = summary, description
        self.missing_hint = missing_hint
        self.import_checkpoint = import_checkpoint
        self.expected_shapes, self.analyse = expected_shapes, analyse
        self._node = node
        if not isinstance(node, str) and node.effect is not self:
            node.bind(self)
        self._cache: OrderedDict[tuple, WeightsFile] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<cakfx.NeuralEffect {self.kind} weights={self.default_weights!r}>"

    @property
    def node_class(self) -> type[NeuralNode]:
        """The node class (imported now if it was named as ``"module:Class"``)."""
        if isinstance(self._node, str):
            module, _, name = self._node.partition(":")
            self._node = getattr(importlib.import_module(module), name)
            if self._node.effect is not self:  # a node class that does not name its effect itself
                self._node.bind(self)
        return self._node

    def register(self, register: Callable[..., Any]) -> None:
        """Register the effect through a ``register_effects`` hook's ``register``."""
        register(
            self.kind,
            self.create,
            self.params,
            summary=self.summary,
            description=self.description,
            load_model=self.load_model,
            import_checkpoint=self.import_checkpoint,
            takes_device=True,
            analyse=self.analyse,
            expected_shapes=self.expected_shapes,
        )

    def load_weights(self, ref: str | Path) -> WeightsFile:
        """The weights ``ref`` names (a name or a path), checked to be of this kind; cached.

        Missing default weights say how to get them (``missing_hint``).
        """
        from cakfx.weights import load_weights, resolve_weights

        try:
            path = Path(resolve_weights(ref))
        except CakfxError as exc:
            if str(ref) != self.default_weights or not self.missing_hint:
                raise
            raise CakfxError(f"{exc}; {self.missing_hint}") from None
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:  # batch workers may build chains on threads
            wf = self._cache.get(key)
            if wf is not None:
                self._cache.move_to_end(key)
                return wf
        wf = load_weights(path, expect_kind=self.kind)
        with self._lock:
            self._cache[key] = wf
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return wf

    def create(self, weights: str | Path | None = None, device: Any = None, **settings: Any) -> NeuralNode:
        """Build a node: load ``weights`` (default ``default_weights``), the model on ``device``,
        and the node with ``settings`` (each validated by the node's properties).

        ``cakfx.create_effect(kind, ...)`` validates everything first and calls this.
        """
        from cakfx.device import resolve_device

        wf = self.load_weights(self.default_weights if weights is None else weights)
        device = resolve_device(device)
        model = self.load_model(wf, device)
        try:
            node = self.node_class.from_weights(wf, model, device, **settings)
        except CakfxError as exc:
            raise CakfxError(f"{wf.path}: {exc}") from None
        node._weights = wf.name
        return node


class NeuralNode(EffectNode):
    """Base of a learned effect's node: its parameters come from its ``NeuralEffect``.

    The node's ``name`` and ``params`` (validated properties, the repr, ``parameters``) derive
    from that one declaration: a subclass names it (``effect = EFFECT``), or the effect binds
    the class it is given. ``weights`` is read-only: the name of the weights the node was
    built from (``None`` for a model handed in directly). ``from_weights`` builds a node from
    loaded weights; override it when the node needs more than the model (``TextureNode``
    takes the weights' normalisation stats).

    >>> import cakfx
    >>> node = cakfx.create_effect("cak.texture", amount=0.7, device="cpu")
    >>> node
    <cakfx.TextureNode amount=0.7 weights='cak-texture-default' level='match' ceiling_db=-1 device='cpu'>
    >>> node.amount = "loud"
    Traceback (most recent call last):
    ...
    cakfx.errors.CakfxTypeError: cak.texture: amount: expected a number, got str 'loud'
    >>> node.parameters["amount"].max
    2.0
    """

    effect: ClassVar[NeuralEffect | None] = None
    _weights: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("effect") is not None:
            cls.bind(cls.effect)

    @classmethod
    def bind(cls, effect: NeuralEffect) -> None:
        """Take ``name`` and the parameters (as validated properties) from ``effect``."""
        cls.effect, cls.name, cls.params = effect, effect.kind, effect.params
        cls._install_settings()

    @property
    def weights(self) -> str | None:
        """The weights this node was built from (fixed: build another node for other weights)."""
        return self._weights

    @weights.setter
    def weights(self, value: Any) -> None:
        raise AttributeError(
            f"{self.name}: weights are fixed when a node is built; "
            f"cakfx.create_effect({self.name!r}, weights=...) builds one with other weights"
        )

    @classmethod
    def from_weights(cls, weights_file: WeightsFile, model: Any, device: Any, **settings: Any) -> NeuralNode:
        """The node for ``model`` (loaded from ``weights_file``) on ``device`` with ``settings``."""
        return cls(model, device=device, **settings)


__all__ = ["NeuralEffect", "NeuralNode"]
