"""The app as a hostile or crowded network sees it: forged proxy headers, many honest local clients,
calls to endpoints that do not exist, and calls with extra values (app/serving.py)."""
import time
from types import SimpleNamespace

import httpx
import pytest

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from app.serving import client_ip, is_local, proxy_hops  # noqa: E402

FAST = {"steps": 1, "super_resolve": False}
SLOW = {"prompt": "a red circle bouncing", "steps": 100, "super_resolve": False}
VALUES = ["a red circle", "", False, False, 0, None, 1, None, False, None, None]  # /text_to_video's 11, fast


def fake_request(peer: str, forwarded: str | None = None):
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    return SimpleNamespace(headers=headers, client=SimpleNamespace(host=peer))


def test_client_address_is_the_hop_the_trusted_proxy_appended(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("LUMIERE_PROXY_HOPS", raising=False)
    # No trusted proxy: a client-written header is ignored.
    assert proxy_hops() == 0
    assert client_ip(fake_request("198.51.100.9", "1.2.3.4")) == "198.51.100.9"
    # On a Space one proxy appends the address it saw; what the client wrote is left of it.
    monkeypatch.setenv("SPACE_ID", "user/lumiere")
    assert proxy_hops() == 1
    assert client_ip(fake_request("10.0.0.2", "1.2.3.4, 5.6.7.8, 203.0.113.7")) == "203.0.113.7"
    assert client_ip(fake_request("10.0.0.2", "203.0.113.7")) == "203.0.113.7"
    assert client_ip(fake_request("10.0.0.2")) == "10.0.0.2"
    monkeypatch.setenv("LUMIERE_PROXY_HOPS", "2")  # CDN + Space proxy: the client is second from the right
    assert client_ip(fake_request("10.0.0.2", "1.2.3.4, 203.0.113.7, 198.51.100.1")) == "203.0.113.7"
    monkeypatch.setenv("LUMIERE_PROXY_HOPS", "0")
    assert client_ip(fake_request("10.0.0.2", "203.0.113.7")) == "10.0.0.2"
    assert is_local("127.0.0.1") and is_local("::1") and not is_local("203.0.113.7") and not is_local("unknown")


@pytest.fixture(scope="module")
def served(app_server):
    url, manager = app_server
    return url.rstrip("/"), manager


def wait_busy(manager, seconds=60):
    deadline = time.monotonic() + seconds
    while not manager.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manager.busy


def stop_all(manager, client, jobs, seconds=120):
    """Stop ``client``'s running jobs until every one is done (each ends with an error). By its session only:
    a blanket cancel could hit the next visitor's job in the moment it starts."""
    deadline = time.monotonic() + seconds
    while not all(job.done() for job in jobs) and time.monotonic() < deadline:
        manager.cancel(client.session_hash)
        time.sleep(0.1)
    assert all(job.done() for job in jobs)


def test_unknown_endpoint_is_a_404_that_lists_the_real_ones(served):
    url, _ = served
    for route in ("call", "run"):
        response = httpx.post(f"{url}/gradio_api/{route}/text_to_vidoe", json={"data": ["a red circle"]}, timeout=30)
        assert response.status_code == 404
        message = response.json()["error"]
        assert "no endpoint /text_to_vidoe" in message and "/text_to_video" in message
        assert "/lambda" not in message  # internal UI events are not advertised
    # The page's own unqueued events (Stop, Reuse seed, ...) post to /run/predict by fn_index: untouched.
    response = httpx.post(f"{url}/gradio_api/run/predict", json={"data": [], "fn_index": 10**6}, timeout=30)
    assert response.status_code != 404
    # A real endpoint is untouched by the check.
    response = httpx.post(f"{url}/gradio_api/call/text_to_video", json={"data": VALUES}, timeout=30)
    assert response.status_code == 200 and response.json()["event_id"]


def test_extra_values_in_an_api_call_are_refused(served, caplog):
    """Refused when posted (HTTP 422, Gradio's validation-error shape), before Gradio reads the values."""
    import logging

    url, _ = served
    caplog.set_level(logging.INFO, logger="lumiere.app")
    response = httpx.post(f"{url}/gradio_api/call/text_to_video", json={"data": VALUES + ["surprise"]}, timeout=30)
    assert response.status_code == 422
    [detail] = response.json()["detail"]
    assert detail["message"] == ("/text_to_video takes 11 values (prompt, negative_prompt, reference_guided, loop, "
                                 "seed, num_frames, steps, guidance_scale, super_resolve, sampler, fps) but the "
                                 "request sent 12. Send exactly these, in this order, or call it by name.")
    assert detail["__type__"] == "validate" and detail["is_valid"] is False
    assert any("rejected text_to_video request: /text_to_video takes 11 values" in r.getMessage()
               for r in caplog.records)


def test_forged_forwarded_for_does_not_escape_the_address_limit(served, monkeypatch):
    """On a Space (one trusted proxy) a script that opens a new session per request and writes a fresh
    X-Forwarded-For each time is still counted by the address the proxy appended: 4 jobs, then refusals."""
    url, manager = served
    monkeypatch.setenv("LUMIERE_PROXY_HOPS", "1")
    hog = Client(url, verbose=False)
    running = hog.submit(**SLOW, api_name="/text_to_video")
    try:
        wait_busy(manager)
        outcomes = []
        for i in range(7):
            forged = {"x-forwarded-for": f"192.0.2.{i}, 203.0.113.7"}  # client's lie, then the proxy's hop
            event = httpx.post(f"{url}/gradio_api/call/text_to_video", headers=forged, timeout=30,
                               json={"data": ["a green square", "", False, False, i, None, 1, None, False, None, None]})
            outcomes.append((event.status_code, event.json()))
        refused = [body for status, body in outcomes if status != 200 or "event_id" not in body]
        accepted = [body["event_id"] for status, body in outcomes if status == 200 and "event_id" in body]
        assert len(accepted) == 4, outcomes
        assert len(refused) == 3 and all("network address already has 4" in str(body) for body in refused), refused
    finally:
        stop_all(manager, hog, [running])


def test_eight_honest_local_clients_are_all_served(served):
    """Clients on this machine share 127.0.0.1: only the per-session limit applies to them."""
    url, manager = served
    hog = Client(url, verbose=False)
    running = hog.submit(**SLOW, api_name="/text_to_video")
    wait_busy(manager)
    clients = [Client(url, verbose=False) for _ in range(8)]
    jobs = [client.submit(prompt="a blue circle moving left", seed=i, api_name="/text_to_video", **FAST)
            for i, client in enumerate(clients)]
    time.sleep(1.0)
    assert not any(job.done() for job in jobs)  # queued behind the hog, none refused
    stop_all(manager, hog, [running])
    seeds = sorted(job.result(timeout=180)[1] for job in jobs)
    assert seeds == list(range(8))


# ----------------------------------------------------------------------------- the app's one error boundary
def test_error_boundary_tells_a_bug_from_a_bad_input(caplog):
    import logging

    import gradio as gr

    from app.ui import INTERNAL_ERROR, error_boundary
    from lumiere.errors import InputError

    caplog.set_level(logging.INFO, logger="lumiere.app")
    ended = []
    with pytest.raises(gr.Error) as info:
        with error_boundary("text_to_video", lambda: ended.append(True)):
            raise ZeroDivisionError("a bug")
    assert info.value.message == INTERNAL_ERROR and "check your input" not in str(info.value.title).lower()
    assert ended == [True]
    bug = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ZeroDivisionError]
    assert len(bug) == 1 and bug[0].levelno == logging.ERROR  # the full traceback is in the log
    caplog.clear()
    with pytest.raises(gr.Error) as info:
        with error_boundary("text_to_video"):
            raise InputError("Seed must be a whole number, got 'lucky'.")
    assert info.value.message == "Seed must be a whole number, got 'lucky'." and info.value.title == "Check your input"
    assert not any(r.exc_info for r in caplog.records)  # a user's mistake logs one line, no traceback


