"""Serving the app: a per-client limit on Generate jobs, refusal of calls to unknown endpoints, and clear
messages for Generate requests whose values cannot be used, all through public Gradio and Starlette API.

* The Generate events run without Gradio's concurrency limit; the waiting line is the app's own
  (``ModelManager.join``/``ahead``/``leave``, the model's one-at-a-time turn), so the app knows exactly which
  jobs are waiting or running, per browser session and per address. :class:`Admission` counts them, plus a
  short-lived reservation for a job the middleware has let through but whose handler has not started yet.
* :class:`RequestGuard` (ASGI middleware, passed to Gradio through ``launch(app_kwargs=...)``) refuses, before
  Gradio reads the request: a call to an endpoint the app does not serve (404); a Generate request with the
  wrong number of values, or a file value that is not an upload in the app's upload folder (HTTP 422 with
  Gradio's validation-error shape, so ``gradio_client`` raises ``ValidationError`` with the sentence); and a
  job beyond the client's share or the line's size (:class:`ClientLimit`, the same 422).

Rejections log one line each; only real faults log a traceback.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from starlette.requests import Request

from . import inputs
from .gpu import on_spaces
from .outputs import gradio_temp_dir

log = logging.getLogger("lumiere.app")

SPECIAL_PARAMS = {"request", "progress"}
RESERVATION_SECONDS = 10.0  # how long a job let in by the middleware may take to reach its handler
EDITOR_PARTS = ("background", "composite")  # an image-editor value's single files; "layers" is a list of them


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


@dataclass(frozen=True)
class Endpoint:
    """A Generate endpoint as the app registers it (``app.ui.build_demo``): its API name, its parameters in
    order, and which of them take an uploaded file (``files``) or an image-editor value (``editors``)."""

    name: str
    params: tuple[str, ...]
    files: frozenset[str] = frozenset()
    editors: frozenset[str] = frozenset()


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def not_uploaded(name: str, value) -> str:
    return (f"{inputs.field(name)} got {_shown(value)}, which is not an uploaded file: upload it first "
            "(with gradio_client: handle_file('path/to/file')).")


def _inside(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder)
    except (OSError, ValueError):  # a path the OS cannot resolve (a NUL byte, a loop of links)
        return False


def file_refusal(name: str, value, folder: Path) -> str | None:
    """Why ``value`` is not an upload for the file parameter ``name``; None: null, or a FileData (a dict with
    a string ``path``; a video's ``{"video": FileData}`` too) inside the app's upload ``folder``, or a data URL
    (``app.components.local_path`` decodes it into the app's cache)."""
    if value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("video"), dict):
        return file_refusal(name, value["video"], folder)
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        return not_uploaded(name, value)
    url = value.get("url")
    if isinstance(url, str) and url.startswith("data:"):
        return None
    if not _inside(value["path"], folder):
        return not_uploaded(name, value["path"])
    return None


def editor_refusal(name: str, value, folder: Path) -> str | None:
    """The same for an image-editor parameter: null, a plain upload, or a dict whose background, composite and
    each of its layers is null or an upload."""
    if value is None or (isinstance(value, dict) and "path" in value):
        return file_refusal(name, value, folder)
    if not isinstance(value, dict):
        return not_uploaded(name, value)
    for part in EDITOR_PARTS:
        message = file_refusal(name, value.get(part), folder)
        if message:
            return message
    layers = value.get("layers")
    if layers is not None and not isinstance(layers, list):
        return not_uploaded(name, layers)
    for layer in layers or []:
        message = file_refusal(name, layer, folder)
        if message:
            return message
    return None


def values_refusal(endpoint: Endpoint, data, folder: Path) -> tuple[str, str] | None:
    """(parameter, sentence) saying why a Generate request's ``data`` cannot be used; None: it can. ``data`` is
    the list of values in parameter order (``/queue/join``, ``/call/NAME``) or a dict by name (``/call/v2``)."""
    if isinstance(data, dict):
        values = data
    elif isinstance(data, list):
        if len(data) != len(endpoint.params):
            return "data", (f"/{endpoint.name} takes {len(endpoint.params)} values ({', '.join(endpoint.params)}) "
                            f"but the request sent {len(data)}. Send exactly these, in this order, or call it by name.")
        values = dict(zip(endpoint.params, data))
    else:
        return "data", f"/{endpoint.name} takes a list of values ({', '.join(endpoint.params)})."
    for name, value in values.items():
        check = file_refusal if name in endpoint.files else editor_refusal if name in endpoint.editors else None
        message = check(name, value, folder) if check else None
        if message:
            return name, message
    return None


class ClientLimit:
    """At most ``per_session`` Generate jobs (waiting or running) per browser session and ``per_ip`` per
    address, and at most ``line_size`` waiting in all, so that one client cannot lock everyone else out.

    The session limit is the primary one (a browser tab keeps its session). The address limit is the
    backstop against a script that opens a new session per request; it does not apply to loopback
    clients (the machine's own users: many honest tabs share 127.0.0.1) and, behind a proxy, counts the
    address the trusted proxy appended (see :func:`client_ip`), so forged headers do not escape it."""

    def __init__(self, per_session: int | None = None, per_ip: int | None = None, line_size: int = 16):
        self.per_session = per_session or _env_int("LUMIERE_MAX_JOBS_PER_SESSION", 2)
        self.per_ip = per_ip or _env_int("LUMIERE_MAX_JOBS_PER_IP", 4)
        self.line_size = line_size

    def refusal(self, jobs, session: str | None, ip: str, waiting: int = 0) -> str | None:
        """Why a new job from (``session``, ``ip``) is refused, given the (session, ip) of every Generate job
        waiting or running and how many of them are ``waiting``; None: it may join the line."""
        if waiting >= self.line_size:
            return (f"The app is busy: {waiting} generations are already waiting for the model, the most it "
                    "takes. Try again in a few minutes.")
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


@dataclass
class Reservation:
    session: str | None
    ip: str
    expires: float = field(default_factory=lambda: time.monotonic() + RESERVATION_SECONDS)


class Admission:
    """Who may add a Generate job: the :class:`ClientLimit` over the jobs in the model manager's line and the
    reservations of jobs on their way to it.

    The middleware :meth:`reserve`s a place (the check and the reservation under one lock, so two requests of one
    client cannot both slip under the limit); the job's handler :meth:`join`s the line, claiming it. A
    reservation never claimed (Gradio dropped the job, or refused the request: :meth:`release`) lapses after
    ``RESERVATION_SECONDS``. A handler that finds no reservation (the app served without the middleware) is
    checked against the limit itself."""

    def __init__(self, manager, limit: ClientLimit | None = None):
        self.manager = manager
        self.limit = limit or ClientLimit()
        self._reserved: list[Reservation] = []
        self._lock = threading.Lock()

    def _refusal(self, session: str | None, ip: str) -> str | None:
        now = time.monotonic()
        self._reserved = [r for r in self._reserved if r.expires > now]
        line = self.manager.tickets()
        jobs = [(t.session, t.client) for t in line] + [(r.session, r.ip) for r in self._reserved]
        return self.limit.refusal(jobs, session, ip, waiting=max(0, len(jobs) - 1))

    def reserve(self, session: str | None, ip: str) -> tuple[str | None, Reservation | None]:
        """(why the job is refused, None) or (None, its reservation)."""
        with self._lock:
            message = self._refusal(session, ip)
            if message is not None:
                return message, None
            reservation = Reservation(session, ip)
            self._reserved.append(reservation)
            return None, reservation

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation in self._reserved:
                self._reserved.remove(reservation)

    def join(self, session: str | None, ip: str):
        """The job's :class:`~app.model_manager.Ticket` in the line, claiming its reservation (the one of its
        session, else one its address made without a session: ``/call/NAME``); raises ``gr.Error`` when a job
        that had none is over the limit."""
        with self._lock:
            now = time.monotonic()
            mine = [r for r in self._reserved if r.ip == ip and r.expires > now and r.session in (session, None)]
            mine.sort(key=lambda r: r.session != session)
            if mine:
                self._reserved.remove(mine[0])
            else:
                message = self._refusal(session, ip)
                if message is not None:
                    log.info("refused a job from %s: per-client limit", ip)
                    raise gr.Error(message, title="Busy", print_exception=False)
            return self.manager.join(session, ip)

    def count(self, session: str | None = None, ip: str | None = None) -> int:
        """Jobs waiting, running or reserved for ``session`` (or ``ip``)."""
        with self._lock:
            now = time.monotonic()
            jobs = [(t.session, t.client) for t in self.manager.tickets()]
            jobs += [(r.session, r.ip) for r in self._reserved if r.expires > now]
        return sum(1 for s, i in jobs if (session is None or s == session) and (ip is None or i == ip))


class LumiereBlocks(gr.Blocks):
    """gr.Blocks launched behind :class:`RequestGuard`. ``admission`` decides who may add a Generate job;
    ``generate_endpoints`` ({event id: :class:`Endpoint`}) lists the events it and the values check apply to
    (``app.ui.build_demo`` registers each tab's Generate event); ``upload_folder`` is where Gradio stores
    uploads (the app's own, ``app.ui.configure_cache_dir``): a file value must lie inside it."""

    def __init__(self, *args, admission: Admission | None = None, upload_folder: str | None = None, **kwargs):
        self.admission = admission
        self.upload_folder = upload_folder
        self.generate_endpoints: dict[int, Endpoint] = {}
        super().__init__(*args, **kwargs)

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
    * A request to start a Generate job (``…/queue/join`` with its event id, or ``…/call/NAME``) is refused
      with Gradio's own validation error (HTTP 422, so ``gradio_client`` raises ``ValidationError`` with the
      message) when its values cannot be used (:func:`values_refusal`) or the client already has its share
      of jobs (:meth:`Admission.reserve`); otherwise it passes with a reservation in the line, released at
      once if Gradio does not accept the job.
    """

    PATH = re.compile(r"/(?:call|run)/([^/]+)/?$")
    CALL = re.compile(r"/call/(?:v2/)?([^/]+)/?$")

    def __init__(self, app, blocks: LumiereBlocks):
        self.app = app
        self.blocks = blocks

    def endpoints(self) -> tuple[set[str], list[str]]:
        """(every name Gradio would route, the public ones to name in the message)."""
        dependencies = (getattr(self.blocks, "config", None) or {}).get("dependencies", [])
        names = {dep["api_name"] for dep in dependencies if dep.get("api_name")}
        public = sorted(dep["api_name"] for dep in dependencies
                        if dep.get("api_name") and dep.get("api_visibility", "public") == "public")
        return names, public

    def upload_folder(self) -> Path:
        return Path(self.blocks.upload_folder or gradio_temp_dir()).resolve()

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
        by_name = {endpoint.name: endpoint for endpoint in self.blocks.generate_endpoints.values()}
        if not (path.endswith("/queue/join") or (call and call.group(1) in by_name)):
            return await self.app(scope, receive, send)
        body, receive = await _buffered(receive)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        endpoint = by_name[call.group(1)] if call else self.blocks.generate_endpoints.get(payload.get("fn_index"))
        if endpoint is None:
            return await self.app(scope, receive, send)
        refused = values_refusal(endpoint, payload.get("data", []), self.upload_folder())
        if refused is not None:
            log.info("rejected %s request: %s", endpoint.name, refused[1])
            return await _refuse(send, *refused)
        admission = self.blocks.admission
        if admission is None:
            return await self.app(scope, receive, send)
        ip = client_ip(Request(scope))
        message, reservation = admission.reserve(payload.get("session_hash"), ip)
        if message is not None:
            log.info("refused a %s job from %s: per-client limit", endpoint.name, ip)
            return await _refuse(send, "queue", message)

        async def send_and_release(reply):
            if reply["type"] == "http.response.start" and reply["status"] != 200:
                admission.release(reservation)  # Gradio did not accept the job: no handler will claim it
            await send(reply)

        return await self.app(scope, receive, send_and_release)


async def _refuse(send, parameter: str, message: str) -> None:
    """Gradio's validation-error reply (HTTP 422), which ``gradio_client`` raises as ``ValidationError``."""
    detail = [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": parameter}]
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
