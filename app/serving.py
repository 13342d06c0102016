"""Serving the app: a per-client limit on queued generations, refusal of calls to unknown endpoints, and clear
messages for requests Gradio cannot unpack.

Public Gradio API only, except two touches that no public API covers (each isolated in one function below,
with a test in tests/test_app_serving.py that fails loudly when Gradio changes them):

* :func:`generate_jobs` reads which Generate jobs are queued or running (Gradio lists a queue's size per
  client nowhere public), for the per-client limit.
* :meth:`LumiereBlocks.preprocess_data` turns the errors Gradio raises while unpacking a request (too few or
  extra values, a server path where an upload goes) into a sentence that names the field; Gradio has no
  public hook between reading a request and calling the handler.

The limit and the unknown-endpoint check are ASGI middleware (:class:`RequestGuard`), passed to Gradio
through ``launch(app_kwargs=...)``. Rejections log one line each; only real faults log a traceback.
"""
from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import logging
import os
import re

import gradio as gr
from starlette.requests import Request

from . import inputs
from .gpu import on_spaces

log = logging.getLogger("lumiere.app")

GENERATE = "generate"  # the concurrency id every Generate endpoint shares
SPECIAL_PARAMS = {"request", "progress"}


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def proxy_hops() -> int:
    """How many reverse proxies in front of the app append to X-Forwarded-For (0: trust no header).

    ``LUMIERE_PROXY_HOPS`` sets it; on a Hugging Face Space the default is 1 (the Space's proxy), elsewhere
    0 (a header from a client that connects directly is never trusted)."""
    value = os.environ.get("LUMIERE_PROXY_HOPS")
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return 1 if on_spaces() else 0


def client_ip(request) -> str:
    """The client's address as the trusted proxies saw it.

    A proxy *appends* the address it received the connection from, so with N trusted proxies the client is
    the N-th hop from the right; everything left of it was written by the client and may be forged. Without
    trusted proxies the header is ignored and the socket's peer address is used."""
    if request is None:
        return "unknown"
    hops = proxy_hops()
    forwarded = request.headers.get("x-forwarded-for") if hops else None
    if forwarded:
        chain = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if chain:
            return chain[-min(hops, len(chain))]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def is_local(address: str) -> bool:
    """A loopback address: a client on this machine (its owner), never a stranger sharing an address."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def param_names(block_fn) -> list[str]:
    """The API parameter names of an event's inputs, in order."""
    fn = getattr(block_fn, "fn", None)
    names = []
    if fn is not None:
        try:
            names = [p for p in inspect.signature(fn).parameters if p not in SPECIAL_PARAMS]
        except (TypeError, ValueError):
            names = []
    count = len(block_fn.inputs)
    return (names + [f"input {i + 1}" for i in range(len(names), count)])[:count]


def describe_preprocess_error(block_fn, values: list, error: BaseException) -> str:
    """A sentence for a request Gradio could not unpack: which field, what was wrong, what to send."""
    cause = error
    while cause is not None:
        if isinstance(cause, inputs.InputError):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    names = param_names(block_fn)
    endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "this event"
    if len(values) < len(block_fn.inputs):
        return (f"{endpoint} takes {len(names)} values ({', '.join(names)}) but the request sent {len(values)}. "
                f"Send all of them in this order, or call it by name, e.g. Client(url).predict(prompt=..., "
                f"api_name='{endpoint}').")
    for index, block in enumerate(block_fn.inputs):
        model = getattr(block, "data_model", None)
        if model is None or index >= len(values) or values[index] is None:
            continue
        try:
            model.model_validate(values[index], context={"validate_meta": True})
        except ValueError:  # pydantic's ValidationError: the value is not this component's file data
            value = repr(values[index])
            value = value if len(value) <= 60 else value[:57] + "..."
            return (f"{inputs.field(names[index])} got {value}, which is not an uploaded file: upload it first "
                    f"(with gradio_client: handle_file('path/to/file')).")
    text = str(error)
    if "upload" in text.lower() or "not allowed" in text.lower() or "cannot be accessed" in text.lower():
        return ("A file in the request was not uploaded to this app (server paths and URLs are not accepted): "
                "upload it first (with gradio_client: handle_file('path/to/file')).")
    return "The request could not be read: check that each value has the type the API page lists for it."


