"""One object owns the pipeline: device/dtype choice, lazy loading, a memory budget with LRU eviction,
one generation at a time, out-of-memory recovery, cancellation, and a status report for the UI.

The pipeline loads each component lazily onto its own device and runs every component on the device its
parameters are on, so the manager only has to decide *where* each component lives:

* ``ensure(names)`` makes the components a task needs resident on the compute device, evicting the least
  recently used others when the budget (bytes of parameters on the device) would be exceeded. Eviction
  offloads a component to the CPU (GPU devices) or drops it (``unload_component``; it reloads from disk).
* ``run(task, fn)`` serialises generation with a lock; on out-of-memory it frees memory, evicts every
  component the task does not need, retries once, then raises :class:`OutOfMemory` with advice.
* The app's waiting line for that lock: a Generate handler ``join``s the line (a :class:`Ticket`), waits
  until nothing is ``ahead`` of it, runs, and ``leave``s whatever happened. The line is the app's own count
  of who is waiting or running (``tickets``), and ``cancel(session)`` reaches a session's waiting jobs too.
* Each browser session's latest generation has a :class:`LiveJob` (``live(session)``): the step reached,
  a low-resolution preview of the clip as it denoises (``step_callback`` decodes the sampler's x0
  estimate every few steps: :func:`preview_strip`) and, once it has ended, how.
"""
from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from lumiere.errors import LumiereError
from lumiere.pipeline import default_device, default_dtype, module_device
from lumiere.preprocessing import tensor_to_uint8

log = logging.getLogger("lumiere.app")


class GenerationCancelled(Exception):
    """Raised from the step callback when the user pressed Stop."""


class OutOfMemory(RuntimeError):
    """Generation failed for lack of memory even after freeing everything it does not need."""


# What opening a model can raise for a reason outside the app's code: a missing or damaged checkpoint or config
# (LumiereError, ValueError: JSON, safetensors headers), files or the Hub unreachable (OSError: huggingface_hub's
# HTTP errors are OSErrors), weights torch cannot load (RuntimeError), a model needing a package that is not
# installed (ImportError). Anything else is a bug and keeps its traceback.
LOAD_ERRORS = (LumiereError, OSError, ValueError, RuntimeError, ImportError)

PREVIEW_FRAMES = 8  # frames of the clip shown side by side in the live preview
PREVIEW_HEIGHT = 64  # pixels per preview frame
PREVIEWS_PER_RUN = 10  # about this many previews over a whole generation (every few steps)
LIVE_SESSIONS = 256  # sessions whose latest job is remembered for the UI


@dataclass(eq=False)
class Ticket:
    """A Generate job's place in the line: ``session`` and ``client`` (who asked; the client is opaque here, the
    serving layer counts by it), ``cancelled`` once Stop was pressed for its session or its client went away."""

    session: str | None
    client: str | None = None
    cancelled: bool = False


@dataclass
class LiveJob:
    """A session's latest generation as its page sees it: requested (``expect``), then running (``step`` of
    ``total`` denoising steps, ``preview``: a uint8 strip of frames of the current estimate), then ended
    (``outcome``: "done", "cancelled", "out of memory" or "error"; None until then)."""

    step: int = 0
    total: int = 0
    preview: np.ndarray | None = None
    preview_step: int = 0
    outcome: str | None = None

    @property
    def ended(self) -> bool:
        return self.outcome is not None


