"""Spotting (edge.perception.spot, nodes/spot.py): real flow (edge.perception.flow DIS) on aligned crops of a real face photograph
moved by the synthetic source's action-unit fields (edge.data.aus), with sensor noise."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.bench.flowfields import add_noise, face_crop
from edge.data.aus import combo_field, grid
from edge.data.metrics import f1, iou, match, match_pairs
from edge.data.synth import profile
from edge.errors import UserError
from edge.perception.flow import create_flow
from edge.perception.spot import FrameInfo, RoiFeatures, SpotParams, Spotter
from edge.runtime.messages import Message

FPS = 30.0
LAG = 3
S = 128


# ------------------------------------------------------------------------------------------ helpers

def render(n: int, events: list[dict], sigma: float, seed: int = 0, shift: np.ndarray | None = None
           ) -> list[np.ndarray]:
    """n aligned grey crops (S, S) uint8: the face moved by `events` ({aus, on, apex, off} in s; hold),
    plus an optional rigid shift (n, 2) crop px, plus Gaussian noise sigma grey levels."""
    rng = np.random.default_rng(seed)
    base = face_crop(S).astype(np.float32)
    xx, yy = grid(S)
    fields = [combo_field(e["aus"], xx, yy, S) for e in events]
    out = []
    for k in range(n):
        t = k / FPS
        d = np.zeros((2, S, S), np.float32)
        for e, fld in zip(events, fields, strict=True):
            if e["on"] < t < e["off"]:
                tt = t if t <= e["apex"] else max(e["apex"], t - e.get("hold", 0.0))
                d += fld * float(profile(tt, e["on"], e["apex"], e["off"] - e.get("hold", 0.0)))
        if shift is not None:
            d += shift[k][:, None, None].astype(np.float32)
        img = cv2.remap(base, xx - d[0], yy - d[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        out.append(add_noise(np.clip(np.rint(img), 0, 255).astype(np.uint8), sigma, rng))
    return out


def flows(crops: list[np.ndarray]) -> list[tuple[int, int, np.ndarray]]:
    """(frame, ref frame, flow (2, S, S)) against the frame LAG back, as the flow node sends them."""
    fl = create_flow("farneback")  # the flow node's backend on a CPU (auto)
    return [(k, max(0, k - LAG), fl.calc(crops[max(0, k - LAG)], crops[k]).transpose(2, 0, 1))
            for k in range(1, len(crops))]


def spot(fl: list[tuple[int, int, np.ndarray]], params: SpotParams | None = None,
         info: dict[int, FrameInfo] | None = None):
    sp = Spotter(params or SpotParams())
    out = []
    for k, ref, uv in fl:
        if info and k in info:
            sp.note_frame(k, 1, info[k])
        t = int(round(k / FPS * 1e9))
        out += sp.push(k, t, t, 1, ref, uv)
    return out + sp.finish()


def micro(t: float, aus: dict[int, float], rise: float = 0.12, dur: float = 0.33) -> dict:
    return {"aus": aus, "on": t, "apex": t + rise, "off": t + dur}


def frames_of(e: dict) -> tuple[int, int]:
    return int(round(e["on"] * FPS)), int(round(e["off"] * FPS))


def f1_micro(intervals, events) -> tuple[float, tuple[int, int, int]]:
    pred = [(i.onset, i.offset) for i in intervals if i.kind == "micro" and not i.discarded]
    truth = [frames_of(e) for e in events]
    m = match(pred, truth)
    return f1(*m), m


MICROS = [({1: 1.0, 2: 1.0}, 1.4), ({12: 1.0}, 3.0), ({17: 1.0}, 4.6), ({4: 1.0}, 6.2)]


def micro_events(amp: float) -> list[dict]:
    return [micro(t, {k: v * amp for k, v in aus.items()}) for aus, t in MICROS]


# --------------------------------------------------------------------------------------- evaluation

def test_iou_inclusive_frames():
    assert iou((10, 19), (10, 19)) == 1.0
    assert iou((10, 19), (15, 24)) == pytest.approx(5 / 15)
    assert iou((0, 4), (5, 9)) == 0.0


def test_match_is_one_to_one_at_half_iou():
    truth = [(10, 19), (40, 49)]
    pred = [(11, 19), (12, 20), (41, 60), (80, 85)]
    tp, fp, fn = match(pred, truth)
    assert (tp, fp, fn) == (1, 3, 1)  # (41, 60) has IoU 9/21 < 0.5; the second hit on (10, 19) is an FP
    assert f1(tp, fp, fn) == pytest.approx(2 / 6)
    assert f1(0, 0, 0) == 1.0


def test_match_pairs_names_the_matched_intervals():
    truth = [(10, 19), (40, 49)]
    pred = [(80, 85), (41, 50), (11, 19), (12, 20)]
    assert sorted(match_pairs(pred, truth)) == [(1, 1), (2, 0)]  # best IoU first, one-to-one
    assert match_pairs(pred, []) == [] and match_pairs([], truth) == []


def test_plain_baseline_intervals_come_from_threshold_crossings():
    """The bench's baseline: a bump in one ROI's |flow| curve gives one interval from its crossings (onset =
    the frame before the first moving flow, offset = the last moving flow less lag - 1), micro or macro by
    its length; a dip of the lagged flow around the apex does not split it."""
    from edge.bench.clips import Clip, TrackSeq
    from edge.bench.spotting import baseline_clip

    rng = np.random.default_rng(0)
    n = 300
    curve = 0.3 + 0.02 * rng.standard_normal((n, 9))
    curve[100:104, 2] += 0.5   # a short movement, the lagged flow dipping at 102
    curve[102, 2] -= 0.45
    curve[200:240, 5] += 0.5   # a long one
    seq = TrackSeq(frames=list(range(1, n + 1)), base=list(curve))
    clip = Clip(FPS, n + 1, [], {0: seq}, np.zeros(0, int), LAG)
    got = [(i.kind, i.onset, i.offset) for i in baseline_clip(clip, k=5.0)]
    assert got == [("micro", 100, 102), ("macro", 200, 238)], got


def test_noise_tail_widens_the_scale_of_heavy_tailed_channels_only():
    """noise_tail: a channel whose tails are heavier than Gaussian (low-texture skin) gets a larger noise
    scale, so its rare large values score lower; a Gaussian channel keeps its scale."""
    from edge.perception.spot.noise import noise_scale

    rng = np.random.default_rng(0)
    a = np.abs(np.stack([rng.normal(0, 1, 4000), rng.standard_t(2, 4000)]))  # (2 channels, samples)
    mad, tail = (noise_scale(a, axis=1, tail=q) for q in (0, 0.95))
    assert tail[0] == pytest.approx(mad[0], rel=0.1)
    assert tail[1] > 1.5 * mad[1]
    with pytest.raises(UserError, match="noise_tail"):
        SpotParams.from_dict({"noise_tail": 1.0})


def test_params_file_roundtrip_and_errors(tmp_path):
    p = SpotParams(k_on=6.0, k_off=2.0)
    p.save(tmp_path / "p.json", fit={"micro_f1": 1.0})
    q = SpotParams.load(tmp_path / "p.json")
    assert (q.k_on, q.k_off) == (6.0, 2.0)
    with pytest.raises(UserError, match="unknown key"):
        SpotParams.from_dict({"k_onn": 3})
    with pytest.raises(UserError, match="k_off <= k_on"):
        SpotParams.from_dict({"k_on": 2.0, "k_off": 3.0})
    with pytest.raises(UserError, match="not found"):
        SpotParams.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(UserError, match="JSON"):
        SpotParams.load(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------- spotting quality

@pytest.fixture(scope="module")
def clip_1px():
    ev = micro_events(1.5)
    return ev, flows(render(int(7.5 * FPS), ev, sigma=1.0))


def test_micro_expressions_at_1_5px_are_spotted(clip_1px):
    ev, fl = clip_1px
    out = spot(fl)
    score, (tp, fp, fn) = f1_micro(out, ev)
    assert score >= 0.9, (tp, fp, fn, [(i.kind, i.onset, i.offset, i.discarded) for i in out])
    for i in out:
        if i.kind == "micro" and not i.discarded:
            assert i.onset <= i.apex <= i.offset
            assert i.t_onset_ns <= i.t_apex_ns <= i.t_offset_ns
            assert i.duration_s <= 0.5 and i.intensity > 0.1 and i.rois


def test_a_micro_expression_is_out_the_frame_the_face_is_back(clip_1px):
    """Event latency. A lagged flow still moves lag - 1 frames after the face is back, so waiting for a
    still flow puts an interval out `lag` frames (100 ms at 30 fps) after its offset. A clear micro
    interval is published the frame its displacement is back instead; the event then settles silently
    (one interval each, the same onsets and apexes). Near micro_max_s (early_margin_s) it waits."""
    ev, fl = clip_1px

    def run(params: SpotParams) -> list[tuple[int, int, int, int]]:
        sp, rows = Spotter(params), []
        for k, ref, uv in fl:
            t = int(round(k / FPS * 1e9))
            rows += [(k, i.onset, i.apex, i.offset) for i in sp.push(k, t, t, 1, ref, uv)
                     if i.kind == "micro" and not i.discarded]
        assert not [i for i in sp.finish() if i.kind == "micro" and not i.discarded]
        return rows

    early, late = run(SpotParams()), run(SpotParams(early_close=False))
    assert len(early) == len(late) >= 3
    assert all(k == off for k, _, _, off in early), early
    assert all(off < k <= off + LAG for k, _, _, off in late), late
    for (_, on, apex, off), (_, on2, apex2, off2) in zip(early, late, strict=True):
        assert (on, apex) == (on2, apex2) and off2 - 1 <= off <= off2
    assert run(SpotParams(early_margin_s=0.45)) == late  # every one of them is within 0.45 s of the limit


def test_thresholds_adapt_to_the_noise_level():
    """The same events under more sensor noise: still found, and the extra noise makes no events."""
    ev = micro_events(2.0)
    n = int(7.5 * FPS)
    for sigma in (0.5, 2.5):
        out = spot(flows(render(n, ev, sigma, seed=3)))
        score, m = f1_micro(out, ev)
        assert score >= 0.85, (sigma, m)
        assert not [i for i in out if i.kind == "micro" and not i.discarded
                    and max(iou((i.onset, i.offset), frames_of(e)) for e in ev) == 0], sigma


def test_blink_is_a_blink_not_micro():
    ev = [{"aus": {45: 5.0}, "on": 1.5, "apex": 1.58, "off": 1.75}]
    out = spot(flows(render(int(3 * FPS), ev, sigma=1.0)))
    kept = [i for i in out if not i.discarded]
    assert [i.kind for i in kept] == ["blink"], [(i.kind, i.rois) for i in out]
    assert set(kept[0].rois) & {"eye_left", "eye_right"}


def test_a_micro_expression_during_a_blink_is_a_micro_expression():
    """Blinks often fall within a micro-expression; the lids then dominate the event. A smile (AU12) of
    1.5 px with a blink inside it is a micro-expression, not a blink; the lone blink stays a blink."""
    smile = micro(1.5, {12: 1.5}, rise=0.15, dur=0.4)
    ev = [smile, {"aus": {45: 5.0}, "on": 1.6, "apex": 1.68, "off": 1.8}]
    kept = [i for i in spot(flows(render(int(3 * FPS), ev, sigma=1.0))) if not i.discarded]
    assert [i.kind for i in kept] == ["micro"], [(i.kind, i.onset, i.offset, i.rois) for i in kept]
    assert iou((kept[0].onset, kept[0].offset), frames_of(smile)) >= 0.5
    assert {"mouth_left", "mouth_right"} & set(kept[0].rois)
    off = SpotParams(blink_expr_k=float("inf"))  # without the rule, the blink swallows the smile
    assert [i.kind for i in spot(flows(render(int(3 * FPS), ev, sigma=1.0)), off) if not i.discarded] == ["blink"]


def test_eye_region_expression_moving_up_is_not_a_blink():
    """Lid tightener (AU7) moves eye-region skin UP, a blink moves the lid DOWN: micro, not blink."""
    ev = [micro(1.5, {7: 2.0})]
    out = spot(flows(render(int(3 * FPS), ev, sigma=1.0)))
    kept = [i for i in out if not i.discarded]
    assert [i.kind for i in kept] == ["micro"], [(i.kind, i.onset, i.offset, i.rois) for i in out]


def test_sub_pixel_lid_motion_is_no_blink():
    """A blink sweeps the lid over the eye opening (px); eye-region motion of a fraction of a pixel (AU6 + AU7
    narrowing the eye, a lid lowering a little) is an expression, whichever way the lid goes."""
    ev = [micro(1.5, {45: 0.6})]
    fl = flows(render(int(3 * FPS), ev, sigma=1.0))
    kinds = [i.kind for i in spot(fl) if not i.discarded]
    assert kinds == ["micro"], kinds
    assert [i.kind for i in spot(fl, SpotParams(blink_min_px=0.0)) if not i.discarded] == ["blink"]


def test_a_micro_shorter_than_micro_min_s_is_a_glitch():
    """Two flows that jump in one region (a crop or flow glitch) make a 0.1-s interval; a facial action goes
    and comes back, so intervals under micro_min_s are discarded with the reason."""
    lay = RoiFeatures(S)
    mouth = np.flatnonzero(lay.roi_of == lay.names.index("mouth_left"))

    def run(params: SpotParams):
        rng, sp, out = np.random.default_rng(0), Spotter(params), []
        for k in range(1, 120):
            f = rng.normal(0, 0.02, (len(lay.roi_of), 2))
            f[mouth, 1] -= {59: 0.1, 60: 0.5}.get(k, 0.0)
            t = int(k / FPS * 1e9)
            out += sp.push_features(k, t, t, 1, max(0, k - LAG), f, 0.0, lay.roi_of)
        return out + sp.finish()

    (kept,) = run(SpotParams(micro_min_s=0.05))
    assert kept.kind == "micro" and not kept.discarded and kept.duration_s == pytest.approx(0.1)
    (short,) = run(SpotParams(micro_min_s=0.15))
    assert "too short for a facial action" in short.discarded


def test_a_displacement_swinging_past_its_start_is_no_micro_expression():
    """A micro-expression rises and returns. Mouth flow that jumps up and then swings past the start the
    other way (how a noisy onset frame looks: every chained displacement is measured from it) is
    discarded with the reason; the same amplitude rising and returning is a micro-expression."""
    lay = RoiFeatures(S)
    mouth = np.flatnonzero(np.isin(lay.roi_of, [lay.names.index("mouth_left"), lay.names.index("mouth_right")]))

    def run(profile: list[float]) -> list:
        rng, sp, out = np.random.default_rng(0), Spotter(SpotParams()), []
        x = np.zeros(150)
        x[60:60 + len(profile)] = 0.4 * np.array(profile)  # vertical mouth displacement, crop px
        for k in range(1, 150):
            f = rng.normal(0, 0.02, (len(lay.roi_of), 2))
            f[mouth, 1] += x[k] - x[max(0, k - LAG)]
            t = int(k / FPS * 1e9)
            out += sp.push_features(k, t, t, 1, max(0, k - LAG), f, 0.0, lay.roi_of)
        return [i for i in out + sp.finish() if i.kind == "micro"]

    (rise,) = run([0.3, 0.7, 1, 1, 0.7, 0.3])
    assert not rise.discarded
    (swing,) = run([1, -0.6, -0.8, -0.6, -0.3])
    assert "swings past its start" in swing.discarded


def test_slowly_fading_expression_is_macro():
    """A fast rise and a slow (1.3 s) fade: too slow per lag to count as moving, but not over until the
    face is back, so one macro interval, never a micro one ending at the apex."""
    ev = [{"aus": {14: 3.5}, "on": 1.4, "apex": 1.6, "off": 2.9}]
    out = spot(flows(render(int(3.8 * FPS), ev, sigma=1.0, seed=4)))
    kinds = [i.kind for i in out if not i.discarded]
    assert "micro" not in kinds and "macro" in kinds, [(i.kind, i.onset, i.offset) for i in out]


def test_alignment_jitter_is_not_head_motion():
    """Per-frame jitter of the face position (a webcam's, removed by stabilisation) averages out over
    0.1 s and does not discard; the same speed sustained in one direction does."""
    ev = micro_events(1.5)[:1]
    fl = flows(render(int(2.6 * FPS), ev, sigma=1.0))
    rng = np.random.default_rng(0)
    jitter = {k: FrameInfo(1.6, 0.05, 1.0, tuple(rng.normal(0, 1.0, 2))) for k in range(len(fl) + 1)}
    kept = [i for i in spot(fl, info=jitter) if not i.discarded]
    assert [i.kind for i in kept] == ["micro"], [(i.kind, i.discarded) for i in spot(fl, info=jitter)]
    on, off = frames_of(ev[0])
    moving = {k: FrameInfo(1.6, 0.05, 1.0, (1.6 * float(np.clip(k, on - 3, off + 3)), 0.0))
              for k in range(len(fl) + 1)}
    out = spot(fl, info=moving)
    assert out and all(i.discarded.startswith("head motion") for i in out), [(i.kind, i.discarded) for i in out]


def test_frame_info_from_the_face_node_transform():
    M = np.array([[0.5, 0.0, 10.0], [0.0, 0.5, 20.0]])
    info = FrameInfo.from_transform(0.2, 0.05, M)
    assert info.scale == pytest.approx(0.5)
    c = (S - 1) / 2
    assert np.allclose(M[:, :2] @ np.array(info.position) + M[:, 2], [c, c])


def test_held_expression_is_macro_not_two_micros():
    ev = [{"aus": {12: 2.0}, "on": 1.4, "apex": 1.6, "off": 3.4, "hold": 1.4}]
    out = spot(flows(render(int(4.2 * FPS), ev, sigma=1.0)))
    kinds = [i.kind for i in out if not i.discarded]
    assert "micro" not in kinds and "macro" in kinds, [(i.kind, i.onset, i.offset) for i in out]


def test_head_movement_discards_with_a_reason():
    """The face node reports a large head motion over a micro-expression: discarded, reason given."""
    ev = micro_events(1.5)[:1]
    fl = flows(render(int(2.6 * FPS), ev, sigma=1.0))
    on, off = frames_of(ev[0])
    info = {k: FrameInfo(head_motion=3.0 if on <= k <= off else 0.1, residual=0.05, scale=1.0)
            for k in range(len(fl) + 1)}
    out = spot(fl, info=info)
    assert out and all(i.discarded.startswith("head motion") for i in out), [(i.kind, i.discarded) for i in out]


def test_rigid_motion_in_the_crop_is_removed_or_discarded():
    """A fast rigid shift of the whole crop (no expression): never a micro event."""
    n = int(3.5 * FPS)
    shift = np.zeros((n, 2))
    t = np.arange(n) / FPS
    w = (t > 1.5) & (t < 2.1)
    shift[w, 0] = 3.0 * np.sin(np.pi * (t[w] - 1.5) / 0.6)
    out = spot(flows(render(n, [], sigma=1.0, shift=shift)))
    assert not [i for i in out if i.kind == "micro" and not i.discarded], [(i.kind, i.discarded) for i in out]


def test_rigid_motion_limit_is_in_noise_units_of_the_face():
    """The same 10 px/s of rigid motion flags a frame of a steady face but not one of a face whose
    rigid motion jitters at that level all the time (a webcam): the limit follows each face's noise.
    With a lagged flow (lag 3), one flow over the limit is the fit's noise; two in a row are motion."""
    from edge.perception.spot import RoiFeatures

    rf = RoiFeatures(128)
    rng = np.random.default_rng(0)
    flags = {}
    for lag, last in ((1, 1), (3, 1), (3, 2)):
        for name, jitter in (("steady", 0.5), ("jittery", 3.0)):
            sp = Spotter(SpotParams())
            for k in range(3, 120):  # 4 s of quiet history at 30 fps
                rigid = (abs(rng.normal(1.0, jitter)) if k < 120 - last else 10.0) * lag / FPS
                sp.push_features(k, int(k / FPS * 1e9), 0, 0, k - lag, rng.normal(0, 0.02, (len(rf.roi_of), 2)),
                                 rigid, rf.roi_of)
            flags[(lag, last, name)] = sp.tracks[0].frames[-1].flag
    assert flags[(1, 1, "steady")].startswith("rigid motion"), flags
    assert flags[(3, 1, "steady")] == "", flags
    assert flags[(3, 2, "steady")].startswith("rigid motion"), flags
    assert flags[(1, 1, "jittery")] == flags[(3, 2, "jittery")] == "", flags


def test_brow_blocks_within_reach_of_the_lids():
    """Brow blocks within a block of the eye ROIs count as dragged by a lid (the blink test): the spotting
    flow spreads a lid's sweep about a block up. No other ROI's blocks do."""
    from edge.perception.geometry import ROIS
    from edge.perception.spot import BLOCK_FRAC

    for size in (128, 256):
        rf = RoiFeatures(size)
        names = [rf.names[r] for r in rf.roi_of[:rf.n_blocks]]
        brows = {c for c, n in enumerate(names) if n.startswith("brow")}
        reach = set(np.flatnonzero(rf.lid_reach))
        eye_top = round(ROIS["eye_left"][1] * size)
        near = {c for c in brows if rf.slices[c][0].stop >= eye_top - size * BLOCK_FRAC}
        assert reach == near == brows  # edge.perception.geometry's brow ROIs are two blocks tall at any crop size
    assert not rf.lid_reach[[n not in ("brow_left", "brow_right") for n in names] + [False] * len(rf.pairs)].any()


def test_a_dropped_frame_keeps_the_interval_a_long_gap_discards_it():
    """Latest-wins links drop a frame under load: the lagged flows still overlap, so a micro-expression
    with one frame missing is still spotted; a gap as long as the flow lag breaks the chain: discarded."""
    ev = micro_events(1.5)[:1]
    fl = flows(render(int(2.6 * FPS), ev, sigma=1.0))
    on, off = frames_of(ev[0])
    mid = (on + off) // 2
    one = [x for x in fl if x[0] != mid]
    kept = [i for i in spot(one) if i.kind == "micro" and not i.discarded]
    assert kept and abs(kept[0].onset - on) <= 3, [(i.kind, i.onset, i.offset, i.discarded) for i in spot(one)]
    gap = [x for x in fl if not mid - 1 <= x[0] <= mid + 1]  # three frames in a row (= the lag)
    out = spot(gap)
    assert not [i for i in out if i.kind == "micro" and not i.discarded], [(i.kind, i.discarded) for i in out]
    assert any("dropped" in i.discarded for i in out)


def test_distractors_only_give_no_micro_events():
    ev = [{"aus": {45: 5.0}, "on": 1.3, "apex": 1.38, "off": 1.55},
          {"aus": {6: 4.0, 12: 4.0}, "on": 2.2, "apex": 2.6, "off": 4.4, "hold": 1.2},
          {"aus": {45: 5.0}, "on": 5.0, "apex": 5.1, "off": 5.3}]
    out = spot(flows(render(int(6.0 * FPS), ev, sigma=2.0, seed=5)))
    assert not [i for i in out if i.kind == "micro" and not i.discarded], \
        [(i.kind, i.onset, i.offset, i.rois) for i in out]


def test_track_loss_discards_an_open_event():
    ev = [{"aus": {12: 2.0}, "on": 1.4, "apex": 1.6, "off": 3.0, "hold": 1.0}]
    fl = flows(render(int(2.0 * FPS), ev, sigma=1.0))
    sp = Spotter()
    for k, ref, uv in fl:
        t = int(k / FPS * 1e9)
        assert not sp.push(k, t, t, 7, ref, uv)
    out = sp.end_track(7, "track lost")
    assert len(out) == 1 and out[0].discarded == "track lost"


def test_provisional_onset_and_apex_come_before_the_interval_and_match_it():
    """Both detectors tell, before an interval closes, the onset and apex it will have (the spot node sends
    them so classify can prepare the model input): the onset threshold once the event is past its apex,
    the rise-and-return score once its apex can be measured."""
    for amp, params in ((0.3, SpotParams(k_on=1e9)), (1.0, SpotParams(k_bump=1e9))):
        ev = micro_events(amp)
        fl = flows(render(int(7.5 * FPS), ev, sigma=1.0, seed=1))
        sp, seen, found = Spotter(params), {}, []
        for k, ref, uv in fl:
            t = int(round(k / FPS * 1e9))
            for iv in sp.push(k, t, t, 1, ref, uv):
                if iv.kind == "micro" and not iv.discarded:
                    found.append(((iv.onset, iv.apex), k))
            pv = sp.tracks[1].provisional()
            if pv is not None:
                seen.setdefault(pv, k)
        assert len(found) >= 3, found
        assert all(key in seen and seen[key] < k for key, k in found), (found, seen)


def test_rise_and_return_spots_micros_below_the_onset_threshold():
    """0.3 px micro-expressions: the onset threshold alone finds few; the rise-and-return score (in its own
    noise units) finds most, with no false micro events."""
    ev = micro_events(0.3)
    fl = flows(render(int(7.5 * FPS), ev, sigma=1.0, seed=1))
    onset_only, (tp0, _, _) = f1_micro(spot(fl, SpotParams(k_bump=1e9)), ev)
    out = spot(fl)
    score, (tp, fp, fn) = f1_micro(out, ev)
    assert tp > tp0 and fp == 0 and score >= 0.75, (onset_only, (tp, fp, fn),
                                                    [(i.kind, i.onset, i.offset) for i in out])


@pytest.mark.xfail(reason="0.5 px AU fields under sigma=3: AU1+2 and AU12 are found, AU4 and AU17 alone stay under "
                          "k_bump (F1 0.67); target F1 >= 0.75 not reached yet", strict=False)
def test_half_pixel_under_sigma3():
    ev = micro_events(0.5)
    out = spot(flows(render(int(7.5 * FPS), ev, sigma=3.0, seed=2)))
    assert f1_micro(out, ev)[0] >= 0.75


def test_bad_flow_shape_is_a_user_error():
    with pytest.raises(UserError, match="flow must be"):
        Spotter().push(1, 0, 0, 1, 0, np.zeros((3, 128, 128), np.float32))


# ------------------------------------------------------------------------------------------ the node

def node_messages(crops: list[np.ndarray], fl: list, head_motion: dict[int, float] | None = None
                  ) -> list[tuple[str, Message]]:
    """The face node's crops and the flow node's flows messages of one track (id 4), frame by frame."""
    M = np.array([[[0.5, 0, 10], [0, 0.5, 20]]], np.float32)
    out = []
    for k, crop in enumerate(crops):
        t = int(k / FPS * 1e9)
        motion = (head_motion or {}).get(k, 0.1)
        out.append(("crops", Message(
            "crops", "cam0", k, k, t, t, {"crop_size": S, "ended": [], "head_motion": [motion]},
            {"crops": crop[None], "track_ids": np.array([4], np.int32),
             "boxes": np.array([[10, 20, 256, 256]], np.float32), "points": np.zeros((1, 2, 2), np.float32),
             "residual": np.array([0.05], np.float32), "transforms": M})))
        if k:
            ref, uv = fl[k - 1][1], fl[k - 1][2]
            out.append(("flows", Message("flows", "cam0", k, k, t, t, {"lag": LAG, "scale": 1.0},
                                         {"flows": uv[None].astype(np.float32), "track_ids": np.array([4], np.int32),
                                          "ref_frames": np.array([ref], np.int64)})))
    return out


def test_spot_node_emits_intervals_with_crops(clip_1px, tmp_path):
    from nodes.spot import SpotNode

    ev, fl = clip_1px
    crops = render(int(7.5 * FPS), ev, sigma=1.0)
    (tmp_path / "p.json").write_text(json.dumps({"params": {"k_on": 4.5}}))
    node = SpotNode.for_test(params={"params_file": str(tmp_path / "p.json")})
    node.setup()
    for port, msg in node_messages(crops, fl):
        node.process(port, msg)
    node.end_of_stream()
    ivs = [m for port, m in node.emitted if port == "intervals"]
    micro_ivs = [m for m in ivs if m.meta["kind"] == "micro"]
    assert len(micro_ivs) >= 3
    m = micro_ivs[0]
    assert m.meta["track_id"] == 4 and m.meta["onset"] <= m.meta["apex"] <= m.meta["offset"]
    assert m.arrays["onset"].shape == (S, S) and m.arrays["apex"].dtype == np.uint8
    assert np.array_equal(m.arrays["apex"], crops[m.meta["apex"]])
    a = m.meta["apex"]  # and the frames next to the apex, for classify to average over
    assert np.array_equal(m.arrays["apex_near"], np.stack([crops[a - 1], crops[a + 1]]))
    assert m.meta["box"] == [10.0, 20.0, 256.0, 256.0] and m.meta["t_offset_ns"] >= m.meta["t_onset_ns"]
    # Emitted once the offset is seen: a few frames after it, not at the end of the clip.
    assert m.frame - m.meta["offset"] <= 2 * LAG
    # Before that, once past the apex, a provisional interval with the same crops (classify prepares them).
    for m in micro_ivs:
        early = [p for p in ivs if p.meta["kind"] == "provisional" and (p.meta["onset"], p.meta["apex"]) == (
            m.meta["onset"], m.meta["apex"])]
        assert early and early[-1].frame < m.frame, [(p.meta, p.frame) for p in ivs]
        assert all(np.array_equal(early[-1].arrays[k], m.arrays[k]) for k in ("onset", "apex", "apex_near"))


def test_spot_node_gives_the_same_intervals_whatever_order_its_two_inputs_arrive_in(clip_1px):
    """ZeroMQ keeps each link in order but not the crops link against the flows link: a frame's flows can be
    read before its crops (head motion, residual). The node merges them back into frame order, so a head
    movement discards the same intervals and a file gives the same events on every run."""
    from edge.runtime.inprocess import run_chain
    from nodes.spot import SpotNode

    ev, fl = clip_1px
    crops = render(int(7.5 * FPS), ev, sigma=1.0)
    apex = round(ev[1]["apex"] * FPS)
    msgs = node_messages(crops, fl, head_motion={k: 40.0 for k in range(apex - 2, apex + 3)})

    def run(order: list[tuple[str, Message]]) -> list[tuple]:
        node = SpotNode.for_test(params={"emit_discarded": True})
        node.setup()
        run_chain([node], order)
        return [(m.meta["kind"], m.meta["onset"], m.meta.get("offset"), m.meta.get("discarded", ""))
                for port, m in node.emitted if port == "intervals"]

    in_order = run(msgs)
    assert any("head motion" in d for *_, d in in_order), in_order  # the head movement does discard
    flows_first = sorted(msgs, key=lambda pm: (pm[1].frame, pm[0] == "crops"))
    crops_late = sorted(msgs, key=lambda pm: pm[1].frame + (7 if pm[0] == "crops" else 0))
    assert run(flows_first) == in_order
    assert run(crops_late) == in_order


def test_a_wide_expression_is_not_stretched_by_noise_in_its_many_channels():
    """A wide expression makes tens of channels hot; on heavy-tailed quiet flows one of them is over k_off
    on most frames by chance. The walk back to the onset goes by their RMS score and the event's motion by
    the flow projected on its own pattern, not by their best channel (with which 3 of these 4 onsets came
    8-16 frames early, offsets up to 15 frames late, and two micro-expressions were called macro)."""
    lay = RoiFeatures(S)
    moving = np.isin(lay.roi_of, [lay.names.index(r) for r in ("brow_left", "brow_right", "mouth_left",
                                                                "mouth_right")])
    k0, n = 90, 150  # the face starts moving after frame k0: up 1 px over 5 frames, back over 5
    disp = np.interp(np.arange(n), [0, k0, k0 + 5, k0 + 10, n], [0, 0, 1.0, 0, 0])
    for seed in range(1, 5):
        rng, sp, out = np.random.default_rng(seed), Spotter(), []
        for k in range(1, n):
            f = 0.02 * rng.standard_t(5, (len(lay.roi_of), 2))
            f[moving, 1] -= disp[k] - disp[max(0, k - LAG)]
            t = int(k / FPS * 1e9)
            out += sp.push_features(k, t, t, 1, max(0, k - LAG), f, 0.0, lay.roi_of)
        iv = max(out + sp.finish(), key=lambda i: i.score)
        assert iv.kind == "micro" and abs(iv.onset - k0) <= 1 and abs(iv.offset - (k0 + 10)) <= 1, \
            (seed, iv.kind, iv.onset, iv.offset)


def test_rise_and_return_onset_and_apex_are_the_faces_not_the_lagged_average():
    """The rise-and-return detector reads onset, apex and offset off the accumulated displacement, which
    averages the face's displacement over the last `lag` frames and so trails it by (lag - 1) / 2 frames:
    the onset and apex it reports are moved back by that much. Here the face goes up 1 px in 4 frames and
    back in 4 (onset k0, apex k0 + 4 on the face; k0 + 1 and k0 + 5 on the lagged average). The offset is
    where the average is back under edge_frac (k0 + 9; the face: k0 + 8)."""
    lay = RoiFeatures(S)
    moving = np.isin(lay.roi_of, [lay.names.index(r) for r in ("brow_left", "brow_right")])
    k0, n = 60, 110
    disp = np.interp(np.arange(n), [0, k0, k0 + 4, k0 + 8, n], [0, 0, 1.0, 0, 0])
    rng, out = np.random.default_rng(0), []
    sp = Spotter(SpotParams(k_on=1e9))  # the onset threshold never fires: rise and return only
    for k in range(1, n):
        f = 0.01 * rng.standard_normal((len(lay.roi_of), 2))
        f[moving, 1] -= disp[k] - disp[max(0, k - LAG)]
        t = int(k / FPS * 1e9)
        out += sp.push_features(k, t, t, 1, max(0, k - LAG), f, 0.0, lay.roi_of)
    (iv,) = [i for i in out + sp.finish() if not i.discarded]
    assert (iv.kind, iv.onset, iv.apex, iv.offset) == ("micro", k0, k0 + 4, k0 + 9)
