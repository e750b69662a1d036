"""The rise-and-return detector, for micro-expressions too small for the onset threshold (k_on).

On the accumulated displacement acc (running sum of flow / lag per channel: the face's displacement,
smoothed over one lag, plus a random walk of flow noise and any slow drift), channel c scores, for a
window of w frames ending at apex a = t - w, min(|rise|, return projected on the rise), with
rise = acc[a] - acc[a - w] and return = acc[a] - acc[t], in units of the rise's own noise scale on quiet
history (NoiseModel.rise), for w in `bump_widths_s`; the frame's score is the RMS of its BUMP_CHANNELS best
channels, as an action unit moves more skin than one block. Linear drift cancels in the return, a step (an
expression that stays, a head that does not come back) has none, and one frame's flow glitch is a step.

A score >= `k_bump` makes a candidate; once the curve after the apex has gone still, the bump is measured
against a baseline before AND after it (onset / offset at `edge_frac` of the rise and of the return) and
must have returned (`return_frac`). The accumulated displacement trails the face by (lag - 1) / 2 frames
(it averages the last `lag` frames), so the onset and apex read off it are moved back by that much (the
offset is not: see BumpDetector._close). Intervals are out 1-2 frames after their offset (the return
must have flattened).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge.perception.spot.describe import Measured
from edge.perception.spot.noise import NoiseModel
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import FrameRecord, History, Interval

BUMP_CHANNELS = 2  # the rise-and-return score is the RMS of this many best channels


@dataclass
class Candidate:
    """A pending rise and return: the best-scoring window near one apex so far."""

    score: float               # the frame's score (RMS of its BUMP_CHANNELS best channels), noise units
    window: int                # index of the window in NoiseModel.widths
    width: int                 # that window's length, frames
    apex: int                  # frame of the apex (the window's end)
    channel_scores: np.ndarray  # (C,) each channel's score, noise units
    directions: np.ndarray     # (C, 2) unit vectors of each channel's rise


class Pending(enum.Enum):
    """Why a candidate cannot be measured at this frame."""

    WAIT = "too few frames past the apex yet"
    CANCEL = "no history before the apex"


@dataclass
class Shape:
    """A candidate's curve up to the current frame."""

    frames: list[FrameRecord]  # from before its rise
    curve: np.ndarray          # (T,) event channels' displacement projected on their rise, noise units
    apex: int                  # index of the apex in frames
    channels: np.ndarray       # (C,) bool: the channels that carry it


