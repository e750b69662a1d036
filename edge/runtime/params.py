"""Parameters declared once: a dataclass field carries its default, unit, doc and bounds.

    @dataclass
    class SpotParams:
        k_on: float = knob(6.5, "score that opens an event", "noise units", min=0.0)

    class SpotNode(Node):
        params = {"params_file": Param(str, ""), **node_params(SpotParams, ("k_on",), unset=True)}

    sp = with_set(SpotParams.load(file), {"k_on": self.p.k_on})   # a value set in the graph wins

`node_params` turns fields into node `Param`s and `add_config_arguments` into command-line flags (read back
with `config_values`), so neither a node nor a command repeats a default. With `unset=True` the
node param's default is None ("not set"): `with_set` then keeps the base's value (a params file's, or the
field default) for every param left unset and takes every value that was set, even one equal to the
default. Comparing with the default instead would let a file override a graph that sets the default
explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from edge.runtime.node import Param

T = TypeVar("T")


def knob(default: Any, doc: str, unit: str = "", *, min: float | None = None, max: float | None = None,
         choices: tuple | None = None) -> Any:
    """A dataclass field with its metadata: `doc` (one line), `unit` (px, s, noise units...), bounds."""
    meta = {"doc": doc, "unit": unit, "min": min, "max": max, "choices": choices}
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"field {f.name!r} has no default")


def describe(f: dataclasses.Field) -> str:
    """'doc, unit' of a field declared with knob() ('' for a plain field)."""
    doc, unit = f.metadata.get("doc", ""), f.metadata.get("unit", "")
    return f"{doc}, {unit}" if doc and unit else doc


def node_params(cls: type, names: Iterable[str] | None = None, unset: bool = False) -> dict[str, Param]:
    """Node params for the fields `names` of dataclass `cls` (all fields when None), in that order.

    unset=False: each param's default is the field's. unset=True: the default is None, meaning "not set
    here" (the description names the field default); resolve with `with_set`."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Param] = {}
    for name in by_name if names is None else names:
        if name not in by_name:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        f = by_name[name]
        default = field_default(f)
        typ = list if isinstance(default, tuple) else type(default)
        doc = describe(f)
        m = f.metadata
        if unset:
            shown = list(default) if isinstance(default, tuple) else default
            out[name] = Param(typ, None, f"{doc} (unset: the params file's value, else {shown!r})",
                              choices=m.get("choices"), min=m.get("min"), max=m.get("max"))
        else:
            out[name] = Param(typ, list(default) if isinstance(default, tuple) else default, doc,
                              choices=m.get("choices"), min=m.get("min"), max=m.get("max"))
    return out


def with_set(base: T, values: Mapping[str, Any]) -> T:
    """A copy of dataclass `base` with every value in `values` that is set (not None) replacing its field;
    list values become tuples where the field holds a tuple."""
    changes = {}
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, list) and isinstance(getattr(base, k), tuple):
            v = tuple(v)
        changes[k] = v
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def _comma_tuple(item: type) -> Callable[[str], tuple]:
    """A parser of "a,b,c" into a tuple of `item`s."""
    def parse(text: str) -> tuple:
        return tuple(item(v.strip()) for v in text.split(",") if v.strip())
    parse.__name__ = f"comma-separated {item.__name__}"
    return parse


def bounded(typ: type, lo: float | None = None, hi: float | None = None) -> Callable[[str], Any]:
    """argparse type: `typ` within [lo, hi] (None: unbounded), else the one-line "V is outside [lo, hi]"
    (every command's numeric options, so that a bad count is refused before any work)."""
    def parse(text: str) -> Any:
        v = typ(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is outside [{lo if lo is not None else '-inf'}, "
                                             f"{hi if hi is not None else 'inf'}]")
        return v
    parse.__name__ = typ.__name__  # argparse names the type in its error messages
    return parse


def add_config_arguments(p: argparse.ArgumentParser, cls: type, names: Iterable[str] | None = None) -> None:
    """One `--field-name` flag per field of dataclass `cls` (all when `names` is None; dict fields have no
    flag), help and bounds from its knob(), default None: an unset flag overrides neither a preset nor the
    field default (read them back with config_values). Bools get --x/--no-x, tuples a comma list."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name in by_name if names is None else names:
        f = by_name[name]
        default, m = field_default(f), f.metadata
        if isinstance(default, dict):
            continue
        flag = "--" + name.replace("_", "-")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_ = (f"{describe(f)} (default {shown})" if shown != "" else describe(f)).replace("%", "%%")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(default, tuple):
            item = type(default[0]) if default else str
            p.add_argument(flag, type=_comma_tuple(item), default=None, help=help_)
        else:
            typ = type(default)
            if typ in (int, float) and (m.get("min") is not None or m.get("max") is not None):
                typ = bounded(typ, m.get("min"), m.get("max"))
            p.add_argument(flag, type=typ, default=None, choices=m.get("choices"), help=help_)


def config_values(args: argparse.Namespace, cls: type, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields of `cls` (those in `names` when given) that were set as flags; unset flags are None."""
    names = [f.name for f in dataclasses.fields(cls)] if names is None else list(names)
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
