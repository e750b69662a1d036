"""The threshold detector: an event opens at k_on and closes once the face is still and back.

A channel at >= `k_on`, that also moved (>= `k_off`) the frame before, opens an event, which reaches back
over the frames where those channels moved (their RMS score >= `k_off`). While it is open, the
displacement since onset is rebuilt by chaining the flows (D[t] = F[t] + D[ref(t)]); the event closes once
the flow has been still (its best channel, or its projection on the event's pattern, under `k_off`) for
lag-1 frames AND D, projected on its apex value, is back under `return_frac`: an expression held at its
apex (flow ~0, face still displaced) stays open. Onset = the frame before the first moving flow (moved
earlier where the accumulated displacement already rose); apex = largest D; offset = the last moving flow
minus (lag - 1), the mirror of the onset, but not before D is back under `edge_frac` of its apex, or the
last frame seen when it is not yet (a slow fade is too slow per lag to count as moving, and at low SNR so
is a micro-expression's tail).

A clear micro interval (`early_close`, at least `early_margin_s` under micro_max_s) is published the
frame its displacement is back under edge_frac of its apex, i.e. at its offset frame; the event then stays
open, silently, until the flow is still. Other intervals wait for that: `lag` frames after the offset when
the face is back near where it started (one still lagged flow confirms it), lag + 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge.perception.spot.describe import Measured, muted_reason
from edge.perception.spot.noise import NoiseModel
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import FrameRecord, History, Interval


class ThresholdDetector:
    """One track's k_on / k_off events. `describe` turns a measured event into its Interval."""

    def __init__(self, params: SpotParams, history: History, noise: NoiseModel,
                 describe: Callable[[Measured], Interval]) -> None:
        self.p, self.history, self.noise, self.describe = params, history, noise, describe
        self.event: list[FrameRecord] | None = None  # frames of the open event, from its first moving frame
        self.channels: np.ndarray | None = None     # (C,) bool: channels that opened / carry the event
        self.opened_by: np.ndarray | None = None    # (C,) bool: the channels that opened it
        self.displacement: dict[int, np.ndarray] = {}  # frame -> (C, 2) displacement since the onset
        self.totals: list[float] = []               # _total() of each event frame's displacement
        self.still = 0                              # frames in a row the open event has not moved
        self.onset: FrameRecord | None = None
        self.published = False  # the open event's interval is out (early_close); it ends silently

    def triggered(self, f: FrameRecord) -> bool:
        """k_on in some channel now, and that channel moving (k_off) in the frame before too: real
        motion persists over consecutive lagged flows, while one frame's noise does not."""
        hot = f.best() >= self.p.k_on
        prev = self.history.by_frame.get(f.frame - 1)
        if not hot.any() or prev is None or prev.scores is None or prev.busy:
            return False
        return bool((prev.best()[hot] >= self.p.k_off).any())

    def open(self, trigger: FrameRecord) -> None:
        """Open an event at `trigger` (its last frame so far)."""
        self.channels = trigger.best() >= self.p.k_on
        self.opened_by = self.channels.copy()  # talking muting all of these ends the event
        # Walk back over frames still moving in those channels (their RMS score, not their best: with tens
        # of channels hot, one of them is over k_off on most quiet frames by chance, and the onset would
        # walk back into the noise): the event starts at the first of them.
        hist = list(self.history.frames)
        i = len(hist) - 1
        while i > 0 and hist[i - 1].scores is not None and hist[i - 1].frame == hist[i].frame - 1 \
                and not hist[i - 1].busy and hist[i - 1].frame >= self.history.quiet_from \
                and np.sqrt(np.mean(hist[i - 1].best()[self.channels] ** 2)) >= self.p.k_off:
            i -= 1
        self.event = hist[i:]
        for f in self.event:
            f.busy = True
        self.onset = hist[i - 1] if i > 0 else hist[i]
        self.displacement, self.totals, self.still = {}, [], 0
        for f in self.event:
            self._chain(f)

    def step(self, f: FrameRecord) -> list[Interval]:
        """Frame f of the open event: the interval if it closes (or is published early) here."""
        assert self.event is not None
        f.busy = True
        self.event.append(f)
        self._chain(f)
        if f.muted is not None and f.muted.any():
            # Talking began (or a ROI got covered): its channels stop carrying the event, and an event
            # that only they carried ends here, as what it was (describe names it).
            left = self.channels & ~f.muted
            if not (left & self.opened_by).any():  # measured on the channels it had
                return self._close(reason=muted_reason([f]))
            self.channels = left
        # Moving: the event's channels still change over one flow lag (span 1 reacts first). Around a
        # sharp apex the lagged flow is ~0 for up to lag-1 frames (x[t] ~ x[t-lag] on both slopes), so
        # the face must be still for that long, and back, before the event closes.
        if self._moving(f):
            self.still = 0
        else:
            self.still += 1
        lag = max(1, f.frame - f.ref)
        # One still frame is enough once the displacement is back near its start (edge_frac of the apex):
        # that is no apex dip, and it saves a frame of event latency.
        proj, peak = self._projection()  # once per frame: the close tests below all read it
        back = self._returned(proj, peak, self.p.edge_frac)
        if self.still >= 1 and back or self.still >= max(1, lag - 1) and self._returned(proj, peak):
            return self._close()
        if (f.t_mono_ns - self.event[0].t_mono_ns) * 1e-9 > self.p.max_open_s:
            return self._close(forced=True)
        if back and self.p.early_close and not self.published:
            return self._publish_early(peak)
        return []

    def finish(self, reason: str = "") -> list[Interval]:
        """The stream or the track ended: close an open event (discarded with `reason` if given)."""
        if self.event is None:
            return []
        return self._close(forced=not reason, reason=reason)

    def provisional(self) -> tuple[int, int] | None:
        """(onset, apex) frames of the open event as they would close now, once its displacement has
        passed its peak (None before that): classify can prepare the model input while the event waits
        for its offset. The apex can still move if the face rises again."""
        if self.event is None or self.published:
            return None
        if len(self.totals) < 2 or self.totals[-1] >= max(self.totals):
            return None
        if (self.event[-1].t_mono_ns - self.onset.t_mono_ns) * 1e-9 > self.p.micro_max_s:
            return None  # a macro expression by now: prepared inputs would go unused
        apex = self.event[int(np.argmax(self.totals))]
        return self._early_onset(self.onset, apex).frame, apex.frame

    def _publish_early(self, peak: float) -> list[Interval]:
        """The open event's interval while the face is still settling, if it is a clear micro-expression.
        The event stays open, and absorbs the settling, until it closes as usual, silently."""
        if peak <= self.p.k_off ** 2:
            return []  # too weak to measure a return against
        iv = self._interval()
        if iv.kind != "micro" or iv.discarded or iv.duration_s > self.p.micro_max_s - self.p.early_margin_s:
            return []
        self.published = True
        return [iv]

    def _chain(self, f: FrameRecord) -> None:
        """Displacement since onset: D[t] = F[t] + D[ref(t)], D = 0 at and before the onset."""
        ref = self.displacement.get(f.ref)
        if ref is None:
            if f.ref <= self.onset.frame:
                ref = 0.0
            else:  # the reference frame was dropped: the nearest earlier displacement is the best guess
                earlier = [k for k in self.displacement if k <= f.ref]
                ref = self.displacement[max(earlier)] if earlier else 0.0
        self.displacement[f.frame] = f.spans[0] + ref
        self.channels |= f.best() >= self.p.k_on  # muted channels score 0
        self.totals.append(self._total(self.displacement[f.frame]))

    def _moving(self, f: FrameRecord) -> bool:
        """The open event still moves at frame f: its best channel's flow (span 1) scores >= k_off, AND so
        does the flow projected on the event's displacement at its apex so far (its channels as one
        pattern, noise-weighted, in noise units). The best channel alone keeps an event open on noise: with
        tens of channels, one is over k_off on most quiet frames by chance, while the projection of noise
        on a fixed pattern stays at its own scale."""
        ch = self.channels
        if np.nan_to_num(f.scores[0][ch]).max() < self.p.k_off:
            return False
        if not self.totals:
            return True
        a = self.displacement[self.event[int(np.argmax(self.totals))].frame][ch]
        s2 = self.noise.flow[0][ch][:, None] ** 2
        norm = float(np.sqrt((a ** 2 / s2).sum()))
        proj = abs(float((np.nan_to_num(f.spans[0][ch]) * a / s2).sum())) / norm if norm > 0 else np.inf
        return proj >= self.p.k_off

    def _total(self, d: np.ndarray) -> float:
        """Displacement of the event's channels as one number: RMS over channels, noise units."""
        noise = self.noise.flow[-1][self.channels]
        return float(np.sqrt(np.mean((np.hypot(*d[self.channels].T) / noise) ** 2)))

    def _projection(self) -> tuple[np.ndarray, float]:
        """Each event frame's displacement projected on the apex displacement (all the event's channels as
        one vector, noise units): ((T,) projections, apex value = squared apex norm)."""
        ch = self.channels
        V = np.stack([self.displacement[f.frame][ch] for f in self.event]) / self.noise.flow[-1][ch][:, None]
        V = V.reshape(len(V), -1)
        a = V[int(np.argmax((V ** 2).sum(1)))]
        return V @ a, float(a @ a)

    def _returned(self, proj: np.ndarray, peak: float, frac: float | None = None) -> bool:
        """The face is back: the displacement, projected on the apex displacement (all the event's
        channels as one vector, in noise units, so noise across it does not count), is under
        return_frac (or `frac`) of the apex. Chained lagged flows do not telescope exactly (the flow of
        small motion is not linear in it), so a face at rest keeps a residue of ~30-50 % per block, against
        ~100 % while a macro expression holds. proj, peak: _projection()."""
        if peak <= self.p.k_off ** 2:
            return True
        return float(proj[-1]) <= (self.p.return_frac if frac is None else frac) * peak

    def _close(self, forced: bool = False, reason: str = "") -> list[Interval]:
        """End the open event: its interval, unless that was published early."""
        ev = self.event
        out = [] if self.published else [self._interval(forced, reason)]
        self.event, self.displacement, self.onset, self.channels, self.published = None, {}, None, None, False
        self.history.quiet_from = ev[-1].frame
        return out

    def _interval(self, forced: bool = False, reason: str = "") -> Interval:
        """The open event's interval as it stands (_close, _publish_early)."""
        ev, p = self.event, self.p
        i_apex = int(np.argmax(self.totals))
        # Offset: the last frame whose flow still moved, minus the lag: a flow against the frame `lag`
        # back shows motion until `lag` - 1 frames after the face came to rest (the onset mirrors it:
        # the first moving flow is the frame after the onset).
        moving = [i for i, f in enumerate(ev) if self._moving(f)]
        lag = max(1, ev[-1].frame - ev[-1].ref)
        last = ev[moving[-1]].frame if moving else ev[i_apex].frame
        i_off = i_apex
        while i_off + 1 < len(ev) and ev[i_off + 1].frame <= last - lag + 1:
            i_off += 1
        # ... but never before the face is back (edge_frac of the apex, as rise-and-return intervals end): a
        # slow return (a macro expression fading over a second; a small micro's tail under sensor noise)
        # moves too little per lag to count as moving, yet the expression lasts until it is undone.
        proj, peak = self._projection()
        if peak > p.k_off ** 2:
            back = [i for i in range(i_apex, len(ev)) if proj[i] <= p.edge_frac * peak]
            i_off = max(i_off, back[0] if back else len(ev) - 1)
        D = np.stack([self.displacement[f.frame] for f in ev])
        score = float(max(f.best().max() for f in ev))
        iv = self.describe(Measured(self._early_onset(self.onset, ev[i_apex]), ev[i_apex], ev[i_off], D,
                                    self.channels, score, lag, forced, reason))
        # A micro-expression rises and returns. A displacement that swings past its start, the other way, by
        # more than return_frac of its apex is measured from a noisy onset frame (every chained displacement
        # starts there), or holds two opposite movements: either way not one micro-expression.
        if iv.kind == "micro" and not iv.discarded and peak > p.k_off ** 2 \
                and float(proj[:i_off + 1].min()) < -p.return_frac * peak:
            iv.discarded = "swings past its start the other way (a noisy onset frame)"
        return iv

    def _early_onset(self, on: FrameRecord, apex: FrameRecord) -> FrameRecord:
        """The onset, moved earlier where the accumulated displacement (the event channels' acc projected
        on their apex displacement, noise-weighted) already rose past edge_frac of its rise before it: at
        low SNR the first frames of a rise move less than k_off per lag, so the onset threshold starts the
        interval late (the offset has the same fix in _interval). Never later than `on`."""
        ch, widths = self.channels, self.noise.widths
        if not widths or apex.acc is None or on.acc is None:
            return on
        w = self.displacement[apex.frame][ch] / self.noise.flow[-1][ch][:, None] ** 2  # (c, 2)
        hist = [g for g in self.history.frames if g.acc is not None and g.frame > self.history.quiet_from
                and on.frame - 2 * widths[-1] <= g.frame <= apex.frame]
        if len(hist) < 3 or hist[-1] is not apex:
            return on
        P = np.array([(g.acc[ch] * w).sum() for g in hist])
        i_on = next(k for k, g in enumerate(hist) if g.frame >= on.frame)
        if i_on == 0:
            return on
        pre, peak = float(P[:i_on + 1].min()), float(P[-1])
        level = pre + self.p.edge_frac * (peak - pre)
        k = max((k for k in range(len(hist) - 1) if P[k] <= level), default=i_on)
        return hist[k] if k < i_on else on
