"""Who may connect to a CURVE server socket: a ZAP handler with an allow-list of client public keys.

CURVE alone only proves that a client knows the server's public key, which is public: any fresh key pair
completes the handshake. libzmq asks the ZAP handler of the socket's context (RFC 27, ZeroMQ
Authentication Protocol, on `inproc://zeromq.zap.01`) about every CURVE handshake; this one answers 200
for a client key on the allow-list and 400 for any other, so a refused client's connection is closed
before a single message reaches it. One handler per zmq context, started before the context's first CURVE
server binds (libzmq lets every client in while no handler is bound).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable

import zmq
import zmq.utils.z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
DOMAIN = b"facesleuth"

log = logging.getLogger(__name__)


class ZapHandler:
    """Answers the ZAP requests of `ctx`: CURVE clients whose public key (Z85) is in `allowed` get in.
    `allowed` is a fixed set, or a callable asked at each handshake (a list that can change while running,
    e.g. edge.runtime.keys.AllowList)."""

    def __init__(self, ctx: zmq.Context, allowed: Iterable[bytes] | Callable[[], Collection[bytes]]) -> None:
        if callable(allowed):
            self._allowed = allowed
        else:
            fixed = frozenset(bytes(k) for k in allowed)
            self._allowed = lambda: fixed
        self.accepted = 0
        self.denied = 0
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)  # bound here, before any server socket of `ctx` can handshake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # version, request id, domain, address, routing id, mechanism, credentials...
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            return [ZAP_VERSION, frames[1] if len(frames) > 1 else b"", b"500", b"malformed request", b"", b""]
        request_id, address, mechanism = frames[1], frames[3], frames[5]
        key = zmq.utils.z85.encode(frames[6]) if mechanism == b"CURVE" and len(frames) == 7 and \
            len(frames[6]) == 32 else None
        if key is not None and key in self._allowed():
            self.accepted += 1
            return [ZAP_VERSION, request_id, b"200", b"OK", key, b""]
        self.denied += 1
        if self.denied <= 10 or self.denied % 100 == 0:
            log.warning("refused a %s client from %s: its key is not on the allow-list (%d refused so far)",
                        mechanism.decode(errors="replace"), address.decode(errors="replace") or "?", self.denied)
        return [ZAP_VERSION, request_id, b"400", b"client key not allowed", b"", b""]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._sock.poll(100):
                    continue
                frames = self._sock.recv_multipart()
            except zmq.ZMQError:  # the context is going away
                return
            try:
                reply = self._answer(frames)
            except Exception as e:  # never let the handler die: libzmq would then wait on it forever
                log.error("ZAP request failed (%s: %s): refused", type(e).__name__, e)
                reply = [ZAP_VERSION, frames[1] if len(frames) > 1 else b"", b"500", b"internal error", b"", b""]
            try:
                self._sock.send_multipart(reply)
            except zmq.ZMQError:  # the context is going away
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(0)
