"""The node protocol: called exactly like a pedalboard plugin."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np

from cakfx.errors import CakfxError, CakfxTypeError
from cakfx.params import Param


def to_channels_first(audio: np.ndarray, channels: int | None = None) -> tuple[np.ndarray, str]:
    """Return ``(channels, samples)`` audio and the layout it came in.

    Layouts: ``"mono"`` (1-D), ``"channels_first"`` or ``"channels_last"``.
    As in pedalboard, a 2-D array's smaller dimension is the channel axis
    (a square array is taken as channels-first), unless ``channels`` (the
    channel count of a running stream) says otherwise: a stereo stream's
    one-sample block ``(2, 1)`` stays stereo.
    """
    audio = np.asarray(audio)
    if audio.dtype not in (np.float32, np.float64):
        raise CakfxError(f"audio must be float32 or float64, got {audio.dtype}")
    if audio.ndim == 1:
        return audio[None, :], "mono"
    if audio.ndim != 2:
        raise CakfxError(f"audio must be 1-D or 2-D, got shape {audio.shape}")
    if channels is not None and channels in audio.shape:
        if audio.shape[0] == channels:
            return audio, "channels_first"
        return audio.T, "channels_last"
    if audio.shape[0] <= audio.shape[1]:
        return audio, "channels_first"
    return audio.T, "channels_last"


def from_channels_first(audio: np.ndarray, layout: str, dtype) -> np.ndarray:
    """Undo ``to_channels_first``: the caller's layout and dtype, contiguous."""
    if layout == "mono":
        audio = audio[0]
    elif layout == "channels_last":
        audio = audio.T
    return np.ascontiguousarray(audio, dtype=dtype)


class Setting:
    """A node's parameter as a validated property: ``node.amount = 0.7`` checks the value against
    its ``Param`` (type, range, choices) at assignment, like a pedalboard plugin's setter.

    A wrong type raises ``CakfxTypeError`` (a ``TypeError``), a value out of range ``CakfxError``
    (a ``ValueError``); the message names the effect and the parameter.
    """

    def __init__(self, param: Param) -> None:
        self.param = param
        self.__doc__ = param.help

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, node: Any, owner: type | None = None) -> Any:
        if node is None:
            return self
        return node.__dict__.get(self.param.name, self.param.default)

    def __set__(self, node: Any, value: Any) -> None:
        try:
            value = self.param.check(value)
        except CakfxTypeError as exc:
            raise CakfxTypeError(f"{node.name}: {self.param.name}: {exc}") from None
        except ValueError as exc:
            raise CakfxError(f"{node.name}: {self.param.name}: {exc}") from None
        node.__dict__[self.param.name] = value