def test_an_unexpected_error_in_a_handler_shows_the_generic_message(served, monkeypatch, caplog):
    """A bug inside a Generate handler reaches the client as the internal-error message (not "check your
    input") and its traceback reaches the server log; a LumiereError reaches the client as its own message."""
    import logging

    from app import inputs
    from app.ui import INTERNAL_ERROR
    from lumiere.errors import InputError

    url, _ = served
    caplog.set_level(logging.INFO, logger="lumiere.app")
    client = Client(url, verbose=False)

    def buggy(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(inputs, "prompt_text", buggy)
    with pytest.raises(Exception) as info:
        client.predict(prompt="a red circle", api_name="/text_to_video", **FAST)
    assert "inside the app" in str(info.value) and "check your input" not in str(info.value).lower()
    assert INTERNAL_ERROR.split(";")[0] in str(info.value)
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)

    def refused(*args, **kwargs):
        raise InputError("The prompt says nothing this model knows.")

    monkeypatch.setattr(inputs, "prompt_text", refused)
    with pytest.raises(Exception, match="The prompt says nothing this model knows"):
        client.predict(prompt="a red circle", api_name="/text_to_video", **FAST)


# ----------------------------------------------------------------------------- one source of option values
def test_controls_and_checks_share_the_library_options(app_manager):
    """Each control's range and default is the one its server-side check uses, and the library's (the fps
    slider once allowed 1-30 while the check allowed 1-60; the outpaint border, style weight and strength
    defaults were literals that differed from lumiere's)."""
    import inspect

    import gradio as gr

    from app import inputs
    from app.ui import Advanced, Studio, build_demo
    from lumiere import options
    from lumiere.conditioning import outpaint_mask

    demo = build_demo(app_manager)
    sliders = {}
    for block in demo.blocks.values():
        if isinstance(block, gr.Slider):
            sliders.setdefault(block.label, []).append(block)

    def only(prefix):
        found = [s for label, group in sliders.items() if label.startswith(prefix) for s in group]
        assert found, prefix
        return found

    studio = Studio(app_manager)
    for fps in only("Playback fps"):
        assert (fps.minimum, fps.maximum) == (inputs.MIN_FPS, inputs.MAX_FPS)
    assert studio.settings(Advanced(fps=inputs.MAX_FPS)).fps == inputs.MAX_FPS
    with pytest.raises(inputs.InputError, match="between 1 and 60"):
        studio.settings(Advanced(fps=inputs.MAX_FPS + 1))
    for guidance in only("Guidance scale"):
        assert guidance.maximum == options.MAX_GUIDANCE_SCALE
    for steps in only("Denoising steps"):
        assert steps.maximum == inputs.MAX_STEPS
    [weight] = only("Style weight")
    assert weight.value == options.DEFAULT_STYLE_WEIGHT and (weight.minimum, weight.maximum) == inputs.STYLE_WEIGHT_RANGE
    [strength] = only("Strength")
    assert strength.value == options.DEFAULT_STRENGTH
    [border] = only("Border")
    library_border = inspect.signature(outpaint_mask).parameters["border"].default
    assert border.value == inputs.DEFAULT_OUTPAINT_BORDER == library_border
    assert 0 < border.minimum and border.maximum < 0.5  # inside outpaint_mask's open range


