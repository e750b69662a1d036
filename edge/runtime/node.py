"""The node API: a base class with a lifecycle, declared ports and params, and a registry by type name.

    @register_node("flow")                    # the type name is the module name in nodes/
    class FlowNode(Node):
        inputs = {"crops": Port("crops")}
        outputs = {"flows": Port("flows")}
        params = {"lag": Param(int, 3, "reference frame this many frames back")}

        def setup(self) -> None: ...
        def process(self, port: str, msg: Message) -> None:
            self.emit("flows", msg.derive("flows", ...))
        def teardown(self) -> None: ...

A source node has no inputs and overrides `run_source()` (loop until `self.stopping`; returning ends the
stream). Built-in types load from the `nodes` package on first use; third-party packages add modules
through the entry point group `facesleuth.nodes` (the entry point's value is a module that registers
its nodes on import). A node with several inputs may declare `input_sync = "frame_order"` to see them merged
per stream into frame order (edge.runtime.sync). Each node runs in its own process (edge.runtime.noderun); `Node.for_test()`
builds one in-process with no sockets, collecting what it emits, and edge.runtime.inprocess runs a chain of them
with their input policies.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from edge.errors import UserError
from edge.runtime import checkpoint
from edge.runtime.messages import TYPES, Message

ENTRY_POINT_GROUP = "facesleuth.nodes"
_REQUIRED = object()


@dataclass(frozen=True)
class Port:
    """A typed port: `type` is a message type from edge.runtime.messages.TYPES ("any" accepts all)."""

    type: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown message type {self.type!r} (known: {', '.join(TYPES)})")


_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict", Path: "path"}


@dataclass(frozen=True)
class Param:
    """A declared parameter. `type` is str, int, float, bool, list, dict or pathlib.Path (a path
    resolved relative to the graph file). Without a default (`Param(int)`) the param is required."""

    type: type
    default: Any = _REQUIRED
    description: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, self.type.__name__)

    def coerce(self, value: Any, base_dir: Path | None = None) -> Any:
        """Check and convert one value; raises ValueError with a one-line reason."""
        t = self.type
        if value is None and not self.required and self.default is None:
            return None
        if t is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected bool, got {type(value).__name__} {value!r}")
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected int, got {type(value).__name__} {value!r}")
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected float, got {type(value).__name__} {value!r}")
            value = float(value)
        elif t is Path:
            if not isinstance(value, str | Path):
                raise ValueError(f"expected a path, got {type(value).__name__} {value!r}")
            p = Path(value).expanduser()
            value = str(p if p.is_absolute() or base_dir is None else (base_dir / p).resolve())
        elif not isinstance(value, t):
            raise ValueError(f"expected {self.type_name}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, self.choices))}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{value!r} is above the maximum {self.max}")
        return value


class Node:
    """Base class of every node. Subclasses declare `inputs`, `outputs`, `params` and override
    `setup`, `process` (or `run_source` for sources) and `teardown`."""

    type_name: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, Port]] = {}
    params: ClassVar[dict[str, Param]] = {}
    # The order process() sees what the inputs deliver (edge.runtime.sync): "arrival", or "frame_order" (per stream,
    # merged into frame order; within a frame, stages ranked by `input_order`, default the inputs' order).
    input_sync: ClassVar[str] = "arrival"
    input_order: ClassVar[tuple[str, ...]] = ()
    # When a message from a lossless (acknowledged) input counts as handled, so that the producer may
    # forget it (edge.runtime.delivery): "downstream" (the default) once process() returned and every
    # message it emitted on lossless links was acknowledged in turn, so nothing is lost if this node dies
    # while its results are still on their way; "handled" as soon as process() returned: for a node that
    # stores what it gets durably itself (the events node, after the SQLite commit).
    ack_after: ClassVar[str] = "downstream"
    # Set by the runner before setup(): the graph's name, the supervisor's stats endpoint, the input
    # ports that are connected ("inputs"; absent in tests: take every declared input as connected) and
    # how often this node has been restarted in this run ("restarts"; absent in tests: 0).
    run_info: dict[str, Any] = {}

    def __init__(self, name: str, params: dict[str, Any], emit: Callable[[str, Message], None],
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.name = name
        self.p = SimpleNamespace(**params)  # resolved params: self.p.lag
        self.log = logging.getLogger(f"node.{name}")
        self._emit = emit
        self._stopping = stopping

    # -- lifecycle (override) -----------------------------------------------------------------------
    def setup(self) -> None:
        """Open devices, load models. Raise UserError/Unavailable with one line on failure."""

    def process(self, port: str, msg: Message) -> None:
        """Handle one message from input `port`."""
        raise TypeError(f"{type(self).__name__} has inputs but does not implement process()")

    def process_batch(self, port: str, msgs: list[Message]) -> None:
        """Handle every message already queued on a lossless input at once (override to batch, e.g.
        one classifier call for several intervals). The default calls `process` for each."""
        for msg in msgs:
            self.process(port, msg)

    def sync_stages(self, port: str, msg: Message) -> list[str]:
        """frame_order: the stages at which `msg` from `port` reaches process() (as its `port` argument),
        each ranked by `input_order` within the frame. Default: its port. A node can split one message's
        work this way, e.g. spot handles a crops message's ended tracks after that frame's flows."""
        return [port]

    def run_source(self) -> None:
        """Source nodes: produce messages until `self.stopping` or the source ends."""
        raise TypeError(f"{type(self).__name__} has no inputs but does not implement run_source()")

    def end_of_stream(self) -> None:
        """All upstream producers have finished: flush what is pending (e.g. open intervals)."""

    def teardown(self) -> None:
        """Release resources; always called, also on SIGTERM."""

    def rejected(self) -> int:
        """Requests refused outside the graph's links (e.g. bad replay requests), counted in the node's
        `foreign` stat with what its inputs rejected."""
        return 0

    # -- services -------------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping()

    def emit(self, port: str, msg: Message) -> None:
        if port not in self.outputs:
            raise KeyError(f"{self.name}: no output port {port!r}")
        self._emit(port, msg)

    @classmethod
    def is_source(cls) -> bool:
        return not cls.inputs

    @classmethod
    def resolve_params(cls, given: dict[str, Any], base_dir: Path | None = None) -> dict[str, Any]:
        """Defaults + given values, each checked. Raises UserError naming the param."""
        out = {}
        for key in given:
            if key not in cls.params:
                raise UserError(f"unknown param {key!r} for node type {cls.type_name!r} "
                                f"(known: {', '.join(cls.params) or 'none'})")
        for key, spec in cls.params.items():
            if key in given:
                try:
                    out[key] = spec.coerce(given[key], base_dir)
                except ValueError as e:
                    raise UserError(f"param {key!r}: {e}") from None
            elif spec.required:
                raise UserError(f"missing required param {key!r} ({spec.description})")
            else:
                out[key] = spec.default
        cls.check_params(out)
        return out

    @classmethod
    def ack_retain(cls, params: dict[str, Any]) -> int:
        """State that a bounded window of inputs rebuilds (flow: the last `lag` crops): the newest this many
        handled messages of each lossless input stay unacknowledged, so the producer sends them again to a
        restarted process, which rebuilds that state before it handles anything new (what it emits again for
        them has the same ids and is dropped downstream). Held upstream too (edge.runtime.graph checks that
        every queue on the way has room beyond them). Default 0: acknowledged once handled."""
        return 0

    @classmethod
    def checkpoint_every(cls, params: dict[str, Any]) -> int:
        """State that no bounded window rebuilds (spot: its noise model, open intervals): every this many
        handled messages (per input, at most), the runner saves `save_state()` to the run folder and only
        then acknowledges them, so a restarted process restores it (`load_state()`) and is sent again just
        what came after (edge.runtime.checkpoint). Held upstream like `ack_retain`. Default 0: none."""
        return 0

    def save_state(self) -> Any:
        """What `load_state()` needs to go on as this process would (picklable); with checkpoint_every."""
        raise NotImplementedError(f"{type(self).__name__} sets checkpoint_every but not save_state")

    def load_state(self, state: Any) -> None:
        """Go on from `save_state()`'s result (called after setup(), in a restarted process)."""
        raise NotImplementedError(f"{type(self).__name__} sets checkpoint_every but not load_state")

    @classmethod
    def held(cls, params: dict[str, Any]) -> int:
        """The most handled messages per input this node keeps unacknowledged (edge.runtime.graph checks
        the queues upstream for them)."""
        every = cls.checkpoint_every(params)
        return max(cls.ack_retain(params), every + checkpoint.SLACK if every else 0)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Refuse (UserError) a combination of resolved params that setup() would refuse, e.g. a public
        endpoint without keys, so that `graph validate` refuses it too. setup() calls it as well."""

    @classmethod
    def bound_endpoints(cls, params: dict[str, Any]) -> dict[str, str]:
        """The fixed endpoints this node binds itself (beyond its output ports), by the param that sets
        each, e.g. {"pub": "tcp://127.0.0.1:5571"}: `facesleuth run` checks they are free before it starts
        any node (edge.runtime.preflight). An HTTP port is given as tcp://HOST:PORT."""
        return {}

    @classmethod
    def for_test(cls, name: str = "test", params: dict[str, Any] | None = None) -> Node:
        """An in-process instance with no sockets: emitted messages collect in `.emitted`."""
        emitted: list[tuple[str, Message]] = []
        node = cls(name, cls.resolve_params(params or {}), lambda port, msg: emitted.append((port, msg)))
        node.emitted = emitted  # type: ignore[attr-defined]
        return node


