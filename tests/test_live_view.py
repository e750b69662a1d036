"""The live view (edge.live, nodes/view.py): the page in a real headless Chromium on the demo graph run with
`--view`, and the server's parts in-process: the drawn frame, the MJPEG stream, the ROI-motion samples and
events, who may connect (loopback Host only; elsewhere TLS and a token), one-line refusals."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from conftest import REPO, free_tcp_port, need, wait_until

from edge.cli import main as cli
from edge.errors import UserError
from edge.live.server import COOKIE, LiveServer
from edge.live.state import GROUPS, LiveState
from edge.runtime.messages import Message
from edge.runtime.node import get_node_class

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


# ----------------------------------------------------------------------------------- in-process parts


def _messages(frame: int, mouth_px: float) -> tuple[Message, Message, Message]:
    """A frame, its crops (one face) and its flows, with `mouth_px` of motion in the mouth ROIs only."""
    rng = np.random.default_rng(frame)
    img = rng.integers(0, 255, (240, 320, 3), np.uint8)
    t = 1_000_000_000 + frame * 33_333_333
    base = Message("frame", "cam0", frame, frame, t, t, {"fps": 30.0}, {"image": img})
    crops = base.derive("crops", {"head_motion": [0.2], "ended": []}, {
        "crops": rng.integers(0, 255, (1, 128, 128), np.uint8), "track_ids": np.array([5], np.int32),
        "boxes": np.array([[100, 60, 90, 90]], np.float32), "points": np.array([[[40, 46], [87, 46]]], np.float32),
        "residual": np.array([0.3], np.float32), "transforms": np.zeros((1, 2, 3), np.float32)})
    flow = np.zeros((1, 2, 128, 128), np.float32)
    flow[0, 1, 86:104, 34:94] = mouth_px  # mouth_left and mouth_right (edge.perception.geometry): down
    flows = base.derive("flows", {"scale": 1.0}, {"flows": flow, "track_ids": np.array([5], np.int32),
                                                  "ref_frames": np.array([frame - 3])})
    return base, crops, flows


def _event(onset_frame: int, offset_frame: int) -> Message:
    def point(f: int) -> dict:
        return {"frame": f, "t_mono_ns": 1_000_000_000 + f * 33_333_333, "t_wall_ns": 0}

    return Message("event", "cam0", meta={"seq": 7, "stream": "cam0", "track_id": 5, "kind": "micro",
                                          "label": "surprise", "confidence": 0.9, "onset": point(onset_frame),
                                          "apex": point(onset_frame + 3), "offset": point(offset_frame),
                                          "duration_s": 0.3, "rois": ["mouth_left"]})


@pytest.fixture
def server():
    state = LiveState()
    srv = LiveServer(state, "127.0.0.1", 0, max_fps=60)
    srv.start()
    yield srv
    srv.stop()


def _get(srv: LiveServer, path: str, host: str | None = None, headers: dict | None = None
         ) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{srv.port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_server_draws_the_frame_and_serves_plot_samples_and_events(server):
    state = server.state
    status, headers, page = _get(server, "/")
    assert status == 200 and b"<canvas" in page and b"/stream.mjpg" in page
    assert "default-src 'self'" in headers["Content-Security-Policy"], "nothing on the page from elsewhere"
    for asset in ("/", "/app.js", "/style.css"):
        assert b"://" not in _get(server, asset)[2], f"{asset} names nothing elsewhere"
    assert _get(server, "/frame.jpg")[0] == 204, "no frame yet"
    for k in range(6):
        frame, crops, flows = _messages(k, 2.0 if k >= 3 else 0.0)
        state.add_frame(frame)
        state.add_crops(crops)
        state.add_flows(flows)
    state.add_event(_event(3, 5))

    status, _, jpg = _get(server, "/frame.jpg")
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and img.shape == (3 * 128, 320 + 2 * 128, 3), "frame beside a [crop | flow] panel"
    box_edge = img[60:150, 100].astype(int)
    assert (np.abs(box_edge - (80, 220, 80)).max(axis=1) < 60).mean() > 0.8, "the face box is drawn (green)"
    assert img[:128, 320 + 128:].max() > 100, "the flow of the mouth shows as colour"

    doc = json.loads(_get(server, "/state.json?roi=2")[2])
    assert doc["frame"] == 5 and doc["frames_in"] == 6 and doc["stream"] == "cam0"
    assert [s[0] for s in doc["roi"]] == [3, 4, 5, 6], "only the samples after roi=2"
    assert [s["name"] for s in doc["series"]] == GROUPS
    values = dict(zip(GROUPS, doc["roi"][-1][3], strict=True))
    assert values["mouth"] == pytest.approx(2.0, abs=0.25) and max(v for g, v in values.items() if g != "mouth") < 0.3
    assert doc["roi"][-1][1] == pytest.approx(5 / 30, abs=0.01), "seconds since the stream's first frame"
    ev = doc["events"][0]
    assert (ev["seq"], ev["kind"], ev["label"], ev["onset_frame"]) == (7, "micro", "surprise", 3)
    assert ev["onset_s"] == pytest.approx(0.1, abs=0.001) and ev["offset_s"] == pytest.approx(5 / 30, abs=0.001)


def test_mjpeg_and_event_stream_send_the_newest(server):
    state = server.state
    for k in range(3):
        for m, add in zip(_messages(k, 1.0), (state.add_frame, state.add_crops, state.add_flows), strict=True):
            add(m)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/stream.mjpg")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    assert r.readline() == b"--frame\r\n" and r.readline() == b"Content-Type: image/jpeg\r\n"
    n = int(r.readline().split(b":")[1])
    r.readline()
    assert r.read(n)[:2] == b"\xff\xd8", "a JPEG"
    conn.close()

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/events")
    r = conn.getresponse()
    assert r.getheader("Content-Type") == "text/event-stream"
    assert r.readline() == b"event: hello\n"
    hello = json.loads(r.readline()[len(b"data: "):])
    assert [s["name"] for s in hello["series"]] == GROUPS and all(s["colour"].startswith("#") for s in hello["series"])
    r.readline()
    assert r.readline() == b"event: update\n"
    first = json.loads(r.readline()[len(b"data: "):])
    assert first["roi_n"] == 3 and first["frame"] == 2
    r.readline()
    state.add_event(_event(1, 2))  # pushed as it comes
    assert r.readline() == b"event: update\n"
    assert json.loads(r.readline()[len(b"data: "):])["events"][0]["seq"] == 7
    conn.close()


def test_only_loopback_hosts_and_token_holders_get_in(server, tmp_path):
    assert _get(server, "/", host="attacker.example:80")[0] == 403, "a DNS-rebinding page is refused"
    assert _get(server, "/", host=f"localhost:{server.port}")[0] == 200

    srv = LiveServer(LiveState(), "127.0.0.1", 0, token="t" * 20)
    srv.start()
    try:
        assert _get(srv, "/")[0] == 403
        assert _get(srv, "/?token=wrong")[0] == 403
        status, headers, _ = _get(srv, "/?token=" + "t" * 20)
        assert status == 303 and headers["Location"] == "/" and headers["Set-Cookie"].startswith(f"{COOKIE}=")
        assert "HttpOnly" in headers["Set-Cookie"]
        assert _get(srv, "/state.json", headers={"Cookie": headers["Set-Cookie"].split(";")[0]})[0] == 200
    finally:
        srv.stop()
    with pytest.raises(UserError, match="not loopback"):
        LiveServer(LiveState(), "0.0.0.0", 0)


def test_tls_with_a_token(tmp_path):
    need("openssl", bool(shutil.which("openssl")), "openssl not installed")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    token = tmp_path / "token"
    token.write_text("s3cret-token-of-20-chars\n")
    view = get_node_class("view").for_test("view", {"port": 0, "tls_cert": str(cert), "tls_key": str(key),
                                                    "token_file": str(token)})
    view.setup()
    try:
        assert view.server.url.startswith("https://")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # the test's own throwaway certificate: not verified
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"https://127.0.0.1:{view.server.port}/state.json", context=ctx, timeout=5)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                             urllib.request.HTTPCookieProcessor())
        with opener.open(f"https://127.0.0.1:{view.server.port}/?token=s3cret-token-of-20-chars", timeout=5) as r:
            assert r.status == 200 and b"<canvas" in r.read(), "redirected to the page, the cookie set"
        plain = http.client.HTTPConnection("127.0.0.1", view.server.port, timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):  # plain HTTP on the TLS port gets nothing
            plain.request("GET", "/state.json")
            plain.getresponse()
        plain.close()
    finally:
        view.teardown()


def test_bad_view_settings_are_one_line_before_any_work(write_graph, capsys):
    graph = write_graph("""
        nodes:
          - {name: cam, type: pattern, params: {width: 64, height: 48}}
          - {name: view, type: view, params: {bind: 0.0.0.0}}
        connections:
          - cam.frames -> view.frames
    """)
    assert cli(["graph", "validate", str(graph)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "0.0.0.0 is not loopback" in err and "tls_cert" in err
    graph = write_graph("""
        nodes:
          - {name: cam, type: pattern, params: {width: 64, height: 48}}
          - {name: mon, type: monitor}
        connections:
          - cam.frames -> mon.messages
    """, "plain.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        t0 = time.monotonic()
        assert cli(["run", str(graph), "--view", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not free" in err and time.monotonic() - t0 < 2, err
    assert cli(["run", str(graph), "--view", "70000"]) == 2
    assert "not 0..65535" in capsys.readouterr().err


# --------------------------------------------------------------------------------- in a real browser


class WebDriver:
    """Just enough of the W3C WebDriver protocol (plain HTTP + JSON) to drive chromedriver."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 20) -> object:
        req = urllib.request.Request(self.base + path, method=method, headers={"Content-Type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())["value"]

    def start(self, binary: str) -> None:
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"]
        caps = {"browserName": "chrome", "pageLoadStrategy": "eager",
                "goog:chromeOptions": {"binary": binary, "args": args}}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def js(self, script: str) -> object:
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})


