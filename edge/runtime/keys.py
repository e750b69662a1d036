"""CURVE keys for tcp endpoints on non-loopback addresses: `facesleuth keys generate DIR`.

The directory holds two ZeroMQ certificate pairs (Z85 text files written by pyzmq's zmq.auth):
`server.key`/`server.key_secret` for the sockets that bind (node outputs) and `client.key`/
`client.key_secret` for the sockets that connect (node inputs, `facesleuth subscribe`). A client must know
the server's public key to complete the CURVE handshake; without it, it receives nothing. Copy only
`server.key` and the client pair to a subscribing machine; `server.key_secret` stays on the device.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zmq.auth

from edge.errors import UserError
from edge.runtime.transport import Curve


def generate(directory: str | Path) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        if (d / f"{name}.key_secret").exists():
            raise UserError(f"{d / (name + '.key_secret')} exists: refusing to overwrite keys")
        zmq.auth.create_certificates(str(d), name)
        (d / f"{name}.key_secret").chmod(0o600)
    return d


def load_curve(directory: str | Path) -> Curve:
    """Read a key directory made by `generate()`; one clear error when something is missing. On a
    subscribing machine the directory holds only `server.key` (public) and the client pair: then
    `server_secret` is None, which is all a client needs."""
    d = Path(directory)
    server_file = d / "server.key_secret"
    if not server_file.exists() and (d / "server.key").exists():
        server_file = d / "server.key"
    try:
        server_public, server_secret = zmq.auth.load_certificate(str(server_file))
        client_public, client_secret = zmq.auth.load_certificate(str(d / "client.key_secret"))
    except (OSError, ValueError) as e:
        raise UserError(f"CURVE keys in {d} unusable ({e}); create them with `facesleuth keys generate {d}`") \
            from None
    return Curve(server_public, server_secret, client_public, client_secret)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = sub.add_parser("generate", help="create server and client CURVE key pairs in DIR")
    g.add_argument("dir", help="key directory (created)")


def main(args: argparse.Namespace) -> int:
    d = generate(args.dir)
    print(f"CURVE keys written to {d}: server.key(_secret), client.key(_secret). "
          f"Set `keys: {d}` in the graph to bind non-loopback tcp endpoints.")
    return 0
