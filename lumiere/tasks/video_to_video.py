"""Video-to-video (SDEdit, Meng et al., 2022): every frame of the input noised to the timestep ``strength``
sets, then denoised by the base model toward the prompt."""
from __future__ import annotations

import numpy as np

from ..preprocessing import video_tensor
from ..request import GenerationSettings, VideoToVideo
from ..sampling import sdedit_steps
from .common import finish, require, sample_video, with_style


def run(pipe, request: VideoToVideo, settings: GenerationSettings) -> np.ndarray:
    # 1. The footage at base resolution, and how many of the steps the strength runs.
    require(pipe, "base")
    _, height, width = pipe.base_resolution
    source = video_tensor(request.video, settings.num_frames, height, width)
    steps = sdedit_steps(settings.num_inference_steps, request.strength)
    with settings.progress(settings.step_plan(base_steps=steps), pipe.progress_bar) as progress:
        if steps == 0 and pipe.is_latent:  # strength 0: the input itself, not its VAE round trip
            video = source[None]
        else:
            # 2. Encoded (latent models), noised to SDEdit's start, denoised with the request's style.
            init = pipe.encode_frames(source[None])[0]
            with with_style(pipe, pipe.base, settings):
                video = pipe.decode_frames(sample_video(pipe, pipe.base, settings, progress, init_video=init,
                                                        strength=request.strength))
        # 3. SSR and uint8.
        return finish(pipe, video, settings, progress)