# ----------------------------------------------------------------------------- the app's own line for the model
def spy_runs(manager, monkeypatch) -> list:
    """The sessions whose generation reached the model (``ModelManager.run``), in order."""
    runs, run = [], manager.run

    def spy(task, fn, **kwargs):
        runs.append(kwargs.get("session"))
        return run(task, fn, **kwargs)

    monkeypatch.setattr(manager, "run", spy)
    return runs


def wait_for(condition, seconds=30, what="the condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def in_line(manager, session) -> int:
    return sum(ticket.session == session for ticket in manager.tickets())


def test_a_waiting_job_stopped_by_stop_never_runs_the_model(served, monkeypatch):
    """Stop for a session whose job still waits for the model (what the tab's Stop button asks the manager)
    ends that job at once with "stopped", and the model never runs for it; the running job is untouched."""
    url, manager = served
    runs = spy_runs(manager, monkeypatch)
    hog, waiter = Client(url, verbose=False), Client(url, verbose=False)
    running = hog.submit(**SLOW, api_name="/text_to_video")
    try:
        wait_busy(manager)
        waiting = waiter.submit(prompt="a blue circle moving left", api_name="/text_to_video", **FAST)
        wait_for(lambda: in_line(manager, waiter.session_hash) == 1, what="the job to wait in line")

        def shown():  # Gradio's own queue position no longer applies: the job shows its place in the app's line
            progress = waiting.status().progress_data or []
            return any(unit.desc == "Waiting for the model: 1 generation ahead" for unit in progress)

        wait_for(shown, what="the job's place in line to show")
        assert manager.cancel(waiter.session_hash)
        with pytest.raises(Exception, match="stopped"):
            waiting.result(timeout=30)
        assert manager.busy and not running.done()  # the running generation goes on
        assert in_line(manager, waiter.session_hash) == 0
    finally:
        stop_all(manager, hog, [running])
    assert waiter.session_hash not in runs and hog.session_hash in runs


def test_a_client_that_goes_away_while_waiting_frees_its_place(served, monkeypatch):
    """A page (or gradio_client) holds its session open with a heartbeat; when that closes while its jobs wait,
    they leave the line without running the model, and the session may queue again at once."""
    import uuid

    url, manager = served
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.25")  # how soon the server notices the closed heartbeat
    runs = spy_runs(manager, monkeypatch)
    config = httpx.get(f"{url}/config", timeout=30).json()
    [fn_index] = [dep["id"] for dep in config["dependencies"] if dep.get("api_name") == "text_to_video"]
    session = uuid.uuid4().hex[:11]

    def join():
        return httpx.post(f"{url}/gradio_api/queue/join", timeout=30,
                          json={"data": VALUES, "fn_index": fn_index, "session_hash": session})

    hog = Client(url, verbose=False)
    running = hog.submit(**SLOW, api_name="/text_to_video")
    page = httpx.Client(timeout=None)
    heartbeat = page.send(page.build_request("GET", f"{url}/gradio_api/heartbeat/{session}"), stream=True)
    try:
        wait_busy(manager)
        assert [join().status_code for _ in range(2)] == [200, 200]
        wait_for(lambda: in_line(manager, session) == 2, what="both jobs to wait in line")
        refused = join()
        assert refused.status_code == 422 and "already have 2" in refused.text
        heartbeat.close()
        page.close()  # the page goes away
        wait_for(lambda: in_line(manager, session) == 0, what="the closed session's jobs to leave the line")
        again = join()
        assert again.status_code == 200, again.text
        wait_for(lambda: in_line(manager, session) == 1, what="the new job to wait in line")
        manager.cancel(session)
        wait_for(lambda: in_line(manager, session) == 0, what="the new job to be stopped")
    finally:
        stop_all(manager, hog, [running])
    assert session not in runs


# ----------------------------------------------------------------------------- files that are not uploads
def uploaded_file(name: str) -> dict:
    """A file inside the app's upload folder, as the FileData an upload gives."""
    import os
    from pathlib import Path

    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / "test-serving"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_a_file_outside_the_upload_folder_is_refused(served, tmp_path):
    """A FileData naming a server file (directly, or by climbing out of the upload folder) is refused when
    posted, with the field and the fix, before Gradio or the handler reads it."""
    url, _ = served
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n")
    inside = uploaded_file("inside.png")
    climbing = inside["path"].rsplit("/", 1)[0] + "/../../../" + str(outside).lstrip("/")
    advanced = [0, None, 1, None, False, None, None]
    for path in (str(outside), climbing, "/etc/passwd"):
        image = {"path": path, "meta": {"_type": "gradio.FileData"}}
        response = httpx.post(f"{url}/gradio_api/call/image_to_video", timeout=30,
                              json={"data": [image, "a red circle", None, *advanced]})
        assert response.status_code == 422, response.text
        message = response.json()["detail"][0]["message"]
        assert message.startswith("Image got '") and "which is not an uploaded file: upload it first" in message
        assert "handle_file('path/to/file')" in message
    last = {"path": str(outside), "meta": {"_type": "gradio.FileData"}}
    response = httpx.post(f"{url}/gradio_api/call/image_to_video", timeout=30,
                          json={"data": [inside, "a red circle", last, *advanced]})
    assert response.status_code == 422 and "Last frame (last_image) got '" in response.json()["detail"][0]["message"]
    # An upload inside the folder passes the check (the handler then finds it is no real picture).
    response = httpx.post(f"{url}/gradio_api/call/image_to_video", timeout=30,
                          json={"data": [inside, "a red circle", None, *advanced]})
    assert response.status_code == 200 and response.json()["event_id"]


def test_an_image_editor_layer_outside_the_upload_folder_is_refused(served, tmp_path):
    """An image-editor value holds FileData inside (background, layers, composite): each is checked."""
    url, _ = served
    outside = {"path": str(tmp_path / "layer.png"), "meta": {"_type": "gradio.FileData"}}
    background = uploaded_file("background.png")
    advanced = [0, None, 1, None, False, None, None]
    for editor in ({"background": background, "layers": [outside], "composite": None},
                   {"background": background, "layers": [], "composite": outside},
                   {"background": outside, "layers": [], "composite": None},
                   {"background": background, "layers": ["/etc/passwd"], "composite": None}):
        response = httpx.post(f"{url}/gradio_api/call/cinemagraph", timeout=30,
                              json={"data": [editor, "a yellow circle", None, False, *advanced]})
        assert response.status_code == 422, response.text
        message = response.json()["detail"][0]["message"]
        assert message.startswith("Image got '") and "not an uploaded file" in message, message


def test_the_line_has_a_size_and_unclaimed_reservations_lapse():
    """At most ``line_size`` jobs wait (the one running aside); a job let in but never started (Gradio dropped
    it) stops counting after a few seconds; a started job claims its reservation instead of counting twice."""
    from app import serving
    from app.model_manager import ModelManager

    manager = ModelManager("never-opened")
    admission = serving.Admission(manager, serving.ClientLimit(per_session=2, per_ip=4, line_size=3))
    tickets = [manager.join(f"s{i}", f"203.0.113.{i}") for i in range(4)]  # one running, three waiting
    message, _ = admission.reserve("new", "198.51.100.1")
    assert "3 generations are already waiting for the model" in message
    manager.leave(tickets[0])
    message, reservation = admission.reserve("new", "198.51.100.1")
    assert message is None and admission.count(session="new") == 1
    ticket = admission.join("new", "198.51.100.1")
    assert admission.count(session="new") == 1 and ticket.session == "new"
    manager.leave(ticket)
    assert admission.count(session="new") == 0
    message, reservation = admission.reserve("new", "198.51.100.1")
    assert message is None and admission.count(session="new") == 1
    assert reservation.expires - time.monotonic() <= serving.RESERVATION_SECONDS
    reservation.expires = time.monotonic() - 0.01  # as if RESERVATION_SECONDS had passed
    assert admission.count(session="new") == 0
