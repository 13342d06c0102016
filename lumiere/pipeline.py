"""LumierePipeline: text encoder -> base STUNet (whole clip) -> SSR with temporal MultiDiffusion -> uint8 video.

The facade over the model bundle (``bundle``: components, styles, config, load/save/push): requests
(``request``) go in through :meth:`LumierePipeline.generate`, which validates them against the model and
runs their task's program (``tasks``). The named methods (``text_to_video`` ...) build the request from
keyword arguments. The public contract is ``docs/api.md``.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from .bundle import ModelBundle
from .components import default_device, default_dtype, module_device
from .options import DEFAULT_SSR_OVERLAP, DEFAULT_STRENGTH
from .progress import Callback, counted
from .request import (Cinemagraph, ConditionalSample, ImageToVideo, Inpaint, Keyframes, Options, Request,
                      SuperResolve, TextToImage, TextToVideo, VideoToVideo, documented, keyframe_images)
from .super_resolution import low_res_projection
from .tasks import program

__all__ = ["LumierePipeline", "low_res_projection", "default_device", "default_dtype", "module_device"]

logger = logging.getLogger("lumiere")


class LumierePipeline(ModelBundle):
    """The Lumiere system: applications over lazily loaded components (contract: ``docs/api.md``).

    Build one with :meth:`from_pretrained` (a pipeline directory, Hub repo id, or the bundled model)
    or ``lumiere.build.build_pipeline`` (fresh weights). Calls hold no per-call state on the
    pipeline, so one object may serve many requests (one at a time: components are shared modules).
    """

    def generate(self, request: Request, *, generator: torch.Generator | None = None,
                 callback: Callback | None = None) -> np.ndarray:
        """Run one request (``lumiere.request``: ``TextToVideo``, ``ImageToVideo``, ``Inpaint``, ...).

        1. The request is checked against this model and its defaults filled (``request.resolve``).
        2. One line describing it (seed included, so it can be replayed) is logged to "lumiere" at INFO.
        3. Its task's program (``lumiere.tasks``) runs.

        ``generator`` (a CPU ``torch.Generator``, instead of the request's seed) and ``callback``
        (``callback(step, total)`` or ``callback(step, total, x0)``) are per call, not part of the request.
        Returns and raises as the named methods below.
        """
        run = program(request)
        settings = request.resolve(self.facts, generator=generator, callback=callback)
        count = getattr(getattr(request, "options", None), "num_videos_per_prompt", 1)
        inputs = {name: tuple(np.shape(value)) for name in ("image", "video", "mask", "condition")
                  if (value := getattr(request, name, None)) is not None and not isinstance(value, str)}
        if count > 1:
            inputs["num_videos"] = count
        logger.info(settings.describe(request.task, **inputs))
        if count == 1:
            return run(self, request, settings)
        # One after the other from the same random stream (video 0 is the one-video result); one progress
        # count over all of them.
        return np.stack([run(self, request, dataclasses.replace(settings, callback=counted(callback, index, count)))
                         for index in range(count)])

    # The named methods: one request each. Their Args / Returns / Raises come from the request's docstring
    # and the shared options (``request.documented``).
    @documented(TextToVideo)
    def text_to_video(self, prompt: str, *, reference_image=None, generator: torch.Generator | None = None,
                      callback: Callback | None = None, **options) -> np.ndarray:
        """Generate a whole clip from text with the base STUNet, then (optionally) super-resolve it."""
        request = TextToVideo(prompt, Options.of(options, "text_to_video"), reference_image)
        return self.generate(request, generator=generator, callback=callback)

    @documented(TextToImage)
    def text_to_image(self, prompt: str, *, generator: torch.Generator | None = None,
                      callback: Callback | None = None, **options) -> np.ndarray:
        """One image from the base's T2I U-Net alone (no temporal layers): the spatial model every video
        stage inflates, and what reference guidance draws frame 0 with. What it draws for a prompt
        bounds what the video model can draw (the evaluation's ``t2i_shape_accuracy``)."""
        request = TextToImage(prompt, Options.of(options, "text_to_image", TextToImage.unsupported))
        return self.generate(request, generator=generator, callback=callback)

    @documented(ImageToVideo)
    def image_to_video(self, image, prompt: str, *, generator: torch.Generator | None = None,
                       callback: Callback | None = None, **options) -> np.ndarray:
        """Animate an image: it becomes the first frame (C = image then blanks, M = 1 on frame 0)."""
        request = ImageToVideo(image, prompt, Options.of(options, "image_to_video", ImageToVideo.unsupported))
        return self.generate(request, generator=generator, callback=callback)

    @documented(Keyframes)
    def keyframes_to_video(self, first, last, prompt: str, *, indices: dict | None = None,
                           generator: torch.Generator | None = None, callback: Callback | None = None,
                           **options) -> np.ndarray:
        """A clip through given frames: ``first`` is frame 0, ``last`` the last frame, ``indices`` any others."""
        request = Keyframes(keyframe_images(first, last, indices), prompt,
                            Options.of(options, "keyframes_to_video", Keyframes.unsupported))
        return self.generate(request, generator=generator, callback=callback)

    @documented(Inpaint)
    def inpaint(self, video, mask, prompt: str, *, generator: torch.Generator | None = None,
                callback: Callback | None = None, **options) -> np.ndarray:
        """Fill the masked region of a video; outpainting is a mask over the border."""
        request = Inpaint(video, mask, prompt, Options.of(options, "inpaint", Inpaint.unsupported))
        return self.generate(request, generator=generator, callback=callback)

    @documented(Cinemagraph)
    def cinemagraph(self, image, mask, prompt: str, *, generator: torch.Generator | None = None,
                    callback: Callback | None = None, **options) -> np.ndarray:
        """Animate only the masked region of an image; everything else stays still."""
        request = Cinemagraph(image, mask, prompt, Options.of(options, "cinemagraph"))
        return self.generate(request, generator=generator, callback=callback)

    @documented(VideoToVideo)
    def video_to_video(self, video, prompt: str, *, strength: float = DEFAULT_STRENGTH,
                       generator: torch.Generator | None = None, callback: Callback | None = None,
                       **options) -> np.ndarray:
        """SDEdit: noise every frame of the input to the timestep set by ``strength``, then denoise."""
        request = VideoToVideo(video, prompt, strength, Options.of(options, "video_to_video", VideoToVideo.unsupported))
        return self.generate(request, generator=generator, callback=callback)

    @documented(ConditionalSample)
    def sample_conditional(self, condition: torch.Tensor, keep: torch.Tensor, prompt: str, *,
                           paste_known: bool = True, generator: torch.Generator | None = None,
                           callback: Callback | None = None, **options) -> np.ndarray:
        """Sample the conditional model on a (C, M) pair built by the caller (``lumiere.conditioning``).
        The applications above are this with their own (C, M); evaluation calls it with
        ``paste_known=False`` to measure what the model itself produced."""
        request = ConditionalSample(condition, keep, prompt, paste_known,
                                    Options.of(options, "sample_conditional", ConditionalSample.unsupported))
        return self.generate(request, generator=generator, callback=callback)

    def super_resolve(self, video, prompt: str, *, window: int | None = None, overlap: int = DEFAULT_SSR_OVERLAP,
                      multidiffusion: bool = True, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, negative_prompt: str | None = None,
                      seed: int | None = None, generator: torch.Generator | None = None,
                      callback: Callback | None = None) -> np.ndarray:
        """Spatial super-resolution of a base-resolution video with temporal MultiDiffusion (App. C).

        Args:
            video: uint8 (T, H, W, 3), any T; frames are resized + centre-cropped to the base size.
            prompt: the text the SSR model is conditioned on.
            window: frames per window (default ``ssr.window``); overlap: frames shared by neighbours,
                capped at window - 1.
            multidiffusion: False runs the same windows without overlap (the paper's ablation).
            num_inference_steps / guidance_scale: default ``ssr.num_inference_steps`` / ``ssr.guidance_scale``;
                the last ``ssr.strength`` of the steps run (the callback counts those).
            negative_prompt: default "".
            seed / generator / callback: as for ``text_to_video``.

        Returns:
            uint8 (T, H x ssr_scale, W x ssr_scale, 3).

        Raises:
            InputError: the pipeline has no SSR model, or an invalid argument.
        """
        request = SuperResolve(video, prompt, window, overlap, multidiffusion, num_inference_steps, guidance_scale,
                               negative_prompt, seed)
        return self.generate(request, generator=generator, callback=callback)
