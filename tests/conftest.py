"""Shared fixtures: a tiny random pipeline (seconds to build) saved once per test session."""
from __future__ import annotations

import os

# pytest-xdist (the default run, ``-n auto`` in pyproject.toml) runs one test process per core: each worker
# then gets its share of the CPUs, not all of them, so the workers do not oversubscribe the machine. Set
# before lumiere (imported next) reads it; a user's own LUMIERE_THREADS / OMP_NUM_THREADS still wins.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "LUMIERE_THREADS" not in os.environ:
    os.environ["LUMIERE_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import lumiere.threads  # noqa: E402  first: its OpenMP defaults must be in the environment before torch loads

lumiere.threads.configure()  # thread count and wait policy for this process and its subprocesses

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny import TINY_CONFIG, TINY_WORDS  # noqa: E402



def make_tiny_pipeline(seed: int = 0):
    """Random weights, perturbed so that temporal layers are not exact no-ops (tests see real mixing)."""
    from lumiere.build import build_pipeline

    torch.manual_seed(seed)  # test-only: the library itself never touches the global RNG
    pipe = build_pipeline(TINY_CONFIG, words=TINY_WORDS)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in pipe.component_names:
            if name == "text_encoder":
                continue
            for param in pipe.get_component(name).temporal_parameters():
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
    pipe.add_style("line drawing", {k: v + 0.05 * torch.randn(v.shape, generator=generator)
                                    for k, v in pipe.base.t2i.state_dict().items()})
    return pipe


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_pipeline")
    make_tiny_pipeline().save_pretrained(directory)
    return directory


@pytest.fixture()
def tiny_pipe(tiny_pipeline_dir):
    from lumiere import LumierePipeline

    return LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu")


def bundled_model_available() -> bool:
    """The bundled model is in assets/ (LUMIERE_TEST_TINY=1 hides it: its tests then skip or use the tiny one)."""
    import os

    from lumiere.hub import BUNDLED_MODEL_DIR

    return (BUNDLED_MODEL_DIR / "model_index.json").is_file() and os.environ.get("LUMIERE_TEST_TINY") != "1"


# The markers of a test module whose app serves the bundled model: ``bundled``, and ``browser`` (its pre-rendered
# examples and README screenshots are the bundled model's). Every other app test serves the tiny random pipeline.
BUNDLED_APP_MARKERS = ("bundled", "browser")


@pytest.fixture(scope="module")
def app_manager(request, tiny_pipeline_dir):
    """A ModelManager over the tiny random pipeline (seconds per request), or over the bundled model for a
    module marked ``bundled`` or ``browser`` when the bundled model is in assets/."""
    from app.model_manager import ModelManager
    from lumiere import LumierePipeline

    if any(request.node.get_closest_marker(name) for name in BUNDLED_APP_MARKERS) and bundled_model_available():
        return ModelManager(None)
    return ModelManager(pipeline=LumierePipeline.from_pretrained(tiny_pipeline_dir, device="cpu"))


@pytest.fixture(scope="module")
def app_server(app_manager):
    """(url, manager) of the app launched on a free local port for one test module."""
    import socket

    from app.ui import QUEUE_SIZE, build_demo

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_demo(app_manager)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                            max_file_size="50mb", quiet=True)
    try:
        yield url, app_manager
    finally:
        demo.close()