def preview_strip(pipe, x0: torch.Tensor, frames: int = PREVIEW_FRAMES, height: int = PREVIEW_HEIGHT) -> np.ndarray:
    """The sampler's clean-sample estimate ``x0`` (1, C, T, h, w) (or (1, C, h, w): one image) as a small uint8
    picture (H, W, 3): up to ``frames`` evenly spaced frames side by side, each ``height`` pixels high. Latents
    are decoded (``pipe.decode_frames``) for the chosen frames only; pixels are used as they are."""
    from PIL import Image

    if x0.ndim == 4:
        x0 = x0[:, :, None]
    count = x0.shape[2]
    picked = sorted({round(i * (count - 1) / max(1, frames - 1)) for i in range(min(frames, count))})
    sample = x0[:1, :, picked]
    if getattr(pipe, "is_latent", False) and tuple(sample.shape[-2:]) == tuple(pipe.model_sample_shape[1:]):
        sample = pipe.decode_frames(sample)
    pictures = tensor_to_uint8(sample[0])  # (T, H, W, 3)
    width = max(1, round(pictures.shape[2] * height / pictures.shape[1]))
    resample = Image.NEAREST if pictures.shape[1] < height else Image.BILINEAR
    gap = np.full((height, 2, 3), 24, np.uint8)
    parts = []
    for picture in pictures:
        parts += [np.asarray(Image.fromarray(picture).resize((width, height), resample)), gap]
    return np.concatenate(parts[:-1], axis=1)


def is_out_of_memory(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, (RuntimeError, MemoryError)) and (
        isinstance(error, MemoryError) or "out of memory" in str(error).lower())


def module_nbytes(module: torch.nn.Module) -> int:
    """Bytes of a component's parameters and buffers (what it occupies on its device)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(text: str | int | float | None) -> int | None:
    """'6GB' / '512mb' / 1e9 -> bytes; None/''/'auto' -> None."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto", "none")):
        return None
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"memory budget must look like '6GB' or '512MB', got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: int | float | None) -> str:
    if n is None:
        return "unlimited"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def default_budget(device: torch.device) -> int | None:
    """80% of the accelerator's memory; no budget on the CPU (the OS manages that memory)."""
    if device.type == "cuda":
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            return int(0.8 * torch.cuda.get_device_properties(index).total_memory)
        except (RuntimeError, AssertionError):  # ZeroGPU: no device is attached at start-up
            return None
    return None


