"""One source for a default: dataclass fields -> node params, and "set wins over unset"."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge.errors import UserError
from edge.runtime.node import Node, Param
from edge.runtime.params import knob, node_params, with_set


@dataclass
class Knobs:
    k_on: float = knob(6.5, "score that opens an event", "noise units", min=0.0)
    widths_s: tuple = knob((0.1, 0.2), "filter widths", "s")
    mode: str = knob("a", "which mode", choices=("a", "b"))


class KnobNode(Node):
    type_name = "knobs"
    params = {"params_file": Param(str, ""), **node_params(Knobs, ("k_on", "widths_s", "mode"), unset=True)}


def test_node_params_carry_the_field_default_doc_and_bounds():
    fixed = node_params(Knobs)
    assert fixed["k_on"].default == 6.5 and fixed["k_on"].min == 0.0
    assert fixed["k_on"].description == "score that opens an event, noise units"
    assert fixed["widths_s"].type is list and fixed["widths_s"].default == [0.1, 0.2]
    assert fixed["mode"].choices == ("a", "b")
    loose = node_params(Knobs, ("k_on",), unset=True)
    assert loose["k_on"].default is None and "6.5" in loose["k_on"].description
    with pytest.raises(ValueError, match="no field"):
        node_params(Knobs, ("nope",))


def test_a_value_set_to_the_default_still_wins_over_a_file():
    from_file = Knobs(k_on=7.0, mode="b")
    p = KnobNode.resolve_params({"k_on": 6.5})  # explicitly the default
    merged = with_set(from_file, {k: v for k, v in p.items() if k != "params_file"})
    assert merged.k_on == 6.5 and merged.mode == "b"  # unset keeps the file's value
    assert with_set(Knobs(), {"widths_s": [0.3]}).widths_s == (0.3,)


def test_bounds_and_choices_are_checked_on_the_generated_params():
    with pytest.raises(UserError, match="below the minimum"):
        KnobNode.resolve_params({"k_on": -1.0})
    with pytest.raises(UserError, match="not one of"):
        KnobNode.resolve_params({"mode": "c"})


def test_flags_from_fields_are_unset_unless_given_and_bounded():
    import argparse

    from edge.runtime.params import add_config_arguments, config_values

    p = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(p, Knobs)
    assert config_values(p.parse_args([]), Knobs) == {}
    got = config_values(p.parse_args(["--k-on", "7", "--widths-s", "0.1,0.3", "--mode", "b"]), Knobs)
    assert got == {"k_on": 7.0, "widths_s": (0.1, 0.3), "mode": "b"}
    with pytest.raises(argparse.ArgumentError, match="outside"):
        p.parse_args(["--k-on", "-1"])