def show_value(value: Any) -> str:
    """A setting as reprs show it: numbers short (``0.7``, ``-1``), everything else as ``repr``."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


class EffectNode:
    """Base class of cakfx effects, called exactly like a pedalboard plugin.

    ``node(audio, sample_rate, buffer_size=8192, reset=True)`` takes float32 or
    float64 audio shaped ``(channels, samples)``, ``(samples, channels)`` or
    ``(samples,)`` and returns the same shape, layout and dtype.

    **Offline** (``reset=True``, the default): the node calls ``reset()`` and then
    ``process_channels(audio, sample_rate)`` on the whole signal; the output is
    aligned with the input (any latency is compensated inside).

    **Streaming** (``reset=False``): the node calls ``stream_channels(block,
    sample_rate)``, which continues from the previous call. Each output block
    has its input block's length, and the concatenated output equals the offline
    output delayed by ``latency_samples(sample_rate)`` samples: the first
    ``latency`` samples of a stream are zeros (exactly zeros, so that a stateful
    stage after it sees the delayed offline signal, nothing else). Feed that many samples of
    silence after the end to flush the tail. A change of sample rate or channel
    count between streaming calls starts a new stream (``reset()`` first), as in
    pedalboard. The first block of a stream fixes its channel count (its smaller
    dimension, as for any call), so later blocks as short as one sample keep the
    layout. Example, with a node of one sample of latency::

        >>> import numpy as np, cakfx
        >>> class Late(cakfx.EffectNode):
        ...     name = "example.late"
        ...     def __init__(self):
        ...         self.last = None
        ...     def process_channels(self, audio, sample_rate):
        ...         return audio.copy()  # offline: aligned, latency compensated
        ...     def stream_channels(self, audio, sample_rate):
        ...         prev = np.zeros_like(audio[:, :1]) if self.last is None else self.last
        ...         self.last = audio[:, -1:].copy()
        ...         return np.concatenate([prev, audio[:, :-1]], axis=1)
        ...     def latency_samples(self, sample_rate):
        ...         return 1
        ...     def reset(self):
        ...         self.last = None
        >>> node, x = Late(), np.arange(1, 8, dtype=np.float32)
        >>> parts = [node(x[i:i + 3], 44100, reset=False) for i in range(0, 7, 3)]
        >>> np.concatenate(parts)  # the one-shot output, delayed by 1 sample
        array([0., 1., 2., 3., 4., 5., 6.], dtype=float32)
        >>> node.reported_latency_samples
        1

    **Level measuring** (``needs_measure``, ``begin_measure``, ``end_measure``,
    ``forget_measure``): a node whose level stage needs the whole signal (loudness
    matching) can be shown the whole stream once before the real render, so that
    the streamed render equals the offline one; ``cakfx.streaming.render_stream``
    drives this. Without a measurement a streaming node uses its live running
    estimate.

    Subclasses implement ``process_channels`` (and must keep its shape); nodes
    with state or latency also implement ``stream_channels``,
    ``latency_samples`` and ``reset``. A stateless node with no latency needs
    only ``process_channels``: by default ``stream_channels`` calls it.

    **Parameters** (``params``, a sequence of ``cakfx.Param``): each becomes a validated
    property of the node (``Setting``), is listed by ``node.parameters`` and shown in the
    repr, as pedalboard's plugins do::

        >>> import cakfx
        >>> class Gain(cakfx.EffectNode):
        ...     name = "example.gain"
        ...     params = (cakfx.Param("gain", "float", 1.0, "linear gain", 0.0, 4.0),)
        ...     def __init__(self, gain=1.0):
        ...         self.gain = gain
        ...     def process_channels(self, audio, sample_rate):
        ...         return audio * self.gain
        >>> node = Gain(0.5)
        >>> node
        <cakfx.Gain gain=0.5>
        >>> node.gain = 5
        Traceback (most recent call last):
        ...
        cakfx.errors.CakfxError: example.gain: gain: 5.0 is above the maximum 4.0 (range 0 … 4)
        >>> list(node.parameters)
        ['gain']
    """

    #: registered effect name, e.g. ``"cak.texture"``
    name = "effect"
    #: the node's parameters, declared once: validated properties, ``parameters`` and the repr
    params: ClassVar[tuple[Param, ...]] = ()
    # the (sample_rate, channels) of the current stream; None before the first call
    _stream_format: tuple[float, int] | None = None
    _last_sample_rate: float | None = None

    def process(
        self,
        input_array: np.ndarray,
        sample_rate: float,
        buffer_size: int = 8192,
        reset: bool = True,
    ) -> np.ndarray:
        """Process ``input_array``; see the class docstring for ``reset``.

        ``buffer_size`` is the block size native pedalboard stages of a chain use;
        cakfx nodes process whatever they are given in one go.
        """
        hint = None if reset or self._stream_format is None else self._stream_format[1]
        audio, layout = to_channels_first(input_array, hint)
        if not sample_rate > 0:
            raise CakfxError(f"sample rate must be positive, got {sample_rate}")
        if int(buffer_size) < 1:
            raise CakfxError(f"buffer size must be at least 1, got {buffer_size}")
        out = self.process_block(audio, float(sample_rate), int(buffer_size), bool(reset))
        return from_channels_first(out, layout, input_array.dtype)

    def process_block(
        self, audio: np.ndarray, sample_rate: float, buffer_size: int, reset: bool
    ) -> np.ndarray:
        """``process`` on ``(channels, samples)`` audio, no layout guessing (chains call this)."""
        self._last_sample_rate = sample_rate
        stream_format = (sample_rate, audio.shape[0])
        if reset:
            self.reset()
            self._stream_format = None
        elif self._stream_format != stream_format:
            self.reset()  # a new stream: pedalboard resets on a format change too
            self._stream_format = stream_format
        if audio.shape[1] == 0:
            return audio
        if reset:
            out = self.process_channels(audio, sample_rate)
        else:
            out = self.stream_channels(audio, sample_rate)
        if out.shape != audio.shape:  # a contract breach inside the effect, not user error
            raise RuntimeError(f"{self.name} changed the shape {audio.shape} -> {out.shape}")
        return out

    __call__ = process

    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """Offline: the whole ``(channels, samples)`` signal, output aligned and the same shape."""
        raise NotImplementedError

    def stream_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        """Streaming: one ``(channels, n)`` block, continuing the previous call.

        Returns ``n`` samples: the offline output delayed by
        ``latency_samples(sample_rate)``. The default suits stateless nodes
        without latency and calls ``process_channels``.
        """
        return self.process_channels(audio, sample_rate)

    def latency_samples(self, sample_rate: float) -> int:
        """Delay of the streamed output behind the offline output, in samples (default 0)."""
        return 0

    @property
    def reported_latency_samples(self) -> int:
        """``latency_samples`` at the last sample rate this node processed (0 before any call).

        Read-only, like pedalboard's attribute of the same name.
        """
        if self._last_sample_rate is None:
            return 0
        return int(self.latency_samples(self._last_sample_rate))

    def reset(self) -> None:
        """Clear streaming state; a fixed level measurement, or one under way, is kept.

        Stateless nodes need nothing.
        """

    @property
    def needs_measure(self) -> bool:
        """True when a streamed render needs a measuring pass over the whole signal first."""
        return False

    def begin_measure(self) -> None:
        """Forget any previous measurement and start accumulating while blocks stream."""

    def end_measure(self) -> None:
        """Fix the level (gain, whether the limiter acts) from what was accumulated."""

    def forget_measure(self) -> None:
        """Drop a fixed measurement: streaming goes back to the live running estimate."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params" in cls.__dict__:
            cls._install_settings()

    @classmethod
    def _install_settings(cls) -> None:
        """Make every declared parameter a validated property of ``cls``."""
        for param in cls.params:
            # a property the class defines itself (e.g. a read-only ``weights``) stays as it is
            if not isinstance(inspect.getattr_static(cls, param.name, None), property):
                setting = Setting(param)
                setting.__set_name__(cls, param.name)
                setattr(cls, param.name, setting)

    @property
    def parameters(self) -> dict[str, Param]:
        """The node's parameters by name: type, default, range or choices, help (read-only)."""
        return {p.name: p for p in self.params}

    def __repr__(self) -> str:
        if not self.params:
            return f"<cakfx {self.name}>"
        settings = " ".join(f"{p.name}={show_value(getattr(self, p.name))}" for p in self.params)
        device = getattr(self, "device", None)
        where = f" device={str(device)!r}" if device is not None else ""
        return f"<cakfx.{type(self).__name__} {settings}{where}>"