class ModelManager:
    """Owns the :class:`~lumiere.LumierePipeline` used by the app.

    ``model``: path or Hub repo id (None = the bundled model). ``pipeline``: an already built pipeline (tests).
    ``memory_budget``: bytes (or '6GB') of component parameters allowed on the compute device at once.
    """

    def __init__(self, model: str | None = None, *, pipeline=None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, memory_budget: int | str | None = None,
                 offload_to_cpu: bool | None = None, loader: Callable[..., Any] | None = None):
        self.model = model
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        budget = parse_bytes(memory_budget if memory_budget is not None else os.environ.get("LUMIERE_MEMORY_BUDGET"))
        self.memory_budget = budget if budget is not None else default_budget(self.device)
        self.offload_to_cpu = (self.device.type != "cpu") if offload_to_cpu is None else offload_to_cpu
        self._loader = loader
        self._pipe = pipeline
        if pipeline is not None:
            self.device, self.dtype = pipeline.device, pipeline.dtype
        self._load_error: Exception | None = None
        self._generation_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._resident: OrderedDict[str, int] = OrderedDict()  # on the compute device, least recent first
        self._sizes: dict[str, int] = {}
        self._cancel = threading.Event()
        self._active_session: str | None = None
        self._live: OrderedDict[str, LiveJob] = OrderedDict()  # by session, least recently requested first
        self._job: LiveJob | None = None  # the running generation's
        self._ended = threading.Condition()
        self._line: list[Ticket] = []  # first: the job whose turn it is (running or about to), then the waiting
        # Its own lock, never held for long: the server's event loop reads the line while _state_lock may be
        # held for seconds by a component loading.
        self._line_lock = threading.Lock()
        self.evictions = 0
        self.oom_recoveries = 0
        self.last_task: str | None = None
        self.last_duration: float | None = None
        self.last_outcome: str | None = None  # "done", "cancelled", "out of memory" or "error"

    # ------------------------------------------------------------------ pipeline
    @property
    def pipe(self):
        """The pipeline, opened on first use (reads configs only; weights load per component, lazily)."""
        if self._pipe is None:
            with self._state_lock:
                if self._pipe is None:
                    try:
                        self._pipe = self._open()
                        self._load_error = None
                    except LOAD_ERRORS as error:
                        self._load_error = error
                        raise
        return self._pipe

    def _open(self):
        if self._loader is not None:
            return self._loader(self.model, device=self.device, dtype=self.dtype)
        from lumiere import LumierePipeline

        return LumierePipeline.from_pretrained(self.model, device=self.device, dtype=self.dtype)

    def try_pipe(self):
        """The pipeline, or None if it cannot be opened (the error is kept for the status panel)."""
        try:
            return self.pipe
        except LOAD_ERRORS as error:  # shown to the user, never crashes the UI build
            log.error("could not open model %r: %s", self.model or "bundled", error)
            return None

    @property
    def load_error(self) -> Exception | None:
        return self._load_error

    # ------------------------------------------------------------------ placement
    @property
    def used_bytes(self) -> int:
        return sum(self._resident.values())

    def _fits(self, extra: int) -> bool:
        return self.memory_budget is None or self.used_bytes + extra <= self.memory_budget

    def _estimate(self, name: str) -> int:
        """Size of a component before it is loaded: last known size, else its weight files on disk."""
        if name in self._sizes:
            return self._sizes[name]
        source = getattr(self.pipe, "source", None)
        if source is not None:
            directory = os.path.join(os.fspath(source), name)
            if os.path.isdir(directory):
                return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
                           if f.endswith(".safetensors"))
        return 0

    def ensure(self, names) -> None:
        """Make ``names`` resident on the compute device (loading lazily), evicting LRU others if needed."""
        with self._state_lock:
            needed = list(dict.fromkeys(names))
            for name in needed:
                self._make_resident(name, protected=set(needed))

    def _make_resident(self, name: str, protected: set[str]) -> None:
        pipe = self.pipe
        if name in self._resident and pipe.is_loaded(name):
            self._resident.move_to_end(name)
            return
        self._resident.pop(name, None)
        self._evict_until_fits(self._estimate(name), protected)
        module = pipe.get_component(name)  # loads from disk onto pipe.device the first time
        if module_device(module) != self.device:
            module.to(self.device)  # back from CPU offload
        size = module_nbytes(module)
        self._sizes[name] = size
        self._resident[name] = size
        self._evict_until_fits(0, protected)
        if not self._fits(0):
            log.warning("components %s need %s, over the memory budget of %s; trying anyway",
                        sorted(protected), format_bytes(self.used_bytes), format_bytes(self.memory_budget))

    def _evict_until_fits(self, extra: int, protected: set[str]) -> None:
        for victim in list(self._resident):
            if self._fits(extra):
                return
            if victim not in protected:
                self.evict(victim)

    def evict(self, name: str) -> None:
        """Take a component off the compute device: offload to CPU, or drop it (it reloads from disk)."""
        with self._state_lock:
            self._resident.pop(name, None)
            pipe = self._pipe
            if pipe is None or not pipe.is_loaded(name):
                return
            if self.offload_to_cpu and self.device.type != "cpu":
                pipe.get_component(name).to("cpu")
            else:
                pipe.unload_component(name)
            self.evictions += 1
            log.info("evicted %s (%s)", name, "offloaded to CPU" if self.offload_to_cpu else "unloaded")

    def free_memory(self, keep=()) -> None:
        """Evict everything except ``keep`` and return cached allocator memory to the device."""
        with self._state_lock:
            for name in list(self._resident):
                if name not in keep:
                    self.evict(name)
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def free_if_idle(self) -> bool:
        """The System panel's "Free model memory": evict everything unless a generation is running."""
        if not self._generation_lock.acquire(blocking=False):
            return False
        try:
            self.free_memory()
            return True
        finally:
            self._generation_lock.release()

    # ------------------------------------------------------------------ generation
    def join(self, session: str | None, client: str | None = None) -> Ticket:
        """Take a place at the end of the line (callers :meth:`leave` it in a ``finally``)."""
        ticket = Ticket(session, client)
        with self._line_lock:
            self._line.append(ticket)
        return ticket

    def ahead(self, ticket: Ticket) -> int:
        """How many jobs are before ``ticket`` in the line (0: its turn)."""
        with self._line_lock:
            return self._line.index(ticket) if ticket in self._line else 0

    def leave(self, ticket: Ticket) -> None:
        with self._line_lock:
            if ticket in self._line:
                self._line.remove(ticket)

    def cancel_ticket(self, ticket: Ticket) -> None:
        """Stop one job: waiting, it ends without running; running, it stops after the current step."""
        with self._line_lock:
            ticket.cancelled = True
            head = bool(self._line) and self._line[0] is ticket
        if head and self._generation_lock.locked() and self._active_session == ticket.session:
            self._cancel.set()

    def tickets(self) -> list[Ticket]:
        """Every job in the line, the one whose turn it is first."""
        with self._line_lock:
            return list(self._line)

    def run(self, task: str, fn: Callable[[Any], Any], *, super_resolve: bool = True, session: str | None = None):
        """Run ``fn(pipe)`` for ``task`` with its components resident; one generation at a time."""
        with self._generation_lock:
            self._cancel.clear()
            with self._line_lock:  # Stop arrived while this job was still being prepared
                if self._line and self._line[0].session == session and self._line[0].cancelled:
                    self._cancel.set()
            self._active_session = session
            self._job = self._live_job(session, fresh=False)
            started = time.perf_counter()
            outcome = "error"
            try:
                needed = self.pipe.components_for(task, super_resolve)
                for attempt in range(2):
                    out_of_memory = False
                    try:
                        self.ensure(needed)
                        result = fn(self.pipe)
                        outcome = "done"
                        return result
                    except GenerationCancelled:
                        outcome = "cancelled"
                        raise
                    except (RuntimeError, MemoryError) as error:  # torch's OutOfMemoryError is a RuntimeError
                        if not is_out_of_memory(error):
                            raise
                        if attempt == 1:
                            outcome = "out of memory"
                            raise OutOfMemory(
                                "Not enough memory for this generation even after freeing everything else. "
                                "Try fewer frames or turn super-resolution (SSR) off."
                            ) from error
                        out_of_memory = True
                        log.warning("out of memory during %s; freeing memory and retrying once", task)
                    if out_of_memory:  # outside the except block, so the failed call's tensors can be freed
                        self.oom_recoveries += 1
                        self.free_memory(keep=needed)
            finally:
                self._active_session = None
                self.last_task, self.last_outcome = task, outcome
                self.last_duration = time.perf_counter() - started
                self.end_job(session, outcome, self._job)
                self._job = None

    def step_callback(self, progress: Callable[[int, int], None] | None = None,
                      preview: bool = True) -> Callable[..., None]:
        """A pipeline ``callback(step, total, x0)``: records the step (and, with ``preview``, every few steps a
        :func:`preview_strip` of the estimate ``x0``) in the running job's :class:`LiveJob`, reports progress,
        and raises :class:`GenerationCancelled` when Stop was pressed (the job then stopped after ``step``)."""

        def callback(step: int, total: int, x0: torch.Tensor | None = None) -> None:
            job = self._job
            if job is not None:
                job.step, job.total = step, total
                every = max(1, total // PREVIEWS_PER_RUN)
                if preview and x0 is not None and (step % every == 0 or step == total):
                    try:
                        job.preview, job.preview_step = preview_strip(self.pipe, x0), step
                    except (RuntimeError, ValueError, OSError):  # torch / Pillow: a preview must not break the run
                        log.exception("live preview failed")
            if self._cancel.is_set():
                raise GenerationCancelled("generation stopped")
            if progress is not None:
                progress(step, total)

        return callback

    # ------------------------------------------------------------------ what a session's page shows
    def _live_job(self, session: str | None, fresh: bool) -> LiveJob:
        """The session's LiveJob (a new one if ``fresh`` or it has none); jobs without a session are not kept."""
        with self._state_lock:
            job = None if fresh or session is None else self._live.get(session)
            if job is None or job.ended:
                job = LiveJob()
                if session is not None:
                    self._live[session] = job
                    self._live.move_to_end(session)
                    while len(self._live) > LIVE_SESSIONS:
                        self._live.popitem(last=False)
            return job

    def expect(self, session: str | None) -> None:
        """The session asked for a generation (its page starts watching ``live``): a fresh LiveJob, unless its
        generation already runs (the request overtook the page's notice)."""
        running = self._job
        if session is not None and session == self._active_session and running is self.live(session):
            return
        self._live_job(session, fresh=True)

    def live(self, session: str | None) -> LiveJob | None:
        """The session's latest generation (None if it has asked for none)."""
        return None if session is None else self._live.get(session)

    def end_job(self, session: str | None, outcome: str, job: LiveJob | None = None) -> None:
        """Mark the session's job ended (``run`` does; a request refused before it ran calls this too)."""
        job = job or self.live(session)
        if job is not None and not job.ended:
            with self._ended:
                job.outcome = outcome
                self._ended.notify_all()

    def wait_ended(self, session: str | None, timeout: float) -> LiveJob | None:
        """The session's running job (else its latest) once it has ended, waiting at most ``timeout`` s (then
        as it is)."""
        job = self._job if session is not None and self._active_session == session else None
        job = job or self.live(session)
        with self._ended:
            self._ended.wait_for(lambda: job is None or job.ended, timeout)
        return job

    def cancel(self, session: str | None = None) -> bool:
        """Stop the running generation (only the requesting session's, when sessions are given) and, for a
        session, its jobs waiting in the line (each ends without running the model). True if any was stopped."""
        waiting = False
        if session is not None:
            with self._line_lock:
                for ticket in self._line:
                    if ticket.session == session:
                        ticket.cancelled = waiting = True
        if self._active_session is None and not self._generation_lock.locked():
            return waiting
        if session is not None and self._active_session is not None and session != self._active_session:
            return waiting
        self._cancel.set()
        return True

    @property
    def busy(self) -> bool:
        return self._generation_lock.locked()

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        pipe = self._pipe
        components = {}
        if pipe is not None:
            for name in pipe.component_names:
                if not pipe.is_loaded(name):
                    where = "not loaded"
                else:
                    where = str(module_device(pipe.get_component(name)))
                components[name] = {"where": where, "bytes": self._sizes.get(name)}
        info = {
            "model": self.model or "bundled",
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "memory_budget": self.memory_budget,
            "used_bytes": self.used_bytes,
            "components": components,
            "evictions": self.evictions,
            "oom_recoveries": self.oom_recoveries,
            "busy": self.busy,
            "load_error": str(self._load_error) if self._load_error else None,
            "last_job": None if self.last_task is None else
            {"task": self.last_task, "outcome": self.last_outcome, "seconds": round(self.last_duration or 0.0, 2)},
        }
        if self.device.type == "cuda" and torch.cuda.is_available():
            info["cuda_allocated"] = torch.cuda.memory_allocated(self.device)
            info["cuda_reserved"] = torch.cuda.memory_reserved(self.device)
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def status_markdown(self) -> str:
        s = self.status()
        lines = [f"**Model:** `{s['model']}` · **device:** {s.get('gpu', s['device'])} ({s['dtype']})",
                 f"**Memory budget:** {format_bytes(s['memory_budget'])} · **in use by models:** "
                 f"{format_bytes(s['used_bytes'])}"]
        if "cuda_allocated" in s:
            lines.append(f"**CUDA:** {format_bytes(s['cuda_allocated'])} allocated, "
                         f"{format_bytes(s['cuda_reserved'])} reserved")
        if s["components"]:
            parts = [f"{name}: {c['where']}" + (f" ({format_bytes(c['bytes'])})" if c["bytes"] else "")
                     for name, c in s["components"].items()]
            lines.append("**Components:** " + " · ".join(parts))
        lines.append(f"**Evictions:** {s['evictions']} · **OOM recoveries:** {s['oom_recoveries']} · "
                     f"**busy:** {'yes' if s['busy'] else 'no'}")
        if s["last_job"]:
            job = s["last_job"]
            lines.append(f"**Last job:** {job['task']} — {job['outcome']} in {job['seconds']:.1f} s")
        if s["load_error"]:
            lines.append(f"**Model error:** {s['load_error']}")
        return "  \n".join(lines)