class ClientLimit:
    """At most ``per_session`` Generate jobs (queued or running) per browser session and ``per_ip`` per
    address, on top of the global queue size, so that one client cannot lock everyone else out.

    The session limit is the primary one (a browser tab keeps its session). The address limit is the
    backstop against a script that opens a new session per request; it does not apply to loopback
    clients (the machine's own users: many honest tabs share 127.0.0.1) and, behind a proxy, counts the
    address the trusted proxy appended (see :func:`client_ip`), so forged headers do not escape it."""

    def __init__(self, per_session: int | None = None, per_ip: int | None = None):
        self.per_session = per_session or _env_int("LUMIERE_MAX_JOBS_PER_SESSION", 2)
        self.per_ip = per_ip or _env_int("LUMIERE_MAX_JOBS_PER_IP", 4)

    def refusal(self, jobs, session: str | None, ip: str) -> str | None:
        """Why a new job from (``session``, ``ip``) is refused, given the (session, ip) of every Generate job
        queued or running (:func:`generate_jobs`); None: it may join the queue."""
        same_session = same_ip = 0
        for job_session, job_ip in jobs:
            same_session += session is not None and job_session == session
            same_ip += job_ip == ip
        if same_session >= self.per_session:
            return (f"You already have {same_session} generations waiting or running; each visitor may have "
                    f"{self.per_session} at a time so that everyone gets a turn. Wait for one to finish (or press "
                    "Stop), then generate again.")
        if same_ip >= self.per_ip and not is_local(ip):
            return (f"Your network address already has {same_ip} generations waiting or running (the limit is "
                    f"{self.per_ip} per address, so that everyone gets a turn). Wait for one to finish, then try again.")
        return None


def generate_jobs(blocks: gr.Blocks) -> list[tuple[str | None, str]]:
    """(session hash, client address) of every Generate job queued or running in ``blocks``' queue.

    PRIVATE GRADIO TOUCH (read-only; the only one besides :meth:`LumiereBlocks.preprocess_data`): Gradio has
    no public API that lists the jobs in its queue or counts them per client (``queue(max_size=...)`` caps the
    total only; ``/queue/status`` is the total too), and a count kept by the app itself would drift, because
    Gradio drops queued jobs silently when a client disconnects or calls ``/cancel``. Reads
    ``Blocks._queue.event_queue_per_concurrency_id[*].queue`` and ``.active_jobs`` and each event's
    ``session_hash``, ``concurrency_id`` and ``request``. If Gradio renames any of these this raises (and
    ``tests/test_app_serving.py::test_generate_jobs_reads_gradios_queue`` fails) instead of letting every
    client through."""
    try:
        queue = blocks._queue
        events = [event for waiting in queue.event_queue_per_concurrency_id.values() for event in waiting.queue]
        events += [event for job in queue.active_jobs if job for event in job]
        return [(event.session_hash, client_ip(event.request)) for event in events
                if event.concurrency_id == GENERATE]
    except AttributeError as error:
        raise RuntimeError(f"gradio {gr.__version__} changed its queue's internals ({error}); the per-client "
                           "limit in app/serving.py (generate_jobs) must be updated") from error


