"""The node protocol: called exactly like a pedalboard plugin."""

from __future__ import annotations

import numpy as np

from cakfx.errors import CakfxError


def to_channels_first(audio: np.ndarray) -> tuple[np.ndarray, str]:
    """Return ``(channels, samples)`` audio and the layout it came in.

    Layouts: ``"mono"`` (1-D), ``"channels_first"`` or ``"channels_last"``.
    As in pedalboard, a 2-D array's smaller dimension is the channel axis
    (a square array is taken as channels-first).
    """
    audio = np.asarray(audio)
    if audio.dtype not in (np.float32, np.float64):
        raise CakfxError(f"audio must be float32 or float64, got {audio.dtype}")
    if audio.ndim == 1:
        return audio[None, :], "mono"
    if audio.ndim != 2:
        raise CakfxError(f"audio must be 1-D or 2-D, got shape {audio.shape}")
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


class EffectNode:
    """Base class of cakfx effects.

    ``node(audio, sample_rate, buffer_size=8192, reset=True)`` takes float32 or
    float64 audio shaped ``(channels, samples)``, ``(samples, channels)`` or
    ``(samples,)`` and returns the same shape, layout and dtype. Subclasses
    implement ``process_channels(audio, sample_rate)`` on a ``(channels,
    samples)`` array and must keep its shape.
    """

    #: registered effect name, e.g. ``"cak.texture"``
    name = "effect"

    def process(
        self,
        input_array: np.ndarray,
        sample_rate: float,
        buffer_size: int = 8192,
        reset: bool = True,
    ) -> np.ndarray:
        audio, layout = to_channels_first(input_array)
        if sample_rate <= 0:
            raise CakfxError(f"sample rate must be positive, got {sample_rate}")
        if reset:
            self.reset()
        if audio.shape[1] == 0:
            return from_channels_first(audio, layout, input_array.dtype)
        out = self.process_channels(audio, float(sample_rate))
        if out.shape != audio.shape:  # a contract breach inside the effect, not user error
            raise RuntimeError(f"{self.name} changed the shape {audio.shape} -> {out.shape}")
        return from_channels_first(out, layout, input_array.dtype)

    __call__ = process

    def process_channels(self, audio: np.ndarray, sample_rate: float) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        """Clear internal state; stateless effects need nothing."""

    def __repr__(self) -> str:
        return f"<cakfx {self.name}>"
