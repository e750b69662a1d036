"""Spot defaults declared once (SpotParams knobs -> the spot node's params), and a graph's set value
winning over a params file."""

from __future__ import annotations

import dataclasses

import pytest

from edge.errors import UserError
from edge.perception.spot import SpotParams
from nodes.spot import SpotNode


def test_a_graph_value_equal_to_the_default_wins_over_the_params_file(tmp_path):
    SpotParams(k_on=7.0, k_off=3.0).save(tmp_path / "spot.json", fit={"micro_f1": 1.0})
    node = SpotNode.for_test(params={"params_file": str(tmp_path / "spot.json"), "k_on": 6.5})  # the default
    node.setup()
    assert node.params_used.k_on == 6.5  # set in the graph: wins, even at the default
    assert node.params_used.k_off == 3.0  # unset: the file's
    plain = SpotNode.for_test()
    plain.setup()
    assert plain.params_used == SpotParams()


def test_the_node_params_come_from_the_spotparams_fields():
    p = SpotNode.params
    defaults = SpotParams()
    for name in ("k_on", "k_off", "k_bump", "micro_max_s", "head_speed_max", "residual_max", "early_close"):
        assert p[name].default is None, name  # unset: the params file's value, else the field default
        assert repr(getattr(defaults, name)) in p[name].description, name
    assert p["k_on"].min == 0.0 and "noise units" in p["k_on"].description
    with pytest.raises(UserError, match="below the minimum"):
        SpotNode.resolve_params({"k_on": -1.0})


def test_every_spot_param_is_declared_with_a_doc():
    for f in dataclasses.fields(SpotParams):
        assert f.metadata.get("doc"), f.name