class LumiereBlocks(gr.Blocks):
    """gr.Blocks with readable errors for requests that cannot be unpacked, launched behind
    :class:`RequestGuard`. ``generate_endpoints`` ({event id: api name}) lists the events the per-client
    limit applies to (``app.ui.connect`` registers each tab's Generate event)."""

    def __init__(self, *args, client_limit: ClientLimit | None = None, **kwargs):
        self.client_limit = client_limit or ClientLimit()
        self.generate_endpoints: dict[int, str] = {}
        super().__init__(*args, **kwargs)

    async def preprocess_data(self, block_fn, inputs_, state, explicit_call: bool = False):
        """PRIVATE GRADIO TOUCH: an override of an undocumented Blocks method, the one step between reading a
        request and calling its handler (no public hook exists there). Gradio ignores extra values silently
        and fails on too few, or on a server path where an upload goes, with a bare "Error"; here each gets
        a sentence naming the field. ``tests/test_app_serving.py::test_preprocess_hook_is_still_gradios``
        fails if Gradio renames it or changes its parameters."""
        if inputs_ is not None and len(inputs_) > len(block_fn.inputs):  # Gradio ignores extras silently
            names = param_names(block_fn)
            message = (f"/{block_fn.api_name} takes {len(names)} values ({', '.join(names)}) but the request sent "
                       f"{len(inputs_)}. Send exactly these, in this order, or call it by name.")
            log.info("rejected %s request: %s", block_fn.api_name or "UI", message)
            raise gr.Error(message, title="Check your input", print_exception=False)
        try:
            return await super().preprocess_data(block_fn, inputs_, state, explicit_call)
        except gr.Error:
            raise
        except (ValueError, TypeError, KeyError) as error:  # Gradio's errors (and pydantic's) for a malformed value
            message = describe_preprocess_error(block_fn, list(inputs_ or []), error)
            log.info("rejected %s request: %s", block_fn.api_name or "UI", message)
            raise gr.Error(message, title="Check your input", print_exception=False) from None

    def launch(self, *args, app_kwargs: dict | None = None, **kwargs):
        """``gr.Blocks.launch`` with :class:`RequestGuard` in front of the app (through the public
        ``app_kwargs``)."""
        from starlette.middleware import Middleware

        app_kwargs = dict(app_kwargs or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(RequestGuard, blocks=self)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)


def _json_response(status: int, payload) -> tuple[dict, dict]:
    body = json.dumps(payload).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware in front of Gradio's routes.

    * ``POST …/call/NAME`` or ``…/run/NAME`` for a NAME the app does not serve is a 404 that lists the
      endpoints it does serve (Gradio answers it with a 500 and a traceback in the log).
    * A request to queue a Generate job (``…/queue/join`` with its event id, or ``…/call/NAME``) is refused
      when the client already has its share of jobs (:class:`ClientLimit`), with Gradio's own validation
      error (HTTP 422, so ``gradio_client`` raises ``ValidationError`` with the message). The check and the
      joining happen under one lock, so two requests of one client cannot both slip under the limit.
    """

    PATH = re.compile(r"/(?:call|run)/([^/]+)/?$")
    CALL = re.compile(r"/call/(?:v2/)?([^/]+)/?$")

    def __init__(self, app, blocks: LumiereBlocks):
        self.app = app
        self.blocks = blocks
        self.lock: asyncio.Lock | None = None

    def endpoints(self) -> tuple[set[str], list[str]]:
        """(every name Gradio would route, the public ones to name in the message)."""
        dependencies = (getattr(self.blocks, "config", None) or {}).get("dependencies", [])
        names = {dep["api_name"] for dep in dependencies if dep.get("api_name")}
        public = sorted(dep["api_name"] for dep in dependencies
                        if dep.get("api_name") and dep.get("api_visibility", "public") == "public")
        return names, public

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        match = self.PATH.search(path)
        if match:
            known, public = self.endpoints()
            # "predict" is the route the page itself posts its unqueued events to (by fn_index, not by name).
            if known and match.group(1) not in known | {"predict"}:
                log.info("refused a call to unknown endpoint /%s", match.group(1))
                for message in _json_response(404, {"error": f"There is no endpoint /{match.group(1)}. This app "
                                                    "serves: " + ", ".join(f"/{name}" for name in public) + "."}):
                    await send(message)
                return
        call = self.CALL.search(path)
        generate = set(getattr(self.blocks, "generate_endpoints", {}).values())
        if not (path.endswith("/queue/join") or (call and call.group(1) in generate)):
            return await self.app(scope, receive, send)
        body, receive = await _buffered(receive)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        name = call.group(1) if call else self.blocks.generate_endpoints.get(payload.get("fn_index"))
        if name not in generate:
            return await self.app(scope, receive, send)
        if self.lock is None:
            self.lock = asyncio.Lock()
        ip = client_ip(Request(scope))
        async with self.lock:  # the check and Gradio's append to its queue must not interleave with another
            message = self.blocks.client_limit.refusal(generate_jobs(self.blocks), payload.get("session_hash"), ip)
            if message is None:
                return await self.app(scope, receive, send)
        log.info("refused a %s job from %s: per-client limit", name, ip)
        detail = [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "queue"}]
        for reply in _json_response(422, {"detail": detail}):
            await send(reply)


async def _buffered(receive):
    """The request's body, and a ``receive`` that hands it (then the rest of the connection) to the app."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
