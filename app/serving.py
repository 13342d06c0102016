"""The app's Blocks: a per-client limit on queued generations, and clear messages for malformed requests.

Why a subclass: both happen before any endpoint function runs. Gradio's queue only caps the total
(one client could fill every slot for half an hour), and requests it cannot even unpack (too few values,
a string where a file goes) fail inside ``Blocks.preprocess_data`` with a bare "Error".
Rejections log one line each; only real faults log a traceback.
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
        except Exception:
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
        self.lock = asyncio.Lock()

    @staticmethod
    def _events(queue):
        for event_queue in queue.event_queue_per_concurrency_id.values():
            yield from event_queue.queue
        for job in queue.active_jobs:
            yield from job or ()

    def refusal(self, queue, session: str | None, ip: str) -> str | None:
        same_session = same_ip = 0
        for event in self._events(queue):
            if event.concurrency_id != GENERATE:
                continue
            same_session += session is not None and event.session_hash == session
            same_ip += client_ip(event.request) == ip
        if same_session >= self.per_session:
            return (f"You already have {same_session} generations waiting or running; each visitor may have "
                    f"{self.per_session} at a time so that everyone gets a turn. Wait for one to finish (or press "
                    "Stop), then generate again.")
        if same_ip >= self.per_ip and not is_local(ip):
            return (f"Your network address already has {same_ip} generations waiting or running (the limit is "
                    f"{self.per_ip} per address, so that everyone gets a turn). Wait for one to finish, then try again.")
        return None

    def install(self, queue) -> None:
        """Wrap ``queue.push`` (Gradio's join-the-queue step) with the per-client check."""
        if getattr(queue, "_lumiere_limited", False):
            return
        original = queue.push
        from gradio import route_utils

        async def push(body, request, username):
            try:
                fn = route_utils.get_fn(queue.blocks, None, body)
            except Exception:
                return await original(body, request, username)
            if fn.concurrency_id != GENERATE:
                return await original(body, request, username)
            async with self.lock:  # the check and the append must not interleave with another push
                message = self.refusal(queue, body.session_hash, client_ip(request))
                if message is None:
                    return await original(body, request, username)
            log.info("refused a %s job from %s: per-client limit", fn.api_name, client_ip(request))
            detail = [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "queue"}]
            return False, detail, "validator_error"

        queue.push = push
        queue._lumiere_limited = True


class LumiereBlocks(gr.Blocks):
    """gr.Blocks with the per-client queue limit and readable errors for requests that cannot be unpacked."""

    def __init__(self, *args, client_limit: ClientLimit | None = None, **kwargs):
        self._client_limit = client_limit or ClientLimit()
        super().__init__(*args, **kwargs)

    @property
    def _queue(self):
        return self.__dict__.get("_lumiere_queue")

    @_queue.setter
    def _queue(self, queue) -> None:  # Blocks() and every .queue() call build a new Queue
        self._client_limit.install(queue)
        self.__dict__["_lumiere_queue"] = queue

    async def preprocess_data(self, block_fn, inputs_, state, explicit_call: bool = False):
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
        except Exception as error:
            message = describe_preprocess_error(block_fn, list(inputs_ or []), error)
            log.info("rejected %s request: %s", block_fn.api_name or "UI", message)
            raise gr.Error(message, title="Check your input", print_exception=False) from None

    def launch(self, *args, app_kwargs: dict | None = None, **kwargs):
        """``gr.Blocks.launch`` with :class:`UnknownEndpoint` in front of the app (Gradio answers a call to
        an endpoint that does not exist with a 500 and a traceback in the log)."""
        from starlette.middleware import Middleware

        app_kwargs = dict(app_kwargs or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(UnknownEndpoint, blocks=self)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)


class UnknownEndpoint:
    """ASGI middleware: ``POST …/call/NAME`` or ``…/run/NAME`` for a NAME the app does not serve is a 404
    that lists the endpoints it does serve, before Gradio's router looks the name up."""

    PATH = re.compile(r"/(?:call|run)/([^/]+)/?$")

    def __init__(self, app, blocks: gr.Blocks):
        self.app = app
        self.blocks = blocks

    def endpoints(self) -> tuple[set[str], list[str]]:
        """(every name Gradio would route, the public ones to name in the message)."""
        dependencies = (getattr(self.blocks, "config", None) or {}).get("dependencies", [])
        names = {dep["api_name"] for dep in dependencies if dep.get("api_name")}
        public = sorted(dep["api_name"] for dep in dependencies
                        if dep.get("api_name") and dep.get("api_visibility", "public") == "public")
        return names, public

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST":
            match = self.PATH.search(scope.get("path", ""))
            known, public = self.endpoints()
            # "predict" is the route the page itself posts its unqueued events to (by fn_index, not by name).
            if match and known and match.group(1) not in known | {"predict"}:
                body = json.dumps({"error": f"There is no endpoint /{match.group(1)}. This app serves: "
                                   + ", ".join(f"/{name}" for name in public) + "."}).encode()
                log.info("refused a call to unknown endpoint /%s", match.group(1))
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
