"""One program per task: each module's ``run(pipe, request, settings)`` turns a resolved request into a video,
top to bottom in numbered steps (as diffusers' pipelines do). ``common`` holds the steps they share:
base-model sampling, the conditional model with known pixels, and the SSR finish.

``LumierePipeline.generate`` resolves a request (``lumiere.request``) and calls ``program(request)``.
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable

from .. import request as requests

# The module (in this package) of each request type's program.
PROGRAMS = {
    requests.TextToVideo: "text_to_video",
    requests.TextToImage: "text_to_image",
    requests.ImageToVideo: "image_to_video",
    requests.Keyframes: "keyframes",
    requests.Inpaint: "inpaint",
    requests.Cinemagraph: "cinemagraph",
    requests.VideoToVideo: "video_to_video",
    requests.ConditionalSample: "sample_conditional",
    requests.SuperResolve: "super_resolve",
}


def program(request: requests.Request) -> Callable:
    """The ``run`` function of ``request``'s task (imported on first use).

    Raises:
        InputTypeError: not a request type (``PROGRAMS``).
    """
    from ..errors import InputTypeError

    name = PROGRAMS.get(type(request))
    if name is None:
        known = ", ".join(cls.__name__ for cls in PROGRAMS)
        raise InputTypeError(f"not a generation request: {type(request).__name__}; requests: {known}")
    return import_module(f"{__name__}.{name}").run
