"""Node graphs in YAML: strict loading with line numbers, validation, overrides, and `facesleuth graph`.

    name: example                  # graph name (run directory, logs)
    endpoints: ipc                 # ipc (default) | tcp
    bind: 127.0.0.1                # tcp bind address; a non-loopback one needs `keys`
    keys: keys/                    # CURVE key directory (facesleuth keys generate DIR)
    max_msg_bytes: 67108864        # larger messages are rejected by receivers
    defaults:                      # optional: for every node that does not set its own
      restart: {policy: on-failure, max_restarts: 3, backoff_s: 0.5}
    nodes:
      - name: source
        type: example_source
        params: {fps: 30}
        restart: {max_restarts: 5, backoff_s: 1.0}   # its own keys win over `defaults`
        endpoints: {frames: "tcp://127.0.0.1:5555"}   # optional: pin an output port's endpoint
    connections:
      - source.frames -> blur.frames                   # delivery from the message type
      - {from: blur.frames, to: sink.frames, delivery: lossless, queue: 100}  # queue: at most this many
                                                       # unacknowledged messages (1..100000, default 1000)

Every key is checked; an unknown key, type, node, port or param fails with `FILE:LINE: path: reason`.
A node's own `restart` keys win over `defaults.restart`, key by key; a key set in neither takes the
`Restart` default (never, 3 restarts, 0.5 s backoff doubled per restart).
Delivery defaults to latest-wins for frame/crops/flows and lossless for intervals/events.
Overrides: `--set NODE.PARAM=VALUE` (VALUE parsed as YAML; last wins), validated like the file.
String params in the file may name environment variables: `${VAR}` (an error when unset) or
`${VAR:-default}`, e.g. `db: ${STATE_DIRECTORY:-../runs/cam}/events.db` (systemd sets STATE_DIRECTORY).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.errors import UserError
from edge.runtime.delivery import OUTBOX_DEFAULT, OUTBOX_MAX
from edge.runtime.node import Node, get_node_class
from edge.runtime.transport import is_loopback

LOSSLESS_TYPES = {"intervals", "event"}
RESTART_POLICIES = ("never", "on-failure")


class GraphError(UserError):
    """A graph file problem, formatted `FILE:LINE: key.path: reason`."""


# ------------------------------------------------------------------------------ YAML with line numbers


class _LineDict(dict):
    line: int = 0
    lines: dict[str, int]


class _LineList(list):
    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    d = _LineDict()
    d.line, d.lines = node.start_mark.line + 1, {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if key in d:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k_node.start_mark)
        d[key] = loader.construct_object(v_node, deep=True)
        d.lines[key] = k_node.start_mark.line + 1
    return d


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    lst = _LineList(loader.construct_object(n, deep=True) for n in node.value)
    lst.line, lst.lines = node.start_mark.line + 1, [n.start_mark.line + 1 for n in node.value]
    return lst


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _line(obj: Any, key: Any = None) -> int:
    if key is not None and isinstance(obj, _LineDict):
        return obj.lines.get(key, obj.line)
    if key is not None and isinstance(obj, _LineList) and isinstance(key, int) and key < len(obj.lines):
        return obj.lines[key]
    return getattr(obj, "line", 0)


# --------------------------------------------------------------------------------------------- model


@dataclass
class Restart:
    """A node's restart policy; these defaults apply where neither the node nor `defaults:` sets a key."""

    policy: str = "never"  # never | on-failure
    max_restarts: int = 3  # restarts before the node has failed for good
    backoff_s: float = 0.5  # wait before the first restart, s; doubled for each further one


@dataclass
class NodeSpec:
    name: str
    type: str
    cls: type[Node]
    params: dict[str, Any]
    restart: Restart
    endpoints: dict[str, str] = field(default_factory=dict)
    line: int = 0


@dataclass
class Link:
    src: str
    src_port: str
    dst: str
    dst_port: str
    type: str
    delivery: str  # latest | lossless
    queue: int
    line: int = 0

    def __str__(self) -> str:
        return f"{self.src}.{self.src_port} -> {self.dst}.{self.dst_port}"