PAGE_STATE = """
const img = document.getElementById('frames');
return {width: img.naturalWidth, height: img.naturalHeight, frame: document.getElementById('frame').textContent,
        conn: document.getElementById('conn').textContent,
        events: [...document.querySelectorAll('#event-rows tr')].map(r => r.textContent)};
"""


@pytest.fixture
def browser():
    need("chromium", bool(CHROMIUM and CHROMEDRIVER),
         "chromium / chromedriver not installed (Debian: apt-get install chromium chromium-driver)")
    port = free_tcp_port()
    proc = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = WebDriver(port)

    def ready() -> bool:
        try:
            return bool(driver.call("GET", "/status", timeout=1)["ready"])
        except OSError:
            return False

    try:
        wait_until(ready, 10, "chromedriver")
        driver.start(CHROMIUM)
        yield driver
    finally:
        if driver.session:
            try:
                driver.call("DELETE", f"/session/{driver.session}", timeout=5)
            except OSError:
                pass
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_demo_with_view_in_headless_chromium(run_graph, browser, tmp_path):
    """`facesleuth run configs/demo.yaml --view PORT`, its synthetic source cut to 8 s with three clear
    micro-expressions: the page in Chromium shows frames (the image has a size, the frame counter moves)
    and the event's row; a screenshot of it is kept (tmp_path/live-view.png)."""
    port = free_tcp_port()
    synthetic = {"preset": "webcam30", "seed": 7, "duration_s": 8,
                 # Three, so that one survives a loaded machine: the live graph drops frames under load, and
                 # a micro whose onset frame was dropped is rightly discarded as noisy.
                 "script": [{"t": t, "kind": "micro", "label": "surprise", "amplitude_px": 3.0}
                            for t in (2.0, 4.0, 6.0)]}
    g = run_graph(REPO / "configs" / "demo.yaml", "--view", str(port),
                  "--set", f"capture.synthetic={json.dumps(synthetic)}",
                  "--set", f"capture.truth={tmp_path / 'truth.json'}", "--set", f"scorecard.truth={tmp_path / 'truth.json'}",
                  "--set", f"scorecard.out={tmp_path / 'score.json'}", "--set", f"events.db={tmp_path / 'events.db'}",
                  "--set", "events.jsonl=null", "--set", "events.pub=tcp://127.0.0.1:*",
                  "--set", "events.replay=tcp://127.0.0.1:*")
    url = f"http://127.0.0.1:{port}/"

    def page_up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False

    g.wait_for(page_up, 20, "the view's page")
    browser.call("POST", f"/session/{browser.session}/url", {"url": url})
    first = g.wait_for(lambda: (s := browser.js(PAGE_STATE))["width"] > 0 and s["frame"] != "-" and s,
                       15, "a frame on the page")
    assert first["width"] == 640 + 2 * 128 and first["height"] == 480, first
    seen = g.wait_for(lambda: (s := browser.js(PAGE_STATE))["events"] and s, 15, "an event row on the page")
    assert int(seen["frame"]) > int(first["frame"]), "the frame counter moved on"
    assert "micro" in seen["events"][0] and "surprise" in seen["events"][0], seen["events"]
    assert seen["conn"] in ("live", "stream ended"), seen
    png = base64.b64decode(browser.call("GET", f"/session/{browser.session}/screenshot"))
    (tmp_path / "live-view.png").write_bytes(png)
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert shot.shape[1] == 1400 and shot[100:500, 20:660].std() > 20, "the frames are on the screenshot"
