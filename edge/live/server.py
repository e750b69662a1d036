"""The live view's HTTP server: the standard library's threaded http.server, one thread per connection.

    GET /              the page (edge/live/static/index.html, with app.js and style.css)
    GET /stream.mjpg   the annotated frames as MJPEG (multipart/x-mixed-replace), at most `max_fps`
    GET /frame.jpg     the newest annotated frame, once (204 before the first frame)
    GET /events        Server-Sent Events: `hello` (the plot's lines), then `update`s: status, new ROI-motion
                       samples, new events (at most UPDATE_HZ a second)
    GET /state.json    the same as one `update`, for polling: ?roi=N&events=M gives what came after those

Each streaming connection sends the newest there is when its browser has taken the last: a slow browser
gets fewer frames, never a backlog, and the pipeline never waits for it (the node keeps only references).

Who may connect: bound to loopback (the default) the server answers only requests whose Host header
names the loopback address and port, so a web page elsewhere cannot read the frames through a DNS
rebinding. Bound elsewhere it requires TLS (a certificate and key) and a token: `/?token=T` once sets a
cookie that the page's later requests carry; any request without either is refused (403).
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edge.errors import UserError
from edge.live.state import LiveState
from edge.runtime.transport import is_loopback

log = logging.getLogger(__name__)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
UPDATE_HZ = 10  # Server-Sent Event updates a second, at most
KEEPALIVE_S = 10.0  # an idle event stream sends a comment this often (proxies and browsers keep it open)
COOKIE = "facesleuth_view"
MIN_TOKEN_CHARS = 16
# Nothing on the page comes from elsewhere, and nothing else may run in it.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self'; connect-src 'self'; "
                    "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def bind_is_loopback(host: str) -> bool:
    return is_loopback(f"tcp://{host}:0")


def read_token(path: str | Path) -> str:
    """The access token in `path` (its first line); UserError when missing or too short to guess."""
    try:
        token = Path(path).read_text().strip().splitlines()[0].strip() if Path(path).stat().st_size else ""
    except OSError as e:
        raise UserError(f"view token file {path}: {e.strerror}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise UserError(f"view token file {path}: the token must have at least {MIN_TOKEN_CHARS} characters "
                        "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())' > FILE`)")
    return token


def tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"view TLS certificate {cert} / key {key}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


class LiveServer(ThreadingHTTPServer):
    """Serves one LiveState. `port` 0 takes a free port (see `.port`). A non-loopback `host` needs `tls`
    and `token` (the node checks its params first; this refuses too)."""

    daemon_threads = True  # streaming connections never hold up the node's exit
    allow_reuse_address = True

    def __init__(self, state: LiveState, host: str = "127.0.0.1", port: int = 0, max_fps: float = 15.0,
                 tls: ssl.SSLContext | None = None, token: str | None = None) -> None:
        self.loopback = bind_is_loopback(host)
        if not self.loopback and (tls is None or not token):
            raise UserError(f"view: {host} is not loopback: TLS (tls_cert, tls_key) and a token (token_file) "
                            "are required")
        self.state, self.max_fps, self.tls, self.token = state, max_fps, tls, token
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            raise UserError(f"view: cannot listen on {host}:{port}: {e.strerror}") from None
        self.port = self.server_address[1]
        self.host = host
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:  # the handshake happens in the connection's own thread (finish_request)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(10.0)
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as e:
                log.debug("view: TLS handshake with %s failed: %s", client_address, e)
                return
            request.settimeout(None)
        super().finish_request(request, client_address)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="live-view", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.state.close()  # streaming threads return
        self.shutdown()
        self.server_close()

    def allowed_hosts(self) -> set[str]:
        return {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]")}


class Handler(BaseHTTPRequestHandler):
    server: LiveServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("view: %s %s", self.address_string(), format % args)

    # -- access ---------------------------------------------------------------------------------------------
    def _allowed(self, query: dict[str, list[str]]) -> bool | str:
        """True, False (refuse), or the token given in the query (accept, and set the cookie)."""
        srv = self.server
        if srv.loopback and srv.token is None:
            return (self.headers.get("Host") or "") in srv.allowed_hosts()
        given = (query.get("token") or [""])[0]
        if given and hmac.compare_digest(given.encode(), srv.token.encode()):
            return given
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), srv.token.encode()):
                return True
        return False

    def _head(self, status: int, ctype: str, length: int | None = None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self._head(status, ctype, len(body), extra)
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        allowed = self._allowed(query)
        if not allowed:
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain")
            return
        if isinstance(allowed, str):  # the token once in the URL: a cookie from now on, and a clean URL
            cookie = f"{COOKIE}={allowed}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if self.server.tls else "")
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Set-Cookie": cookie, "Location": url.path or "/"})
            return
        try:
            if url.path in STATIC:
                name, ctype = STATIC[url.path]
                self._send(HTTPStatus.OK, resources.files("edge.live").joinpath("static", name).read_bytes(), ctype)
            elif url.path == "/stream.mjpg":
                self._mjpeg()
            elif url.path == "/frame.jpg":
                got = self.server.state.jpeg()
                if got is None:
                    self._send(HTTPStatus.NO_CONTENT, b"", "image/jpeg")
                else:
                    self._send(HTTPStatus.OK, got[1], "image/jpeg")
            elif url.path == "/events":
                self._events()
            elif url.path == "/state.json":
                since = self.server.state.since(_int(query, "roi"), _int(query, "events"))
                self._send(HTTPStatus.OK, json.dumps({**self.server.state.hello(), **since}).encode(),
                           "application/json")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
            self.close_connection = True  # the browser went away

    # -- streams --------------------------------------------------------------------------------------------
    def _mjpeg(self) -> None:
        srv, state = self.server, self.server.state
        self._head(HTTPStatus.OK, "multipart/x-mixed-replace; boundary=frame")
        self.close_connection = True
        seen, last = -1, 0.0
        while not state.closed:
            version = state.wait_picture(seen, 1.0)
            if version == seen:
                continue
            wait = 1.0 / srv.max_fps - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)  # then the newest picture, whatever came meanwhile
            got = state.jpeg()
            if got is None:
                seen = version
                continue
            seen, jpg = got
            last = time.monotonic()
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg))
            self.wfile.write(jpg)
            self.wfile.write(b"\r\n")
            self.wfile.flush()

    def _events(self) -> None:
        state = self.server.state
        self._head(HTTPStatus.OK, "text/event-stream")
        self.close_connection = True
        self._sse("hello", state.hello())
        sent = (-1, 0, 0, False)
        roi_n = events_n = 0
        beat = time.monotonic()
        while not state.closed:
            mark = state.wait_change(sent, KEEPALIVE_S)
            if mark != sent:
                upd = state.since(roi_n, events_n)
                roi_n, events_n, sent = upd["roi_n"], upd["events_n"], mark
                self._sse("update", upd)
                beat = time.monotonic()
                time.sleep(1.0 / UPDATE_HZ)  # what comes meanwhile goes out together
            elif time.monotonic() - beat >= KEEPALIVE_S:
                self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
                beat = time.monotonic()

    def _sse(self, event: str, data: dict[str, Any]) -> None:
        self.wfile.write(f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
        self.wfile.flush()


def _int(query: dict[str, list[str]], key: str) -> int:
    try:
        return max(0, int((query.get(key) or ["0"])[0]))
    except ValueError:
        return 0