@dataclass
class Graph:
    name: str
    path: Path
    nodes: dict[str, NodeSpec]
    links: list[Link]
    endpoints: str = "ipc"
    bind: str = "127.0.0.1"
    keys: Path | None = None
    max_msg_bytes: int = 64 * 1024 * 1024

    @property
    def base_dir(self) -> Path:
        return self.path.parent


# ------------------------------------------------------------------------------------------- loading

_TOP_KEYS = {"name", "endpoints", "bind", "keys", "max_msg_bytes", "defaults", "nodes", "connections",
             "description"}
_DEFAULTS_KEYS = {"restart"}
_NODE_KEYS = {"name", "type", "params", "restart", "endpoints", "description"}
_LINK_KEYS = {"from", "to", "delivery", "queue"}
_RESTART_KEYS = {"policy", "max_restarts", "backoff_s"}


def parse_overrides(items: list[str] | None) -> list[tuple[str, str, Any]]:
    """`["flow.backend=dis", ...]` -> [(node, param, value)]; values are YAML (so 3 is an int)."""
    out = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        node, dot, param = key.strip().partition(".")
        if not sep or not dot or not node or not param:
            raise UserError(f"bad override {item!r}: expected NODE.PARAM=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((node, param, value))
    return out


def load_graph(path: str | Path, overrides: list[str] | None = None) -> Graph:
    """Read, check and resolve a graph file. Raises GraphError (one line, with FILE:LINE) on any problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"graph file not found: {path}")
    try:
        doc = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise GraphError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise GraphError(f"{path}: invalid YAML: {e}") from None
    return _build(doc, path, parse_overrides(overrides))


def _err(path: Path, line: int, key: str, msg: str) -> GraphError:
    return GraphError(f"{path}:{line}: {key}: {msg}")


def _check_keys(path: Path, obj: dict, allowed: set[str], where: str) -> None:
    for k in obj:
        if k not in allowed:
            raise _err(path, _line(obj, k), f"{where}{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _typed(path: Path, obj: dict, key: str, typ: type | tuple, where: str, default: Any) -> Any:
    if key not in obj:
        return default
    v = obj[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise _err(path, _line(obj, key), f"{where}{key}", f"expected {names}, got {type(v).__name__} {v!r}")
    return v


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(path: Path, params: dict, where: str) -> dict:
    """`${VAR}` and `${VAR:-default}` in string param values, from the environment."""
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and "${" in value:
            def sub(m: re.Match, key: Any = key) -> str:
                if m.group(1) in os.environ:
                    return os.environ[m.group(1)]
                if m.group(2) is None:
                    raise _err(path, _line(params, key), f"{where}params.{key}",
                               f"environment variable {m.group(1)} is not set (or write ${{{m.group(1)}:-default}})")
                return m.group(2)

            value = _ENV_REF.sub(sub, value)
        out[key] = value
    return out


def _build(doc: Any, path: Path, overrides: list[tuple[str, str, Any]]) -> Graph:
    if not isinstance(doc, dict):
        raise GraphError(f"{path}:1: the graph must be a mapping with `nodes` and `connections`")
    _check_keys(path, doc, _TOP_KEYS, "")
    name = _typed(path, doc, "name", str, "", path.stem)
    endpoints = _typed(path, doc, "endpoints", str, "", "ipc")
    if endpoints not in ("ipc", "tcp"):
        raise _err(path, _line(doc, "endpoints"), "endpoints", f"{endpoints!r} is not ipc or tcp")
    bind = _typed(path, doc, "bind", str, "", "127.0.0.1")
    keys = _typed(path, doc, "keys", str, "", None)
    max_bytes = _typed(path, doc, "max_msg_bytes", int, "", 64 * 1024 * 1024)
    if max_bytes < 4096:
        raise _err(path, _line(doc, "max_msg_bytes"), "max_msg_bytes", f"{max_bytes} is below the minimum 4096")
    raw_nodes = _typed(path, doc, "nodes", list, "", None)
    if not raw_nodes:
        raise _err(path, _line(doc, "nodes") or 1, "nodes", "a graph needs at least one node")

    defaults = _typed(path, doc, "defaults", dict, "", {}) or {}
    _check_keys(path, defaults, _DEFAULTS_KEYS, "defaults.")
    default_restart = _restart(path, defaults, "defaults.", Restart())

    nodes: dict[str, NodeSpec] = {}
    for i, rn in enumerate(raw_nodes):
        where = f"nodes[{i}]."
        if not isinstance(rn, dict):
            raise _err(path, _line(raw_nodes, i), f"nodes[{i}]", "expected a mapping with name and type")
        _check_keys(path, rn, _NODE_KEYS, where)
        for req in ("name", "type"):
            if req not in rn:
                raise _err(path, rn.line, f"{where}{req}", "missing")
        nname = _typed(path, rn, "name", str, where, None)
        if nname in nodes:
            raise _err(path, _line(rn, "name"), f"{where}name", f"duplicate node name {nname!r} "
                       f"(first at line {nodes[nname].line})")
        if not nname.replace("_", "").replace("-", "").isalnum():
            raise _err(path, _line(rn, "name"), f"{where}name", f"{nname!r}: use letters, digits, _ and -")
        ntype = _typed(path, rn, "type", str, where, None)
        try:
            cls = get_node_class(ntype)
        except UserError as e:
            raise _err(path, _line(rn, "type"), f"{where}type", str(e)) from None
        params = _expand_env(path, _typed(path, rn, "params", dict, where, {}) or {}, where)
        for on, op, ov in overrides:
            if on == nname:
                spec = cls.params.get(op)
                if spec is not None and spec.type is Path and isinstance(ov, str):
                    ov = str(Path(ov).expanduser().resolve())  # typed on the command line: relative to cwd
                params[op] = ov
        try:
            resolved = cls.resolve_params(params, path.parent)
        except UserError as e:
            raw_params = rn.get("params") or {}
            bad = next((k for k in raw_params if f"{k!r}" in str(e)), None)
            line = _line(raw_params, bad) if bad else _line(rn, "params") or rn.line
            raise _err(path, line, f"{where}params", str(e)) from None
        restart = _restart(path, rn, where, default_restart)
        eps = dict(_typed(path, rn, "endpoints", dict, where, {}) or {})
        for port in eps:
            if port not in cls.outputs:
                raise _err(path, _line(rn["endpoints"], port), f"{where}endpoints.{port}",
                           f"{ntype} has no output port {port!r} (outputs: {', '.join(cls.outputs) or 'none'})")
        nodes[nname] = NodeSpec(nname, ntype, cls, resolved, restart, eps, rn.line)

    for on, _, _ in overrides:
        if on not in nodes:
            raise UserError(f"override names unknown node {on!r} (nodes: {', '.join(nodes)})")

    conns = _typed(path, doc, "connections", list, "", []) or []
    links = [_link(path, raw, i, _line(conns, i), nodes) for i, raw in enumerate(conns)]
    _check_endpoints(path, nodes, endpoints, bind, keys)
    for n in nodes.values():
        if n.cls.inputs and not any(lk.dst == n.name for lk in links):
            raise _err(path, n.line, f"nodes.{n.name}", "has inputs but nothing is connected to it")
    _check_retained(path, nodes, links)
    return Graph(name, path.resolve(), nodes, links, endpoints, bind,
                 (path.parent / keys).resolve() if keys else None, max_bytes)


def _check_retained(path: Path, nodes: dict[str, NodeSpec], links: list[Link]) -> None:
    """A node that keeps k handled inputs unacknowledged (Node.held: flow's `lag` window, spot's messages
    since its last checkpoint) holds them on every lossless link upstream where producers acknowledge
    after downstream, plus what each of those producers holds itself, up to one that checkpoints: each
    such queue must exceed that, or the producers wait for acknowledgements that wait for more input (a
    batch job that never ends)."""
    for n in nodes.values():
        k0 = n.cls.held(n.params)
        todo, best = [(n.name, k0)], {n.name: k0}
        while k0 > 0 and todo:
            name, k = todo.pop()
            for lk in links:
                if lk.dst != name or lk.delivery != "lossless":
                    continue
                if lk.queue <= k:
                    also = "" if name == n.name else f", and {name} up to {k} of its own for them"
                    raise _err(path, lk.line, f"connections {lk}", f"queue {lk.queue} must be above {k}: {n.name} "
                               f"keeps up to {k0} inputs unacknowledged (to rebuild its state after a restart){also}")
                src = nodes[lk.src]
                up = k + src.cls.held(src.params)
                # A producer with checkpoints keeps what downstream holds in its own (its outboxes), and
                # acknowledges its inputs with them: its upstream holds only its own batch (its own turn).
                if src.cls.checkpoint_every(src.params):
                    continue
                if src.cls.ack_after == "downstream" and best.get(lk.src, -1) < up:
                    best[lk.src] = up
                    todo.append((lk.src, up))


def _restart(path: Path, obj: dict, where: str, base: Restart) -> Restart:
    """The `restart` entry of `obj` (a node or the defaults block): its keys over `base`'s."""
    rr = _typed(path, obj, "restart", (dict, str), where, {})
    if isinstance(rr, str):
        rr = {"policy": rr}
    where = f"{where}restart."
    _check_keys(path, rr, _RESTART_KEYS, where)
    restart = Restart(
        policy=_typed(path, rr, "policy", str, where, base.policy),
        max_restarts=_typed(path, rr, "max_restarts", int, where, base.max_restarts),
        backoff_s=float(_typed(path, rr, "backoff_s", (int, float), where, base.backoff_s)),
    )
    if restart.policy not in RESTART_POLICIES:
        raise _err(path, _line(rr, "policy"), f"{where}policy",
                   f"{restart.policy!r} is not one of {', '.join(RESTART_POLICIES)}")
    return restart


def _endpoint_ref(path: Path, text: Any, line: int, key: str, nodes: dict[str, NodeSpec],
                  output: bool) -> tuple[str, str, str]:
    if not isinstance(text, str) or "." not in text:
        raise _err(path, line, key, f"expected NODE.PORT, got {text!r}")
    nname, port = text.strip().split(".", 1)
    if nname not in nodes:
        raise _err(path, line, key, f"unknown node {nname!r} (nodes: {', '.join(nodes)})")
    ports = nodes[nname].cls.outputs if output else nodes[nname].cls.inputs
    if port not in ports:
        kind = "output" if output else "input"
        raise _err(path, line, key, f"{nodes[nname].type} has no {kind} port {port!r} "
                   f"({kind}s: {', '.join(ports) or 'none'})")
    return nname, port, ports[port].type


def _link(path: Path, raw: Any, i: int, line: int, nodes: dict[str, NodeSpec]) -> Link:
    key = f"connections[{i}]"
    if isinstance(raw, str):
        src, arrow, dst = raw.partition("->")
        if not arrow:
            raise _err(path, line, key, f"expected 'NODE.PORT -> NODE.PORT', got {raw!r}")
        raw = {"from": src.strip(), "to": dst.strip()}
    elif isinstance(raw, dict):
        _check_keys(path, raw, _LINK_KEYS, f"{key}.")
    else:
        raise _err(path, line, key, "expected 'a.out -> b.in' or a mapping with from/to")
    for req in ("from", "to"):
        if req not in raw:
            raise _err(path, line, f"{key}.{req}", "missing")
    s, sp, stype = _endpoint_ref(path, raw["from"], line, f"{key}.from", nodes, output=True)
    d, dp, dtype = _endpoint_ref(path, raw["to"], line, f"{key}.to", nodes, output=False)
    if dtype != "any" and stype != dtype:
        raise _err(path, line, key, f"message type mismatch: {s}.{sp} sends {stype!r}, {d}.{dp} takes {dtype!r}")
    delivery = raw.get("delivery", "lossless" if stype in LOSSLESS_TYPES else "latest")
    if delivery not in ("latest", "lossless"):
        raise _err(path, line, f"{key}.delivery", f"{delivery!r} is not latest or lossless")
    queue = raw.get("queue", OUTBOX_DEFAULT)
    if isinstance(queue, bool) or not isinstance(queue, int) or not 1 <= queue <= OUTBOX_MAX:
        raise _err(path, line, f"{key}.queue", f"expected an int from 1 to {OUTBOX_MAX} (a lossless link's "
                   f"unacknowledged messages), got {queue!r}")
    return Link(s, sp, d, dp, stype, delivery, queue, line)


def _check_endpoints(path: Path, nodes: dict[str, NodeSpec], kind: str, bind: str, keys: str | None) -> None:
    seen: dict[str, str] = {}
    for n in nodes.values():
        for port, ep in n.endpoints.items():
            if ep in seen:
                raise _err(path, n.line, f"nodes.{n.name}.endpoints.{port}",
                           f"endpoint {ep} already used by {seen[ep]}")
            seen[ep] = f"{n.name}.{port}"
            if not is_loopback(ep) and not keys:
                raise _err(path, n.line, f"nodes.{n.name}.endpoints.{port}",
                           f"{ep} is not loopback: set `keys:` (facesleuth keys generate DIR) to use CURVE")
    if kind == "tcp" and not is_loopback(f"tcp://{bind}:0") and not keys:
        raise GraphError(f"{path}: bind: {bind} is not loopback: CURVE keys are required "
                         "(facesleuth keys generate DIR, then `keys: DIR` in the graph)")


# ------------------------------------------------------------------------------------------ showing


def describe(graph: Graph, show_params: bool = False) -> str:
    lines = [f"graph {graph.name} ({graph.path}), endpoints={graph.endpoints}"]
    for n in graph.nodes.values():
        doc = (n.cls.__doc__ or "").strip().splitlines()
        lines.append(f"  {n.name} [{n.type}] restart={n.restart.policy}  {doc[0] if doc else ''}".rstrip())
        if show_params:
            for k, v in n.params.items():
                spec = n.cls.params[k]
                lines.append(f"      {k} = {v!r}  ({spec.type_name}; {spec.description})")
    for lk in graph.links:
        lines.append(f"  {lk}  [{lk.type}, {lk.delivery}{', queue ' + str(lk.queue) if lk.delivery == 'lossless' else ''}]")
    return "\n".join(lines)


def to_dot(graph: Graph) -> str:
    out = [f'digraph "{graph.name}" {{', "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    for n in graph.nodes.values():
        out.append(f'  "{n.name}" [label="{n.name}\\n({n.type})"];')
    for lk in graph.links:
        style = "solid" if lk.delivery == "lossless" else "dashed"
        out.append(f'  "{lk.src}" -> "{lk.dst}" [label="{lk.src_port}→{lk.dst_port}\\n{lk.type}", style={style}];')
    out.append("}")
    return "\n".join(out)


def resolved_yaml(graph: Graph) -> str:
    doc = {
        "name": graph.name, "endpoints": graph.endpoints, "bind": graph.bind,
        "keys": str(graph.keys) if graph.keys else None, "max_msg_bytes": graph.max_msg_bytes,
        "nodes": [{"name": n.name, "type": n.type, "params": n.params,
                   "restart": vars(n.restart), **({"endpoints": n.endpoints} if n.endpoints else {})}
                  for n in graph.nodes.values()],
        "connections": [{"from": f"{lk.src}.{lk.src_port}", "to": f"{lk.dst}.{lk.dst_port}",
                         "delivery": lk.delivery, "queue": lk.queue} for lk in graph.links],
    }
    return yaml.safe_dump(doc, sort_keys=False)


# ------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_ in (("validate", "check a graph file; exit 0 if valid"),
                        ("show", "print the graph (text, --dot for Graphviz, --print for resolved YAML)")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("file", help="graph YAML")
        p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="override a param")
        if name == "show":
            p.add_argument("--dot", action="store_true", help="Graphviz dot output")
            p.add_argument("--print", dest="print_resolved", action="store_true", help="resolved YAML")
            p.add_argument("--show-params", action="store_true", help="list every node's params")


def main(args: argparse.Namespace) -> int:
    graph = load_graph(args.file, args.set)
    if args.action == "validate":
        print(f"{args.file}: ok ({len(graph.nodes)} nodes, {len(graph.links)} connections)")
    elif args.dot:
        print(to_dot(graph))
    elif args.print_resolved:
        sys.stdout.write(resolved_yaml(graph))
    else:
        print(describe(graph, args.show_params))
    return 0