class BumpDetector:
    """One track's rise-and-return candidates. `describe` turns a measured bump into its Interval."""

    def __init__(self, params: SpotParams, history: History, noise: NoiseModel,
                 describe: Callable[[Measured], Interval]) -> None:
        self.p, self.history, self.noise, self.describe = params, history, noise, describe
        self.candidate: Candidate | None = None

    def cancel(self) -> None:
        """Drop the pending candidate (the onset threshold took the motion: its event measures it)."""
        self.candidate = None

    def step(self, f: FrameRecord) -> Interval | None:
        """Score frame f, keep the best candidate near its apex, and measure it once past the apex."""
        widths, rise_noise = self.noise.widths, self.noise.rise
        if rise_noise is None or not widths or self.noise.flow is None:
            return None
        t, by_frame = f.frame, self.history.by_frame
        best_score, best_window, best = 0.0, -1, None
        for i, w in enumerate(widths):
            a, b = by_frame.get(t - w), by_frame.get(t - 2 * w)
            if a is None or b is None or b.frame <= self.history.quiet_from or a.acc is None or b.acc is None:
                continue
            rise, back = a.acc - b.acc, a.acc - f.acc
            rise_len = np.hypot(rise[:, 0], rise[:, 1]) + 1e-12
            z = np.minimum(rise_len, (back * rise).sum(1) / rise_len) / rise_noise[i]
            if f.muted is not None:
                z[f.muted] = 0.0  # talking or occluded channels (edge.perception.spot.context)
            # Two channels, not one: an action unit moves a patch of skin wider than one block, while a
            # noise bump in one block (low-texture chin, one brow) shows in that block alone (and, at half
            # strength, in its mirrored pair): docs/spotting.md.
            top = float(np.sqrt(np.mean(np.partition(z, -BUMP_CHANNELS)[-BUMP_CHANNELS:] ** 2)))
            if top > best_score:
                best_score, best_window, best = top, i, (z, rise / rise_len[:, None])
        cand = self.candidate
        if best is not None and best_score >= self.p.k_bump:
            w = widths[best_window]
            new = Candidate(best_score, best_window, w, t - w, best[0], best[1])
            if cand is None or (abs(new.apex - cand.apex) <= max(w, cand.width) and best_score > cand.score):
                self.candidate = cand = new
        # Measured once the shortest window has passed the apex: the longer windows' scores only pick the
        # channels, and waiting for them would hold every event back by their length (latency).
        if cand is None or t < cand.apex + widths[0] + 1:
            return None
        return self._close(f)

    def provisional(self) -> tuple[int, int] | None:
        """(onset, apex) frames of the pending candidate, once its apex can be measured (else None)."""
        if self.candidate is None or not self.history.frames:
            return None
        last = self.history.frames[-1]
        shape = self._shape(last)
        if isinstance(shape, Pending):
            return None
        _, on, apex = self._onset_apex(shape, last)
        return on.frame, apex.frame

    def _close(self, f: FrameRecord) -> Interval | None:
        """Measure the pending candidate, or wait (None). The curve P is the event channels' displacement
        projected on their rise directions, in noise units (weighted by their scores). After the apex, P
        is still once it has not fallen by 1 noise unit for a quarter of the shortest window; then pre =
        the lowest P before the apex (back to two longest windows), post = the lowest after it. It returned
        if peak - post >= return_frac * (peak - pre) (else a step, an expression that stays: the onset
        threshold's business); onset = the last frame before the apex at pre + edge_frac of the rise,
        offset = the first after it at post + edge_frac of the return: a baseline from before and after,
        so drift is not an event."""
        p, cand = self.p, self.candidate
        assert cand is not None
        if (f.frame - cand.apex) / self.history.fps() > 2 * p.micro_max_s:  # not still by now: no micro
            self.candidate = None
            return None
        shape = self._shape(f)
        if shape is Pending.CANCEL:
            self.candidate = None
        if isinstance(shape, Pending):
            return None
        frames, P, i_apex = shape.frames, shape.curve, shape.apex
        j = i_apex
        for k in range(i_apex + 1, len(frames)):
            if P[k] < P[j] - 1.0:
                j = k
        # Still for a quarter of the shortest window (one frame at 30 fps): the falls are counted in whole
        # noise units, so a return still under way shows; any longer only delays the event (latency).
        if frames[-1].frame - frames[j].frame < max(1, self.noise.widths[0] // 4):
            return None  # still returning
        peak, pre, post = float(P[i_apex]), float(P[:i_apex + 1].min()), float(P[i_apex:].min())
        self.candidate = None
        if peak - post < p.return_frac * (peak - pre):
            return None
        i_on, on, apex = self._onset_apex(shape, f)
        i_off = min(k for k in range(i_apex + 1, len(frames)) if P[k] <= post + p.edge_frac * (peak - post))
        # The offset is not moved back like the onset and apex (see _onset_apex): edge_frac of a tapering
        # return is reached before the face is back, which the trailing cancels (moved back too, offsets
        # came early on the bench and IoU fell: docs/spotting.md), and the event's latency counts from it.
        off = frames[i_off]
        event = frames[i_on:]
        for g in event:
            g.busy = True
        D = np.stack([g.acc - on.acc for g in event])
        iv = self.describe(Measured(on, apex, off, D, shape.channels, cand.score, max(1, f.frame - f.ref)))
        self.history.quiet_from = off.frame
        return iv

    def _shape(self, f: FrameRecord) -> Shape | Pending:
        """The pending candidate's curve up to frame f, or why it cannot be measured yet."""
        p, cand, widths = self.p, self.candidate, self.noise.widths
        start = cand.apex - 2 * widths[-1] - 2
        frames = [g for g in self.history.frames if start <= g.frame <= f.frame and g.acc is not None]
        i_apex = next((k for k, g in enumerate(frames) if g.frame >= cand.apex), None)
        if i_apex is None or i_apex == 0:
            return Pending.CANCEL
        ch = cand.channel_scores >= p.k_off
        weights = cand.channel_scores[ch] / np.linalg.norm(cand.channel_scores[ch])
        A = np.stack([g.acc[ch] for g in frames])  # (T, c, 2)
        P = ((A * cand.directions[ch]).sum(2) / self.noise.rise[cand.window][ch]) @ weights
        half = max(1, cand.width // 2)
        lo, hi = max(1, i_apex - half), min(len(frames) - 2, i_apex + half)
        if hi < lo:
            return Pending.WAIT
        return Shape(frames, P, lo + int(np.argmax(P[lo:hi + 1])), ch)

    def _onset_apex(self, shape: Shape, f: FrameRecord) -> tuple[int, FrameRecord, FrameRecord]:
        """(index of the onset edge, onset, apex) of a candidate: frames[i] is the last frame before the
        apex at pre + edge_frac of the rise. acc[t] is the face's displacement averaged over frames
        t - lag + 1 .. t (a running sum of lagged flows / lag), so it trails the face by (lag - 1) / 2
        frames: onset and apex move back by that from frames[i] and frames[apex]."""
        P, i_apex, frames = shape.curve, shape.apex, shape.frames
        pre, peak = float(P[:i_apex + 1].min()), float(P[i_apex])
        i = max(k for k in range(i_apex) if P[k] <= pre + self.p.edge_frac * (peak - pre))
        s = (max(1, f.frame - f.ref) - 1) // 2
        return i, frames[max(0, i - s)], frames[i_apex - s]
