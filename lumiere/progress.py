"""Progress of one generation call: a step counter over every denoising stage, forwarded to the caller.

The total is fixed up front from the call's step plan (``request.GenerationSettings.step_plan``), so a UI
can show one bar for the whole request. Importing this module is cheap (no torch).
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

Callback = Callable[..., None]  # callback(step, total), or callback(step, total, x0)


class Progress:
    """Counts denoising steps across every stage of one call and forwards them to a user callback.

    The total is fixed up front from the call's step plan (e.g. base + SSR steps), so a UI can show
    one bar for the whole request. An exception raised by the callback propagates and cancels the
    generation.

    A callback with a third positional parameter, ``callback(step, total, x0)``, also gets the step's
    clean-sample estimate (for a live preview): the (1, C, ...) tensor the sampler currently predicts the
    finished sample to be, in the space that stage denoises (pixels in [-1, 1], or latents before the
    VAE: ``LumierePipeline.decode_frames``), read-only, computed only for such callbacks; None when the
    step has none. Every other callback is called as ``callback(step, total)``, as always.
    """

    def __init__(self, total: int, callback: Callback | None = None, bar: bool | dict = False,
                 description: str = "denoising"):
        """``bar``: True shows a tqdm bar, a dict one with those tqdm options over the defaults
        (``LumierePipeline.set_progress_bar_config``; ``{"disable": True}`` shows none)."""
        self.total = int(total)
        self.done = 0
        self.callback = callback
        self.wants_estimate = callback is not None and _takes_third_argument(callback)
        self._bar = None
        if bar is True or isinstance(bar, dict):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, **{"desc": description, "leave": False, **(bar if bar is not True else {})})

    def step(self, x0: torch.Tensor | None = None) -> None:
        """One denoising step done; ``x0``: its clean-sample estimate (passed on only if the callback wants it)."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self.callback is not None:
            if self.wants_estimate:
                self.callback(self.done, self.total, x0)
            else:
                self.callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _takes_third_argument(callback) -> bool:
    """Whether ``callback`` names a third positional parameter (``*args`` alone does not count: such a
    callback may forward to a two-argument one)."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def counted(callback: Callback | None, index: int, count: int) -> Callback | None:
    """``callback`` for run ``index`` of ``count`` equal runs: its (step, total) counted over all of them
    (run i's step k of n is step i n + k of count n), the x0 estimate passed on if it takes one."""
    if callback is None:
        return None
    if _takes_third_argument(callback):
        def with_estimate(step: int, total: int, x0=None) -> None:
            callback(index * total + step, count * total, x0)
        return with_estimate

    def plain(step: int, total: int) -> None:
        callback(index * total + step, count * total)
    return plain
