"""The classify node's scores: the mean over the apex frame and the frames next to it (the shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.data.synth import make_samples
from edge.runtime.messages import Message, SchemaError, validate
from edge.runtime.node import get_node_class


def _node():
    node = get_node_class("classify").for_test(params={"runtime": "torch-cpu"})
    node.setup()
    return node


def test_scores_are_the_mean_over_the_apex_and_its_neighbours():
    from edge.data.preprocess import model_input

    node = _node()
    onset, apex, _ = make_samples(3, "lab200", seed=11)  # three apexes of different samples: different scores
    near = np.stack([apex[1], apex[2]])
    meta = {"kind": "micro", "track_id": 1, "onset": 10, "apex": 14, "offset": 20}
    with_near = Message("intervals", "cam0", frame=100, arrays={"onset": onset[0], "apex": apex[0], "apex_near": near},
                        meta=meta)
    alone = Message("intervals", "cam0", frame=100, arrays={"onset": onset[0], "apex": apex[0]}, meta=meta)
    validate(with_near)
    validate(alone)  # apex_near is optional: a spot node that sends none still works
    node.process_batch("intervals", [with_near, alone])
    (_, ev_near), (_, ev_alone) = node.emitted
    x = np.stack([model_input(onset[0], a, node.spec) for a in (apex[0], apex[1], apex[2])])
    each = node.predictor.predict(x).probs
    classes = node.predictor.classes
    assert [ev_near.meta["scores"][c] for c in classes] == pytest.approx(each.mean(0), abs=1e-3)
    assert [ev_alone.meta["scores"][c] for c in classes] == pytest.approx(each[0], abs=1e-3)
    assert not np.allclose(each.mean(0), each[0], atol=1e-2)  # the neighbours did change the scores


def test_a_provisional_interval_prepares_the_inputs_of_the_final_one(monkeypatch):
    """The spot node sends an open event's crops once it is past its apex: the model inputs are computed
    then, and the final interval with the same crops only runs the classifier (same scores)."""
    import nodes.classify as classify

    node = _node()
    onset, apex, _ = make_samples(3, "lab200", seed=11)
    arrays = {"onset": onset[0], "apex": apex[0], "apex_near": np.stack([apex[1], apex[2]])}
    final = {"kind": "micro", "track_id": 1, "onset": 10, "apex": 14, "offset": 20}
    node.process_batch("intervals", [Message("intervals", "cam0", frame=100, arrays=arrays, meta=final)])
    cold = node.emitted[-1][1].meta["scores"]
    computed = []
    real = classify.interval_inputs
    monkeypatch.setattr(classify, "interval_inputs", lambda *a: computed.append(1) or real(*a))
    node.process_batch("intervals", [Message("intervals", "cam0", frame=16, arrays=arrays, meta={
        "kind": "provisional", "track_id": 1, "onset": 10, "apex": 14})])
    assert len(computed) == 1 and len(node.emitted) == 1  # prepared, nothing published
    node.process_batch("intervals", [Message("intervals", "cam0", frame=100, arrays=arrays, meta=final)])
    assert len(computed) == 1 and node.emitted[-1][1].meta["scores"] == cold
    # Crops that differ from the prepared ones (the apex moved after it was sent) are computed afresh.
    node.process_batch("intervals", [Message("intervals", "cam0", frame=16, arrays=arrays, meta={
        "kind": "provisional", "track_id": 1, "onset": 10, "apex": 14})])
    moved = {**arrays, "apex": apex[1], "apex_near": apex[2][None]}
    node.process_batch("intervals", [Message("intervals", "cam0", frame=100, arrays=moved, meta=final)])
    assert len(computed) == 3 and node.emitted[-1][1].meta["scores"] != cold


def test_apex_near_of_the_wrong_shape_is_a_schema_error():
    crop = np.zeros((128, 128), np.uint8)
    msg = Message("intervals", "cam0", frame=1, arrays={"onset": crop, "apex": crop, "apex_near": crop},
                  meta={"kind": "micro"})
    with pytest.raises(SchemaError, match="apex_near"):
        validate(msg)


def test_blinks_are_published_only_when_asked_for_and_carry_their_context():
    onset, apex, _ = make_samples(1, "lab200", seed=3)
    context = {"talking": True, "blink_near": False, "occluded": [], "muted": ["chin"], "head_pose": [1.0, 2.0, 3.0]}
    blink = Message("intervals", "cam0", frame=40, arrays={"onset": onset[0], "apex": apex[0]},
                    meta={"kind": "blink", "track_id": 2, "onset": 30, "apex": 33, "offset": 36, "context": context})
    micro = Message("intervals", "cam0", frame=40, arrays={"onset": onset[0], "apex": apex[0]},
                    meta={"kind": "micro", "track_id": 2, "onset": 30, "apex": 33, "offset": 36, "context": context})
    default = _node()
    default.process_batch("intervals", [blink, micro])
    assert [m.meta["kind"] for _, m in default.emitted] == ["micro"]  # kinds: [micro] by default
    assert default.emitted[0][1].meta["context"] == context
    everything = get_node_class("classify").for_test(params={"runtime": "torch-cpu", "kinds": ["micro", "macro", "blink"]})
    everything.setup()
    everything.process_batch("intervals", [blink])
    (_, ev), = everything.emitted
    assert (ev.meta["kind"], ev.meta["label"], ev.meta["scores"], ev.meta["context"]) == ("blink", "blink", {}, context)
