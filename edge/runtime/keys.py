"""CURVE keys: `facesleuth keys generate DIR`, `facesleuth keys allow DIR CLIENT.key`, and the per-run keys
of a tcp graph.

A key directory holds two ZeroMQ certificate pairs (Z85 text files written by pyzmq's zmq.auth):
`server.key`/`server.key_secret` for the sockets that bind (node outputs, the events node's endpoints) and
`client.key`/`client.key_secret` for the sockets that connect (node inputs, `facesleuth subscribe`). A client
must know the server's public key to complete the CURVE handshake, and its own public key must be on the
directory's allow-list: `client.key` and every public key file in `allowed/` (`keys allow` copies one
there; re-read when it changes, see AllowList). A client with any other key pair gets nothing
(edge.runtime.zap). Copy only `server.key` and a client pair to a subscribing machine; `server.key_secret`
stays on the device. docs/security.md has the whole picture.

A graph with `endpoints: tcp` secures every link even without `keys:`: the runner makes a server and a
client pair per node for each run (`run_keys`), and allows only those client keys plus the run's own tap
key (for `facesleuth subscribe NODE.PORT`, kept 0600 in the private run directory). Another user of the
host reaches the loopback ports but holds no allowed key, so it reads no frame and takes no event.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from edge.errors import UserError
from edge.runtime.transport import Curve

ALLOWED_DIR = "allowed"

log = logging.getLogger(__name__)


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


def allowed_clients(directory: str | Path) -> set[bytes]:
    """The client public keys (Z85) a key directory lets in: `client.key` and `allowed/*.key`."""
    d = Path(directory)
    files = [d / "client.key", *sorted((d / ALLOWED_DIR).glob("*.key"))]
    keys = set()
    for f in files:
        if not f.is_file():
            continue
        try:
            keys.add(zmq.auth.load_certificate(str(f))[0])
        except (OSError, ValueError) as e:
            raise UserError(f"allowed client key {f} unusable ({e})") from None
    return keys


class AllowList:
    """The allowed client keys of a key directory, read again when `allowed/` (or `client.key`) changes, so
    `keys allow` (and removing a file from `allowed/`) takes effect for the next connection without a
    restart. A connection already made stays until it closes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._stamp = self._files_stamp()
        self._keys = frozenset(allowed_clients(self.directory))  # a bad file at start: one clear error

    def _files_stamp(self) -> tuple[float, ...]:
        stamps = []
        for p in (self.directory / ALLOWED_DIR, self.directory / "client.key"):
            try:
                stamps.append(p.stat().st_mtime_ns)
            except OSError:
                stamps.append(-1)
        return tuple(stamps)

    def __call__(self) -> frozenset[bytes]:
        stamp = self._files_stamp()
        if stamp != self._stamp:
            try:
                self._keys = frozenset(allowed_clients(self.directory))
                log.info("allow-list of %s: %d client key(s)", self.directory, len(self._keys))
            except UserError as e:  # keep the last good list; the next change is read again
                log.warning("allow-list of %s not reloaded: %s", self.directory, e)
            self._stamp = stamp
        return self._keys


def allow(directory: str | Path, public_file: str | Path, name: str | None = None) -> Path:
    """Copy a client's public key file into DIR/allowed/ (checked first; a secret key file is refused)."""
    d, src = Path(directory), Path(public_file)
    if not (d / "server.key_secret").is_file():
        raise UserError(f"{d} is not a key directory with a server key (facesleuth keys generate {d})")
    try:
        public, secret = zmq.auth.load_certificate(str(src))
    except (OSError, ValueError) as e:
        raise UserError(f"{src}: not a CURVE public key file ({e})") from None
    if secret is not None:
        raise UserError(f"{src} holds a secret key: give the public key file (NAME.key) only")
    stem = name or src.stem
    if not stem.replace("_", "").replace("-", "").replace(".", "").isalnum() or stem.startswith("."):
        raise UserError(f"--name {stem!r}: use letters, digits, '.', '_' and '-' (a file name under {ALLOWED_DIR}/)")
    dest = d / ALLOWED_DIR / f"{stem}.key"
    dest.parent.mkdir(exist_ok=True)
    if dest.exists():
        try:
            same = zmq.auth.load_certificate(str(dest))[0] == public
        except (OSError, ValueError):
            same = False
        if not same:
            raise UserError(f"{dest} exists with another key: choose another --name")
    shutil.copyfile(src, dest)
    return dest


def _pair() -> dict[str, str]:
    public, secret = zmq.curve_keypair()
    return {"public": public.decode(), "secret": secret.decode()}


def run_keys(nodes: list[str], keys_dir: Path | None) -> dict[str, Any]:
    """Per-run CURVE material of a graph: for each node a server pair (the key directory's, if the graph
    names one, so remote subscribers keep working) and its own client pair; a tap client pair; and the
    allow-list of the run: every one of these client keys. The key directory's own allowed clients are not
    copied in: each node reads them itself (AllowList), so `keys allow` and removals apply while it runs."""
    fixed = load_curve(keys_dir) if keys_dir else None
    if keys_dir:
        allowed_clients(keys_dir)  # a bad file in allowed/: one clear error now, before any node starts
    out: dict[str, Any] = {"nodes": {}, "tap": _pair()}
    for n in nodes:
        server = {"public": fixed.server_public.decode(), "secret": fixed.server_secret.decode()} \
            if fixed and fixed.server_secret else _pair()
        out["nodes"][n] = {"server": server, "client": _pair()}
    out["allowed"] = sorted({out["tap"]["public"], *(v["client"]["public"] for v in out["nodes"].values())})
    return out


def node_curve(keys: dict[str, Any], node: str) -> dict[str, str]:
    """A node's Curve fields (as a spec file holds them) from `run_keys`."""
    own = keys["nodes"][node]
    return {"server_public": own["server"]["public"], "server_secret": own["server"]["secret"],
            "client_public": own["client"]["public"], "client_secret": own["client"]["secret"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = sub.add_parser("generate", help="create server and client CURVE key pairs in DIR")
    g.add_argument("dir", help="key directory (created)")
    a = sub.add_parser("allow", help="let a client's public key in (copied to DIR/allowed/)")
    a.add_argument("dir", help="key directory made by `keys generate`")
    a.add_argument("public_key", help="the client's public key file (e.g. its client.key)")
    a.add_argument("--name", help="file name under allowed/ (default: the key file's name)")


def main(args: argparse.Namespace) -> int:
    if args.action == "allow":
        dest = allow(args.dir, args.public_key, args.name)
        print(f"allowed {dest}: nodes serving with {args.dir} (an events node's `keys`, a graph's `keys:`) let "
              "this client in from its next connection")
        return 0
    d = generate(args.dir)
    print(f"CURVE keys written to {d}: server.key(_secret), client.key(_secret). "
          f"Set `keys: {d}` in the graph to bind non-loopback tcp endpoints; "
          f"`facesleuth keys allow {d} CLIENT.key` lets another client in.")
    return 0
