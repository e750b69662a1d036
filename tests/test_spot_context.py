"""Facial context in spotting (edge.perception.spot.context, blink, occlusion): talking, eye closures and
occluders on real flow of a real face photograph moved by action-unit fields (helpers of test_spot)."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from edge.data.aus import ActionUnit, Patch
from edge.perception.spot import FrameInfo, SpotParams
from edge.perception.spot.context import SwingCounter
from tests.test_spot import FPS, LAG, flows, frames_of, micro, render, spot


def test_swings_count_reversals_past_the_threshold_within_the_window():
    sc = SwingCounter()
    counts = [sc.update(k, x, 0.5, since=k - 10) for k, x in enumerate([0, 1, 0, 1, 0, 0.2, 0.1, 0.3])]
    assert counts[:5] == [0, 0, 1, 2, 3]  # up to 1 and back, ... : one swing per reversal of >= 0.5
    assert counts[-1] == 3  # 0.2 / 0.1 / 0.3 wobble less than the threshold
    assert sc.update(30, 0.3, 0.5, since=20) == 0  # the window forgets old swings


def speech(t0: float, t1: float, rate_hz: float = 4.0, amp: float = 2.5) -> list[dict]:
    """Talking: the jaw drops and comes back (AU26) at syllable rate, from t0 to t1 s."""
    period = 1.0 / rate_hz
    return [micro(t, {26: amp}, rise=0.4 * period, dur=0.95 * period) for t in np.arange(t0, t1, period)]


@pytest.fixture(scope="module")
def talking():
    brows = micro(3.0, {1: 1.5, 2: 1.5}, rise=0.12, dur=0.33)
    events = speech(1.3, 4.5) + [brows]
    return flows(render(int(5 * FPS), events, sigma=1.0)), brows


def test_talking_mouth_is_not_a_micro_expression_but_a_brow_during_it_is(talking):
    fl, brows = talking
    kept = [i for i in spot(fl) if not i.discarded]
    micros = [i for i in kept if i.kind == "micro"]
    assert len(micros) == 1, [(i.kind, i.onset, i.offset, i.rois) for i in kept]
    iv = micros[0]
    on, off = frames_of(brows)
    assert iv.onset <= off and on <= iv.offset
    assert {"brow_left", "brow_right"} & set(iv.rois) and not {"mouth_left", "mouth_right", "chin"} & set(iv.rois)
    assert iv.context["talking"] and {"mouth_left", "mouth_right", "chin"} <= set(iv.context["muted"])
    assert msgpack.unpackb(msgpack.packb(iv.context)) == iv.context  # plain types: events carry it


def test_without_the_swing_rule_talking_swallows_the_brow_micro_expression(talking):
    fl, _ = talking
    out = [i for i in spot(fl, SpotParams(speech_swings=999)) if not i.discarded]
    assert not [i for i in out if i.kind == "micro"], "the talking test would pass without the rule"
    assert any({"mouth_left", "mouth_right", "chin"} & set(i.rois) for i in out)


def test_an_eye_closure_is_a_blink_whatever_the_brows_do():
    """Real lids drag the brows and cheeks: a lid sweep (AU45) with the cheeks moving too (AU6) is a micro
    event to the flow alone, and, with facial state saying the eyes shut, one blink interval."""
    blink = {"aus": {45: 5.0, 6: 2.0}, "on": 1.5, "apex": 1.58, "off": 1.75}
    fl = flows(render(int(3 * FPS), [blink], sigma=1.0))
    on, off = frames_of(blink)
    info = {}
    for k in range(int(3 * FPS)):
        shut = on + 1 <= k <= off - 1
        info[k] = FrameInfo(eye_open=(0.2, 0.25) if shut else (1.0, 1.0), landmarks="dlib68")
    plain = [i for i in spot(fl) if not i.discarded]
    assert any(i.kind == "micro" for i in plain), "cheek drag should fool the flow rule alone"
    out = spot(fl, info=info)
    kept = [i for i in out if not i.discarded]
    assert [i.kind for i in kept] == ["blink"], [(i.kind, i.onset, i.offset, i.rois, i.discarded) for i in out]
    assert kept[0].onset <= on + 1 and kept[0].offset >= off - 1
    assert all(i.kind != "micro" or i.discarded.startswith("blink") for i in out)


def test_a_micro_expression_over_the_size_limit_is_not_micro():
    ev = [micro(1.5, {12: 10.0})]  # block means see a quarter of the field's peak: ~2.4 crop px
    fl = flows(render(int(3 * FPS), ev, sigma=1.0))
    out = spot(fl, SpotParams(micro_max_px=2.0))
    assert not [i for i in out if i.kind == "micro" and not i.discarded]
    assert any("micro_max_px" in i.discarded for i in out)
    assert [i.kind for i in spot(fl) if not i.discarded] == ["micro"]


def test_occlusion_scores_mute_their_rois():
    """ROIs the face node (or the spot node's warp residual) calls occluded do not carry events."""
    ev = [micro(1.5, {12: 1.5})]
    fl = flows(render(int(3 * FPS), ev, sigma=1.0))
    occluded = tuple(9.0 if r.startswith("mouth") else 1.0 for r in
                     ("brow_left", "brow_right", "eye_left", "eye_right", "nose_left", "nose_right",
                      "mouth_left", "mouth_right", "chin"))
    info = {k: FrameInfo(occlusion=occluded) for k in range(int(3 * FPS))}
    out = spot(fl, info=info)
    assert not [i for i in out if i.kind == "micro" and not i.discarded]
    clear = {k: dataclasses.replace(v, occlusion=(1.0,) * 9) for k, v in info.items()}
    assert [i.kind for i in spot(fl, info=clear) if not i.discarded] == ["micro"]


def test_a_textured_patch_sliding_over_the_mouth_is_discarded_as_occlusion():
    """The whole path (face, flow and spot nodes in one process): a plain textured object slides over the
    mouth of a synthetic face, rests and slides out; its motion is no micro event, and the interval it
    starts is discarded with the occlusion as its reason."""
    from edge.bench.clips import extract, spot_clip
    from edge.bench.real import overlaps
    from edge.data.synth import SyntheticVideo

    video = SyntheticVideo("edge60", seed=5, duration_s=5.0, fps=30.0, random_events=False,
                           script=[{"t": 1.6, "kind": "occluder", "target": "mouth", "shape": "object",
                                    "duration_s": 2.0, "rest_s": 0.6}],
                           overrides={"head_turns_per_min": 0.0, "blinks_per_min": 0.0, "noise_sigma": 1.0})
    (patch,) = video.truth
    out = spot_clip(extract(video, baseline=False), SpotParams())
    assert not [iv for iv in out if iv.kind == "micro" and not iv.discarded
                and overlaps(iv.onset, iv.offset, patch["onset"], patch["offset"])]
    occluded = [iv for iv in out if iv.discarded.startswith("occluded:")]
    assert occluded and overlaps(occluded[0].onset, occluded[0].offset, patch["onset"], patch["offset"])
    assert occluded[0].context["occluded"]


def test_an_interval_whose_occluded_rois_moved_most_is_the_occluders():
    """A hand over the chin shifts the ROIs next to it and the face's registration under it: a brow
    motion smaller than the chin's, while the chin is occluded, is discarded as the occluder's; the same
    brow motion with the chin moving less is a micro-expression."""
    brows = micro(1.5, {1: 1.2, 2: 1.2}, rise=0.12, dur=0.33)
    chin_big = micro(1.45, {17: 6.0}, rise=0.12, dur=0.4)
    names = ("brow_left", "brow_right", "eye_left", "eye_right", "nose_left", "nose_right", "mouth_left",
             "mouth_right", "chin")
    info = {k: FrameInfo(occlusion=tuple(9.0 if r == "chin" else 1.0 for r in names)) for k in range(int(3 * FPS))}
    out = spot(flows(render(int(3 * FPS), [brows, chin_big], sigma=1.0)), info=info)
    assert not [i for i in out if i.kind == "micro" and not i.discarded], [(i.rois, i.discarded) for i in out]
    assert any("occluded: chin (the occluded ROIs moved" in i.discarded for i in out)
    chin_small = micro(1.45, {17: 0.3}, rise=0.12, dur=0.4)
    kept = [i for i in spot(flows(render(int(3 * FPS), [brows, chin_small], sigma=1.0)), info=info)
            if not i.discarded]
    assert [i.kind for i in kept] == ["micro"] and {"brow_left", "brow_right"} & set(kept[0].rois)


def test_a_hand_at_the_jaw_line_scores_the_face_edge_not_the_rois():
    """The warp residual of a real face crop: a patch of other texture coming in over the jaw line (outside
    every ROI) scores the face's edge as occluded and no ROI; the whole crop shifting, as the flow says it
    did, scores nothing."""
    import cv2

    from edge.perception.geometry import EDGE_BOXES, roi_boxes
    from edge.perception.spot.occlusion import WarpResidual
    from tests.test_spot import S

    rng = np.random.default_rng(3)
    face = render(1, [], sigma=0.0)[0]
    res = WarpResidual(S, FPS)
    still = np.zeros((2, S, S), np.float32)
    for _ in range(12):  # the usual level: sensor noise only
        res.update(face, np.clip(face + rng.normal(0, 1.0, face.shape), 0, 255).astype(np.uint8), still)
    x0, y0, x1, y1 = roi_boxes(S, EDGE_BOXES)["jaw_left"]
    hand = face.copy()
    hand[y0 + 6:y1, x0:x1] = cv2.GaussianBlur(rng.integers(0, 255, (y1 - y0 - 6, x1 - x0), np.uint8), (3, 3), 0)
    rois, edges = res.update(face, hand, still)
    assert edges.max() >= SpotParams().occlusion_k and rois.max() < SpotParams().occlusion_k, (rois, edges)
    shift = np.full((2, S, S), -1.0, np.float32)  # the crop moved by (-1, -1) px: the flow says so
    moved = cv2.warpAffine(face, np.float32([[1, 0, -1], [0, 1, -1]]), (S, S), borderMode=cv2.BORDER_REPLICATE)
    rois, edges = res.update(face, moved, shift)
    assert max(edges.max(), rois.max()) < SpotParams().occlusion_k, (rois, edges)


def test_a_micro_interval_next_to_an_occluded_face_edge_is_the_hands():
    """clm_cap12 frame 1173 (docs/spotting.md): a hand coming in over the jaw line shifts the lower face by a
    micro-expression's size before it covers any ROI. A micro interval that starts within its flow lag
    after a frame whose face edge is occluded is discarded as occluded; the same edge score a second
    before changes nothing."""
    ev = [micro(1.5, {12: 1.5})]
    fl = flows(render(int(3 * FPS), ev, sigma=1.0))
    on, _ = frames_of(ev[0])

    def edge_at(frames: range) -> dict[int, FrameInfo]:
        return {k: FrameInfo(edge_occlusion=6.0 if k in frames else 1.0) for k in range(int(3 * FPS))}

    out = spot(fl, info=edge_at(range(on - LAG, on - 1)))
    assert not [i for i in out if i.kind == "micro" and not i.discarded], [(i.kind, i.discarded) for i in out]
    assert any(i.discarded.startswith("occluded: the face's edge") for i in out)
    far = range(on - int(FPS), on - int(FPS) + 2)
    assert [i.kind for i in spot(fl, info=edge_at(far)) if not i.discarded] == ["micro"]


@pytest.mark.parametrize("dur", [0.3, 0.45])
def test_the_first_syllable_is_the_mouth_opening_not_a_micro_expression(dur):
    """One jaw drop (AU26) before talking is known from the swings (3 swings: the first syllables) is the
    mouth opening, not an expression, and says so."""
    fl = flows(render(int(3 * FPS), [micro(1.5, {26: 2.5}, rise=0.4 * dur, dur=dur)], sigma=1.0))
    out = spot(fl)
    assert not [i for i in out if i.kind == "micro" and not i.discarded], [(i.rois, i.discarded) for i in out]
    assert any(i.discarded.startswith("the jaw opening") for i in out)


# Both eyes' irises sliding right under still lids: not a FACS action unit, a gaze shift.
GAZE = ActionUnit(0, "gaze shift (test only)", (Patch((-0.5, 0.0), (0.09, 0.05), (1.0, 0.0)),
                                                Patch((0.5, 0.0), (0.09, 0.05), (1.0, 0.0))),
                  ("eye_left", "eye_right"), bilateral=False)


def test_the_eyes_alone_moving_sideways_are_the_gaze_not_a_micro_expression():
    out = spot(flows(render(int(3 * FPS), [micro(1.5, {GAZE: 3.0})], sigma=1.0)))
    assert not [i for i in out if i.kind == "micro" and not i.discarded], [(i.kind, i.rois, i.discarded) for i in out]
    assert any("the gaze shifting" in i.discarded for i in out), [(i.kind, i.rois, i.discarded) for i in out]
    # AU7 (lid tightener) moves the eyes alone too, but vertically: an expression's, kept.
    out = spot(flows(render(int(3 * FPS), [micro(1.5, {7: 3.0})], sigma=1.0)))
    kept = [(i.kind, i.rois) for i in out if not i.discarded]
    assert kept and kept[0][0] == "micro" and set(kept[0][1]) <= {"eye_left", "eye_right"}, \
        [(i.kind, i.rois, i.discarded) for i in out]
