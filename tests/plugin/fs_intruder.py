"""Another local user trying to read and take a running graph's streams (tests/test_runtime_security.py
runs this source as `python -c` under a second uid, so it needs only pyzmq and msgpack, no checkout).

It gets, on stdin, everything a snooping user could learn (endpoints, public server keys, the routing ids
of the lossless consumers) as JSON:

    {"subs": [{"name", "endpoint", "server_key"}],             # latest-wins outputs (XPUB) and events.pub
     "dealers": [{"name", "endpoint", "server_key", "peer"}],  # lossless links (ROUTER) and replay
     "files": [path, ...], "hello": "hello", "seconds": 1.5}

and connects to each twice, without CURVE and with a fresh CURVE key pair (the server's public key is
public): SUBs subscribe to everything, DEALERs take the consumer's routing id and say hello (which makes a
producer resend what is unacknowledged) or, on replay, ask for every event. It prints `ready` once it has
connected, then after `seconds` one JSON line: messages received per socket, and what reading each file
gave.
"""

import json
import sys
import time

import msgpack
import zmq


def main() -> None:
    cfg = json.load(sys.stdin)
    ctx = zmq.Context()
    socks: dict[str, zmq.Socket] = {}
    for kind, entries in ((zmq.SUB, cfg["subs"]), (zmq.DEALER, cfg["dealers"])):
        for e in entries:
            for how in ("plain", "curve"):
                s = ctx.socket(kind)
                s.linger = 0
                if how == "curve":
                    public, secret = zmq.curve_keypair()
                    s.curve_publickey, s.curve_secretkey = public, secret
                    s.curve_serverkey = e["server_key"].encode()
                if kind == zmq.SUB:
                    s.setsockopt(zmq.SUBSCRIBE, b"")
                else:
                    s.routing_id = e.get("peer", "").encode() or b"intruder"
                s.connect(e["endpoint"])
                if kind == zmq.DEALER:
                    body = cfg["hello"].encode() if e.get("peer") else msgpack.packb({"since": 0, "limit": 10000})
                    s.send(body, zmq.NOBLOCK)  # queued until a handshake completes (it never should)
                socks[f"{e['name']}/{how}"] = s
    files = {}
    for path in cfg["files"]:
        try:
            with open(path, "rb") as f:
                files[path] = f"read {len(f.read())} bytes"
        except OSError as err:
            files[path] = type(err).__name__
    print("ready", flush=True)
    got = dict.fromkeys(socks, 0)
    poller = zmq.Poller()
    for s in socks.values():
        poller.register(s, zmq.POLLIN)
    names = {s: n for n, s in socks.items()}
    deadline = time.monotonic() + float(cfg["seconds"])
    while (left := deadline - time.monotonic()) > 0:
        for s, _ in poller.poll(int(left * 1000)):
            s.recv_multipart()
            got[names[s]] += 1
    print(json.dumps({"received": got, "files": files}), flush=True)
    for s in socks.values():
        s.close(0)
    ctx.term()


main()