# ------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Node]] = {}
_entry_points_loaded = False


def register_node(type_name: str) -> Callable[[type[Node]], type[Node]]:
    """Class decorator: register a Node subclass under `type_name` (a duplicate name is an error)."""

    def deco(cls: type[Node]) -> type[Node]:
        prev = _REGISTRY.get(type_name)
        if prev is not None and prev.__qualname__ != cls.__qualname__:
            raise ValueError(f"node type {type_name!r} registered twice ({prev.__module__}, {cls.__module__})")
        cls.type_name = type_name
        _REGISTRY[type_name] = cls
        return cls

    return deco


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            logging.getLogger(__name__).warning("node plugin %s failed to load: %s", ep.value, e)


def get_node_class(type_name: str) -> type[Node]:
    """The class registered as `type_name`: built-in nodes/<type_name>.py, then entry points."""
    if type_name not in _REGISTRY:
        try:
            importlib.import_module(f"nodes.{type_name}")
        except ModuleNotFoundError as e:
            if e.name != f"nodes.{type_name}":
                raise
        if type_name not in _REGISTRY:
            _load_entry_points()
    if type_name not in _REGISTRY:
        raise UserError(f"unknown node type {type_name!r} (known: {', '.join(list_node_types())})")
    return _REGISTRY[type_name]


def list_node_types() -> list[str]:
    """Every available node type name (imports all built-in node modules and plugins)."""
    import nodes

    for mod in pkgutil.iter_modules(nodes.__path__):
        try:
            importlib.import_module(f"nodes.{mod.name}")
        except Exception as e:  # an optional dependency missing must not hide the other types
            logging.getLogger(__name__).debug("nodes.%s not loadable: %s", mod.name, e)
    _load_entry_points()
    return sorted(_REGISTRY)
