"""Blink intervals from the facial state: an eye closure that reopened (edge.perception.spot.context).

A blink is an eye closure, whatever the brows and cheeks do: from landmarks with lid points the spotter
knows when the eyes were shut, so the interval comes from the eye openness curve, not from the flow
(onset: the lids leave their open level; apex: the most closed frame; offset: open again)."""

from __future__ import annotations

from edge.perception.spot.context import Closure
from edge.perception.spot.describe import interval_context
from edge.perception.spot.records import FrameRecord, History, Interval


def _nearest(history: History, frame: int) -> FrameRecord | None:
    """The history's record of `frame`, or of the nearest frame kept (frames dropped upstream)."""
    if frame in history.by_frame:
        return history.by_frame[frame]
    return min(history.frames, key=lambda g: abs(g.frame - frame), default=None)


def blink_interval(track_id: int, c: Closure, history: History) -> Interval:
    """The blink interval of closure `c` (kind "blink"; discarded when it was under way as the track
    started: c.start < 0)."""
    on, apex, off = (_nearest(history, k) for k in (max(0, c.start), c.deepest, c.end))
    if on is None or apex is None or off is None:  # the history holds every frame of the last seconds
        return Interval(track_id, "blink", c.start, c.deepest, c.end, 0, 0, 0, discarded="frames not kept")
    reason = "in progress when the track started" if c.start < 0 else ""
    during = [g for g in history.frames if on.frame <= g.frame <= off.frame]
    context = {**interval_context(during, apex, [], True), "eye_open_min": round(c.lowest, 3)}
    return Interval(track_id, "blink", on.frame, apex.frame, off.frame, on.t_mono_ns, apex.t_mono_ns,
                    off.t_mono_ns, on.t_wall_ns, apex.t_wall_ns, off.t_wall_ns, 0.0, 0.0,
                    ["eye_left", "eye_right"], reason, context)
