"""An event's interval: moved ROIs, kind (blink / micro / macro) and the discard rules.

Kind from duration in seconds (capture timestamps, so any fps): micro <= `micro_max_s` < macro. An event
where the eyes move by `blink_min_px` or more, every other ROI much less (`blink_ratio`), and the lids move
down (closing; expressions move eye-region skin up) is a blink, unless a ROI away from the lids clearly
moved too (`blink_expr_px`, `blink_expr_k`): an expression during a blink.

Discarded, with the reason: intervals overlapping a flagged frame (track loss, a gap of dropped frames as
long as the flow lag, head speed above `head_speed_max`, a stabilisation residual above `residual_max`,
rigid motion left in the crop above its limit; head motion also within `head_margin_s` of the interval, as
a head turn is slow where it turns); a micro interval with head speed within `head_margin_s` above the
face's micro head limit (parallax of that size is left in the crop); a micro interval next to an occluded
face edge (a hand coming in: edge.perception.spot.context); motion already under way when
spotting started; a micro shorter than `micro_min_s` (a facial action goes and comes back: a glitch); a
peak ROI displacement below `min_intensity_px`; a micro interval where only the eyes moved, more
sideways than vertically (a gaze shift); the jaw opening alone; a displacement above `micro_max_px`. The rigid-motion and micro head limits are in noise units
of each face's own recent speeds (edge.perception.spot.spotter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.perception.geometry import ROIS
from edge.perception.spot.context import SPEECH_ROIS, ContextTracker
from edge.perception.spot.features import EYE_ROIS, PAIRS
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import FrameRecord, Interval


@dataclass
class TrackContext:
    """What an interval's description reads about its track (nothing here is changed)."""

    params: SpotParams
    track_id: int
    roi_of: np.ndarray             # (C,) ROI index of each channel, -1-k for pair k (RoiFeatures.roi_of)
    lid_reach: np.ndarray          # (C,) bool: brow channels next to the lids (RoiFeatures.lid_reach)
    frames: Sequence[FrameRecord]  # the track's recent frames: their flags and head speeds
    tolerance: np.ndarray          # (C,) noise of a chained displacement times k_off, crop px
    head_limit: float              # this face's head-speed limit for micro intervals, crop px/s
    ready_frame: int | None        # the first frame spotting ran on
    context: ContextTracker | None = None  # the track's facial context (eye closures)


@dataclass
class Measured:
    """One event as a detector measured it."""

    onset: FrameRecord
    apex: FrameRecord
    offset: FrameRecord
    displacement: np.ndarray  # (T, C, 2) each event frame's displacement since the onset, crop px
    channels: np.ndarray      # (C,) bool: the channels that carried the event
    score: float              # peak score, noise units
    lag: int                  # flow lag, frames
    forced: bool = False      # closed before it ended (max_open_s, end of stream): macro
    reason: str = ""          # a discard reason known beforehand (track lost)



def describe(ctx: TrackContext, m: Measured) -> Interval:
    """The interval m.onset -> m.apex -> m.offset, with its ROIs, kind and discard reason (module doc)."""
    p, roi_of, D, channels = ctx.params, ctx.roi_of, m.displacement, m.channels
    on, apex, off, reason = m.onset, m.apex, m.offset, m.reason
    mags = np.hypot(D[..., 0], D[..., 1])  # (T, C) crop px
    names = list(ROIS)
    single = roi_of >= 0
    pk = mags.max(0)

    def per_roi(values: np.ndarray, reduce=np.max) -> np.ndarray:  # (C,) -> (R,) over single blocks
        return np.array([reduce(values[single & (roi_of == r)]) for r in range(len(names))])

    peak = per_roi(pk)  # (R,) crop px
    tol_r = per_roi(ctx.tolerance, np.min)
    # Only ROIs with a channel that scored k_on count: chained displacement alone can drift.
    sig = np.array([bool(channels[single & (roi_of == r)].any()) for r in range(len(names))])
    for k, pair in enumerate(PAIRS.values()):  # a mirrored pair channel speaks for both sides
        if channels[roi_of == -1 - k].any():
            sig[[names.index(r) for r in pair]] = True
    during = [g for g in ctx.frames if on.frame <= g.frame <= off.frame]
    muted = np.zeros(len(names), bool)  # ROIs talking or an occluder muted at some frame of the interval
    for g in during:
        if g.muted is not None and g.muted.any():
            muted |= [bool(g.muted[single & (roi_of == r)].all()) for r in range(len(names))]
    if not reason and sig.any() and not (sig & ~muted).any():
        reason = muted_reason(during)
    sig &= ~muted
    occluder = peak[[names.index(r) for r in interval_occluded(during)]]  # crop px, before muting
    peak = np.where(sig, peak, 0.0)
    ok = peak > tol_r
    top = float(peak.max())
    # Something moving over the face moves more than what it uncovers: an interval whose occluded ROIs
    # moved more than its own ROIs is the occluder's (its edge and the face's re-registration under it
    # shift the ROIs next to it by a fraction of its own motion: docs/spotting.md).
    if not reason and occluder.size and float(occluder.max()) > top:
        reason = f"{muted_reason(during)} (the occluded ROIs moved {float(occluder.max()):.1f} crop px, more than its own)"
    rois = [names[r] for r in np.flatnonzero(ok & (peak >= p.roi_frac * top))]
    duration = (off.t_mono_ns - on.t_mono_ns) * 1e-9
    # Blink: the eyes dominate. A lid sweeps several px, and flow bleeds some of it into the brow
    # blocks next to the eye, so "eyes only" means every other ROI well below the eyes, not zero.
    eye_i = [names.index(r) for r in EYE_ROIS]
    # Peaks less their chained-noise tolerance: a noisy mouth block must not outvote a lid.
    net = np.maximum(peak - tol_r, 0.0)
    # Brow blocks next to the lids that move down with them are the lid's, not the brow's.
    i_peak = int(np.argmax(mags.max(1)))
    dragged = ctx.lid_reach & (D[i_peak, :, 1] > 0)
    own = per_roi(np.where(dragged, 0.0, pk))
    own = np.maximum(np.where(sig, own, 0.0) - tol_r, 0.0)
    eye, other = net[eye_i].max(), np.delete(own, eye_i).max()
    # ... and the lids close: in a blink the upper lid sweeps DOWN over the eye, while the eye-region
    # action units of expressions (AU5 lid raiser, AU6 cheek raiser, AU7 lid tightener) all move skin
    # UP (FACS). The sign of the eye blocks' vertical displacement where they peak tells them apart.
    eye_blocks = single & np.isin(roi_of, eye_i)
    i_eye = int(np.argmax(mags[:, eye_blocks].max(1)))
    closing = float(D[i_eye][eye_blocks, 1].sum()) > 0  # v > 0: down (y down)
    # ... unless a ROI away from the lids carried the event too and clearly moved: an expression during
    # a blink (common in real footage). Brow blocks within a lid's reach cannot tell (the lid drags them
    # down as it closes and up as it opens), so brow-only expressions under a blink stay blinks.
    far = per_roi(np.where(ctx.lid_reach, 0.0, pk))
    far = np.maximum(np.where(sig, far, 0.0) - tol_r, 0.0)
    far[eye_i] = 0.0
    k_far = int(np.argmax(far))
    expression = far[k_far] >= p.blink_expr_px and far[k_far] >= p.blink_expr_k * tol_r[k_far]
    blink = eye >= p.blink_min_px and other < p.blink_ratio * eye and closing
    if blink and expression:  # the lids outshine the expression's own ROIs: list those too
        rois = [r for k, r in enumerate(names) if r in rois or far[k] >= p.roi_frac * far[k_far]]
    fps = 1e9 * max(1, off.frame - on.frame) / max(1, off.t_mono_ns - on.t_mono_ns)
    closure = None if ctx.context is None else ctx.context.closure_near(
        on.frame, off.frame, round(p.blink_near_s * fps))
    # With the eyes known shut, only the lower face makes it an expression during a blink: real lids also
    # drag the cheeks, which the nose ROIs see.
    lower = [names.index(r) for r in SPEECH_ROIS]
    lower_moved = bool((far[lower] >= p.blink_expr_px).any() and (far[lower] >= p.blink_expr_k * tol_r[lower]).any())
    if closure is not None and not lower_moved:
        # The eyes shut over it and nothing away from the eyes moved: the blink itself (or eyes closing),
        # whatever the brows did; the blink interval from the eye state stands for it.
        kind = "blink"
        if not reason:
            reason = (f"blink: the eyes shut at frames {closure.shut_from}-{closure.shut_to} (the blink "
                      "interval from the eye state stands for it)")
    elif blink and not expression:
        kind = "blink"
    elif m.forced or duration > p.micro_max_s:
        kind = "macro"
    else:
        kind = "micro"
    # A head movement slows down where it turns (and starts and ends slowly): its fast frames within
    # head_margin_s of the interval discard it too (stabilisation leaves parallax in the crop then).
    margin = int(p.head_margin_s * 1e9)
    flags = sorted({f.flag for f in ctx.frames if f.flag and (
        on.frame <= f.frame <= off.frame + m.lag or (f.flag.startswith("head motion")
                                                     and on.t_mono_ns - margin <= f.t_mono_ns
                                                     <= off.t_mono_ns + margin))})
    if not reason and flags:
        reason = flags[0]
    # A micro-expression needs a steady face: a slower head movement (its ends, a drift) than the
    # head-motion flag catches leaves parallax of a micro-expression's size in the stabilised crop.
    if not reason and kind == "micro":
        speed = max((g.speed for g in ctx.frames
                     if on.t_mono_ns - margin <= g.t_mono_ns <= off.t_mono_ns + margin), default=0.0)
        limit = max(p.bump_head_speed_max, ctx.head_limit)
        if speed > limit:
            reason = f"head motion {speed:.0f} crop px/s > {limit:.0f} (a micro-expression needs a steady face)"
    # A hand coming to the face crosses the jaw line first, and the face node re-registers the face under
    # it: the lower ROIs shift by a micro-expression's size before the hand covers any of them. A micro
    # interval with a frame where the face's edge is occluded, during it or within its flow lag before (its
    # flows reach back that far), is the hand's. Macro intervals keep their own (a broad smile can raise
    # the jaw line's residual too).
    if not reason and kind == "micro":
        edge = max((g.context.edge for g in ctx.frames if g.context is not None
                    and on.frame - m.lag <= g.frame <= off.frame and g.context.edge == g.context.edge),
                   default=0.0)
        if edge >= p.occlusion_k:
            reason = (f"occluded: the face's edge (warp residual {edge:.1f} times its usual at the jaw line, "
                      "a hand coming in)")
    # Motion already under way when spotting started (a new track, the first second of a stream):
    # its true onset is unknown, and the part seen (a blink reopening, say) is not what it looks like.
    if not reason and ctx.ready_frame is not None and on.frame <= ctx.ready_frame + m.lag:
        reason = "in progress when spotting started"
    if not reason and kind == "micro" and duration < p.micro_min_s - 1e-3:  # - 1 ms: timestamp rounding
        reason = f"{duration * 1000:.0f} ms < micro_min_s {p.micro_min_s}: too short for a facial action"
    if not reason and top < p.min_intensity_px:
        reason = f"peak displacement {top:.3f} px < min_intensity_px {p.min_intensity_px}"
    # The jaw dropping with nothing else moving is the mouth opening (to speak, at the first syllable,
    # before talking is known from the swings; or to breathe), not an expression: the action units of
    # emotions move the chin up (AU17) or the lips, and surprise's jaw drop comes with the brows (FACS).
    chin = single & (roi_of == names.index("chin"))
    if not reason and kind == "micro" and rois and set(rois) <= set(SPEECH_ROIS) and chin.any():
        # at the chin's own peak: the face's peak frame can be a block of another ROI's, or the end of
        # the interval, where the jaw is already coming back up
        u, v = D[:, chin].mean(1)[int(np.argmax(np.hypot(*D[:, chin].mean(1).T)))]
        if v > max(abs(u), float(ctx.tolerance[chin].min())):
            reason = f"the jaw opening ({v:.1f} crop px down) and nothing else: the mouth opening, not an expression"
    # The eyes alone moving sideways is the gaze shifting (the iris slides under still lids), not an
    # expression: the eye-region action units move the lids and the skin round them vertically (AU5 up,
    # AU6 and AU7 up, FACS), and a blink closes them (down). "Alone" as for a blink: every ROI away from
    # the lids well below the eyes (flow bleeds into the brow blocks next to them). Compared where the
    # eye blocks peak.
    if not reason and kind == "micro" and eye > 0 and far.max() < p.blink_ratio * eye:
        sideways, vertical = np.abs(D[i_eye][eye_blocks]).sum(0)
        if sideways > vertical:
            reason = (f"the eyes alone moved, sideways ({sideways / max(sideways + vertical, 1e-9):.0%} of their "
                      "motion): the gaze shifting, not an expression")
    if not reason and kind == "micro" and top > p.micro_max_px:
        reason = (f"peak displacement {top:.1f} crop px > micro_max_px {p.micro_max_px}: larger than a "
                  "micro-expression moves")
    context = interval_context(during, apex, [names[r] for r in np.flatnonzero(muted)], closure is not None)
    return Interval(ctx.track_id, kind, on.frame, apex.frame, off.frame, on.t_mono_ns, apex.t_mono_ns,
                    off.t_mono_ns, on.t_wall_ns, apex.t_wall_ns, off.t_wall_ns, m.score, top, rois, reason,
                    context)


def interval_occluded(during: Sequence[FrameRecord]) -> list[str]:
    """The ROIs occluded at some frame of an interval."""
    return sorted({r for g in during if g.context is not None for r in g.context.occluded})


def muted_reason(during: Sequence[FrameRecord]) -> str:
    """Why every ROI that carried an interval was muted."""
    occluded = interval_occluded(during)
    if occluded:
        return "occluded: " + ", ".join(occluded)
    return "talking: only the mouth and chin moved"


def interval_context(during: Sequence[FrameRecord], apex: FrameRecord, muted: list[str], blink_near: bool) -> dict:
    """An interval's context (Interval.context; plain types, as events carry it)."""
    ctxs = [g.context for g in during if g.context is not None]
    out: dict = {"talking": any(c.talking for c in ctxs), "blink_near": blink_near,
                 "occluded": interval_occluded(during), "muted": muted}
    speech = [c.speech for c in ctxs if c.speech == c.speech]  # not nan
    if speech:
        out["speech"] = round(max(speech), 3)
    if apex.context is not None and apex.context.head_pose is not None:
        out["head_pose"] = [round(v, 1) if v == v else None for v in apex.context.head_pose]
    return out
