"""Micro-expression spotting: ROI motion curves -> intervals (onset, apex, offset, kind).

Input per track and frame: the flow of the aligned crop against a reference frame `lag` frames back
(edge.flow convention: u, v in crop px, `uv[:, y, x]` moves pixel (x, y) of the reference), plus what
the face node says about the frame (head motion, stabilisation residual, track loss).

Per frame, per track:

1. Rigid removal: an affine motion field is fitted robustly (IRLS, Tukey weights) to the flow on the
   face outside the mobile ROIs (edge.geometry) and subtracted, so residual head motion the stabiliser
   left does not reach the ROI curves. What it removes is also measured: fast rigid motion flags the frame.
2. Channels: every canonical ROI is cut into blocks of ~1/16 of the crop side (about one action unit's
   skin patch); a channel is the mean residual flow (u, v) of a block or of a 2x2 group of neighbouring
   blocks (a patch seldom sits on the block grid), or the mirrored mean of one of those and its twin on
   the other side of the face (bilateral action units: sqrt(2) less noise).
3. Scores: besides the flow itself (span 1), the displacement over 2..`spans` chained flows
   (F[t] + F[ref(t)] + ...) is scored, since an onset lasts longer than one lag and chained flows
   telescope (the shared frames' image noise cancels). Each (span, channel) has its own robust noise
   scale (1.4826 * median |component|) over the last `noise_window_s` seconds outside events and flags;
   scores are RMS in noise units, so thresholds are too: each face, camera and lighting sets its level.
4. Events: a channel at >= `k_on`, that also moved (>= `k_off`) the frame before, opens an event, which
   reaches back over the frames where those channels moved (their RMS score >= `k_off`). While it is
   open, the displacement since onset is rebuilt by chaining the flows (D[t] = F[t] + D[ref(t)]); the
   event closes once the flow has been still (its best channel, or its projection on the event's pattern,
   under `k_off`) for lag-1 frames AND D, projected on its apex value, is back under `return_frac`: an
   expression held at its apex (flow ~0, face still displaced) stays open. Onset = the frame before the
   first moving flow; apex = largest D; offset = the last moving flow minus (lag - 1), the mirror of the
   onset, but not before D is back under `edge_frac` of its apex, or the last frame seen when it is not
   yet (a slow fade is too slow per lag to count as moving, and at low SNR so is a micro-expression's
   tail).
4b. Rise and return (TrackSpotter._bump), for micro-expressions too small for k_on: on the accumulated
   displacement (running sum of flow / lag per channel) a channel scores min(rise over w frames, return
   over the next w frames, projected on the rise) for w in `bump_widths_s`, in units of the rise's own
   robust noise scale on the quiet history; the frame's score is the RMS of its two best channels, as an
   action unit moves more skin than one block. Linear drift cancels in the return, a step (an expression
   that stays, a head that does not come back) has none, and one frame's flow glitch is a step. A score
   >= `k_bump` makes a candidate; once the curve after the apex has gone still, the bump is measured
   against a baseline before AND after it (onset/offset at `edge_frac` of the rise and of the return),
   and must have returned (`return_frac`). The accumulated displacement trails the face by (lag - 1) / 2
   frames (it averages the last `lag` frames), so the onset and apex read off it are moved back by that
   much (the offset is not: see _bump_close).
5. Kind from duration in seconds (capture timestamps, so any fps): micro <= `micro_max_s` < macro.
   An event where the eyes move by `blink_min_px` or more, every other ROI much less (`blink_ratio`), and
   the lids move down (closing; expressions move eye-region skin up) is a blink.
6. Discards: intervals overlapping a track loss, a gap of dropped frames as long as the flow lag, a head speed above `head_speed_max`
   (crop px/s, over the last 0.1 s, so per-frame alignment jitter does not count), a micro shorter than
   `micro_min_s` (a glitch: a facial action goes and comes back), a stabilisation
   residual above `residual_max`, or rigid motion left in the crop above its limit, or a micro whose
   displacement swings past its start the other way by more than return_frac of its apex (measured
   from a noisy onset frame) are discarded with the reason (head motion also within `head_margin_s` of the interval: a head turn is slow where it
   turns); so are those whose peak ROI displacement is below `min_intensity_px`. A micro interval also
   needs a steady face: head speed within `head_margin_s` of it above the face's micro head limit (slower
   than the head-motion flag: the ends of a head turn, a drift) discards it, as parallax of that size is
   left in the crop. The rigid-motion and micro head limits are in noise units of each face's own recent
   speeds: max(`rigid_speed_max` or `bump_head_speed_max`, median + `k_motion` MADs), so jittery footage
   does not discard everything.

An interval is final once its offset is seen. A clear micro interval (`early_close`, at least
`early_margin_s` under micro_max_s) is published the frame its displacement is back under edge_frac of
its apex, i.e. at its offset frame; the event then stays open, silently, until the flow is still. Other
intervals wait for that: `lag` frames after the offset when the face is back near where it started (one
still lagged flow confirms it), lag + 1 otherwise. Rise-and-return intervals are out 1-2 frames after
their offset (the return must have flattened).

Evaluation (MEGC rule): a spotted interval is a true positive if its IoU with a ground-truth interval,
counting inclusive frame ranges, is >= 0.5; F1 = 2TP / (2TP + FP + FN).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.geometry import CROP_SIZE, ROIS, roi_boxes

log = logging.getLogger(__name__)

EYE_ROIS = ("eye_left", "eye_right")
BUMP_CHANNELS = 2  # the rise-and-return score is the RMS of this many best channels (see _bump)
JUMP = 4.0  # one frame's head speed above JUMP * head_speed_max discards at once (a re-lock, not jitter)
KINDS = ("micro", "macro", "blink")


# --------------------------------------------------------------------------------------------- params

@dataclass
class SpotParams:
    """Spotting parameters. Thresholds are in noise units (k_*) or physical units (px, s), never frames."""

    k_on: float = 6.5            # best ROI score (noise units) that opens an event: with frame-independent
    # sensor noise, 6 let 2.2 noise bumps per 10 min of distractors through (4 sets), 6.5 1.5, and lost no
    # micro-expression of the bench's 0.5-px and webcam clips
    k_off: float = 2.5           # score above which a frame still counts as moving
    noise_window_s: float = 4.0  # seconds of quiet history for the per-ROI noise scale
    warmup_s: float = 1.0        # no events until this much quiet history exists
    noise_floor_px: float = 0.01  # lower bound of the noise scale (clean synthetic video has ~0 noise)
    noise_tail: float = 0.0      # > 0 (e.g. 0.95): the noise scale is also at least this quantile of |x|
    # over its Gaussian value, so heavy-tailed channels (low-texture chin skin) rise less often: precision
    # over recall (bench: 0 false micro in 10 min of distractors, but ~15 % fewer micro-expressions found)
    min_intensity_px: float = 0.05  # peak ROI displacement (block mean) below this is not an expression:
    # block means of the smooth spotting flow see a third to a half of a sub-pixel action unit's apex
    return_frac: float = 0.5     # displacement back under this fraction of its peak = returned
    micro_max_s: float = 0.5     # longer than this: macro
    micro_min_s: float = 0.1     # shorter than this is no facial action (it goes AND comes back): a glitch
    # of the crop or the flow, discarded (3 frames at 30 fps; spotted intervals run ~2 frames short of the
    # true one on the bench)
    max_open_s: float = 4.0      # an event still open after this long is closed as macro
    roi_frac: float = 0.5        # ROIs whose peak reaches this fraction of the top one are listed as moved
    blink_ratio: float = 0.6     # every non-eye ROI peak below this fraction of the eye peak: blink
    blink_min_px: float = 0.5    # ... and the eye peak at least this (crop px): a lid sweeps the eye opening,
    # ~10 px of a 128-px face; sub-pixel eye-region motion is an action unit (AU6 + AU7 narrow the eye)
    blink_expr_px: float = 0.1   # a blink in which a ROI away from the lids carried the event and moved this
    blink_expr_k: float = 2.0    # much (crop px, net of its noise tolerance) and this many tolerances is an
    # expression during a blink (micro or macro by duration): on 12 clips with a blink over every one of 72
    # micro-expressions all were lost as blinks; 27 are found now (brow-only ones stay lost, and where the
    # blink closed the event early its two halves miss), and 300 lone distractor blinks still give none
    head_speed_max: float = 40.0  # crop px/s of head motion (face node) above which intervals are discarded
    residual_max: float = 1.0    # stabilisation residual (crop px RMS) above which intervals are discarded
    rigid_speed_max: float = 8.0  # crop px/s of rigid motion left in the (stabilised) crop: discards, same
    k_motion: float = 6.0        # ... and the motion limits below rise to median + k_motion MADs of the
    # track's own recent rigid / head speeds: jittery footage (a webcam's detections, sensor noise) moves
    # "rigidly" all the time, and a fixed px/s limit there flags quiet frames and discards true events
    spans: int = 3               # score displacements over 1..spans chained flows
    smooth: int = 1              # scores average this many consecutive frames
    rigid: bool = True           # remove the affine (rigid) flow component
    k_bump: float = 6.0          # rise-and-return score (noise units of that score) that spots a micro
    bump_widths_s: tuple = (0.13, 0.2, 0.27)  # rise (= return) windows of the rise-and-return filter, s
    edge_frac: float = 0.2       # rise-and-return intervals: onset/offset where the bump is this high
    head_margin_s: float = 0.3   # head motion this close to an interval discards it too
    early_close: bool = True     # publish a micro interval the frame its displacement is back (edge_frac),
    early_margin_s: float = 0.1  # not once the face has been still (lag frames later), when it is at least
    # early_margin_s under micro_max_s: nearer the limit the slow tail of a return decides micro or macro
    # (on 152 distractor clips, macros of 0.6-0.7 s published this way came out as 0.43-0.5-s micros)
    bump_head_speed_max: float = 20.0  # crop px/s: micro intervals need a steadier face than
    # head_speed_max: a slow head turn leaves parallax of a micro-expression's size in the crop

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpotParams:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise UserError(f"spot params: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        p = cls()
        for k, v in d.items():
            default = getattr(p, k)
            try:
                setattr(p, k, type(default)(v))
            except (TypeError, ValueError):
                raise UserError(f"spot params: {k}={v!r} is not a {type(default).__name__}") from None
        p.check()
        return p

    def check(self) -> None:
        if not 0 < self.k_off <= self.k_on:
            raise UserError(f"spot params: need 0 < k_off <= k_on, got k_off={self.k_off}, k_on={self.k_on}")
        if self.spans < 1:
            raise UserError(f"spot params: spans must be >= 1, got {self.spans}")
        if not 0 < self.return_frac < 1:
            raise UserError(f"spot params: return_frac must be in (0, 1), got {self.return_frac}")
        if self.k_bump <= 0 or not self.bump_widths_s or min(self.bump_widths_s) <= 0:
            raise UserError(f"spot params: need k_bump > 0 and bump_widths_s > 0, got {self.k_bump}, "
                            f"{self.bump_widths_s}")
        if not 0 <= self.noise_tail < 1:
            raise UserError(f"spot params: noise_tail must be in [0, 1), got {self.noise_tail}")
        if not 0 <= self.micro_min_s < self.micro_max_s:
            raise UserError(f"spot params: need 0 <= micro_min_s < micro_max_s, got {self.micro_min_s}, "
                            f"{self.micro_max_s}")
        if self.early_margin_s < 0:
            raise UserError(f"spot params: early_margin_s must be >= 0, got {self.early_margin_s}")
        if not 0 < self.edge_frac < 1:
            raise UserError(f"spot params: edge_frac must be in (0, 1), got {self.edge_frac}")

    @classmethod
    def load(cls, path: str | Path) -> SpotParams:
        """Read a params file (JSON written by `facesleuth calib spot`: {"params": {...}, ...})."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"spot params file not found: {path}") from None
        except (OSError, ValueError) as e:
            raise UserError(f"spot params file {path}: not readable JSON ({e})") from None
        if not isinstance(doc, dict):
            raise UserError(f"spot params file {path}: expected a JSON object")
        return cls.from_dict(doc.get("params", doc))

    def save(self, path: str | Path, **extra: Any) -> None:
        Path(path).write_text(json.dumps({"params": asdict(self), **extra}, indent=2))


# ------------------------------------------------------------------------------------ flow -> features

# Bilateral ROIs (mirror images in edge.geometry): many action units move both sides alike, so the
# mirrored mean of a block and its twin has sqrt(2) less noise than either. Mirrored: u flips sign.
PAIRS: dict[str, tuple[str, str]] = {
    "brows": ("brow_left", "brow_right"),
    "eyes": ("eye_left", "eye_right"),
    "nose": ("nose_left", "nose_right"),
    "mouth": ("mouth_left", "mouth_right"),
}
BLOCK_FRAC = 1 / 16  # block side as a fraction of the crop side (8 px of a 128 crop: about the extent
# of one action unit's skin patch, so a patch is not diluted by the still skin around it)


class RoiFeatures:
    """Per-frame motion features from one flow field of side `size` (the flow grid, S' px).

    Every canonical ROI is cut into blocks of about BLOCK_FRAC of the crop side; a feature channel is the
    mean residual flow (u, v) of one block or of a 2x2 group of neighbouring blocks, or the mirrored mean
    of one of those and its twin in the other half of a bilateral pair. Means, not mean magnitudes: noise
    averages to zero over a block while coherent skin motion does not.

    `__call__(flow)` with flow (2, S', S') float32 crop px returns (features (C, 2) crop px, rigid: the
    largest magnitude of the fitted affine field at the ROI centres, crop px). `roi_of[c]` is the ROI
    index (into `names`) of channel c, or -1-k for the k-th pair.
    """

    def __init__(self, size: int, rigid: bool = True) -> None:
        self.size, self.rigid = size, rigid
        boxes = roi_boxes(size)
        self.names = list(ROIS)
        self.slices: list[tuple[slice, slice]] = []
        roi_of: list[int] = []
        grid_of: dict[str, list[list[list[int]]]] = {}  # ROI -> [block grid, group grid]
        blk = max(1.0, size * BLOCK_FRAC)
        for r, (x0, y0, x1, y1) in enumerate(boxes.values()):
            nx, ny = max(1, round((x1 - x0) / blk)), max(1, round((y1 - y0) / blk))
            xs = np.linspace(x0, x1, nx + 1).round().astype(int)
            ys = np.linspace(y0, y1, ny + 1).round().astype(int)
            rows = []
            for i in range(ny):
                row = []
                for j in range(nx):
                    row.append(len(self.slices))
                    self.slices.append((slice(ys[i], max(ys[i + 1], ys[i] + 1)), slice(xs[j], max(xs[j + 1], xs[j] + 1))))
                    roi_of.append(r)
                rows.append(row)
            grid_of[self.names[r]] = [rows]
            # Groups of 2x2 neighbouring blocks (stride one block): an action unit's skin patch is often
            # about that size and seldom aligned with the block grid.
            gy, gx = min(2, ny), min(2, nx)
            if gy * gx > 1:
                groups = []
                for i in range(ny - gy + 1):
                    row = []
                    for j in range(nx - gx + 1):
                        row.append(len(self.slices))
                        self.slices.append((slice(ys[i], ys[i + gy]), slice(xs[j], xs[j + gx])))
                        roi_of.append(r)
                    groups.append(row)
                grid_of[self.names[r]].append(groups)
        # Mirrored twins: block (i, j) of the left ROI <-> block (i, nx-1-j) of the right one (groups alike).
        self.pairs: list[tuple[int, int]] = []
        for k, (a, b) in enumerate(PAIRS.values()):
            for ga, gb in zip(grid_of[a], grid_of[b], strict=False):
                if len(ga) != len(gb) or len(ga[0]) != len(gb[0]):
                    continue  # not mirror images at this size (rounding): no pair channels
                for ra, rb in zip(ga, gb, strict=True):
                    for j, ia in enumerate(ra):
                        self.pairs.append((ia, rb[len(rb) - 1 - j]))
                        roi_of.append(-1 - k)
        self.roi_of = np.array(roi_of)
        self.n_blocks = len(self.slices)
        # Brow blocks within reach of the upper lid (their lower edge within a block of the eye ROIs' top):
        # a lid sweeping down drags these with it in the flow (Farneback's 15-px window spreads it a block
        # up, and an alignment a few px off puts the lid itself in a brow block), so they do not count
        # against a blink. With edge.geometry's ROIs that is every brow block (two blocks tall).
        eye_top = min(boxes[r][1] for r in EYE_ROIS)
        self.lid_reach = np.zeros(len(roi_of), bool)
        for c, (sy, _) in enumerate(self.slices):
            self.lid_reach[c] = self.names[roi_of[c]].startswith("brow") and sy.stop >= eye_top - blk
        # Reference region for the rigid fit: an ellipse over the face minus the mobile ROIs (+1 px).
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        u, v = (xx + 0.5) / size, (yy + 0.5) / size
        ref = ((u - 0.5) / 0.38) ** 2 + ((v - 0.55) / 0.44) ** 2 <= 1.0
        for x0, y0, x1, y1 in boxes.values():
            ref[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = False
        step = max(1, size // 48)  # ~1000 samples are plenty for 6 parameters
        sub = np.zeros_like(ref)
        sub[::step, ::step] = True
        self.ref_idx = np.flatnonzero(ref & sub)
        cx, cy = (xx.ravel()[self.ref_idx] + 0.5) / size - 0.5, (yy.ravel()[self.ref_idx] + 0.5) / size - 0.5
        self.A = np.stack([np.ones_like(cx), cx, cy], 1).astype(np.float64)
        centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes.values()], np.float64)
        self.centres = np.concatenate([np.ones((len(centres), 1)), centres / size - 0.5], 1)
        # Block means from an integral image: corners (y0, x0, y1, x1) and areas; the mean of an affine
        # field over a block is its value at the block centre (the field is linear), so the rigid part
        # is subtracted per block, never per pixel.
        self.corners = np.array([(sy.start, sx.start, sy.stop, sx.stop) for sy, sx in self.slices])
        y0, x0, y1, x1 = self.corners.T
        self.area = ((y1 - y0) * (x1 - x0)).astype(np.float64)
        self.block_centres = np.stack([np.ones(len(y0)), (x0 + x1) / 2 / size - 0.5, (y0 + y1) / 2 / size - 0.5], 1)

    def block_means(self, flow: np.ndarray) -> np.ndarray:
        """(B, 2) mean (u, v) of each block of a (2, S', S') flow."""
        y0, x0, y1, x1 = self.corners.T
        out = np.empty((self.n_blocks, 2))
        for k in (0, 1):
            ii = cv2.integral(np.ascontiguousarray(flow[k]), sdepth=cv2.CV_64F)
            out[:, k] = (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / self.area
        return out

    def roi_max(self, values: np.ndarray) -> np.ndarray:
        """(R,) max over each ROI's single-block channels of per-channel `values` (C,)."""
        return np.array([values[:self.n_blocks][self.roi_of[:self.n_blocks] == r].max()
                         for r in range(len(self.names))])

    def fit_rigid(self, flow: np.ndarray) -> np.ndarray:
        """Affine flow coefficients (3, 2): u = c0 + c1 x + c2 y (x, y centred, in crop sides), robust."""
        b = flow.reshape(2, -1)[:, self.ref_idx].T.astype(np.float64)  # (n, 2)
        A = self.A
        w = np.ones(len(b))
        coef = np.zeros((3, 2))
        for _ in range(3):  # IRLS with Tukey's biweight: expression pixels in the region get weight ~0
            sw = np.sqrt(w)[:, None]
            coef = np.linalg.lstsq(A * sw, b * sw, rcond=None)[0]
            r = np.hypot(*(b - A @ coef).T)
            s = 1.4826 * np.median(r) + 1e-6
            w = np.clip(1 - (r / (4.685 * s)) ** 2, 0, None) ** 2
        return coef

    def __call__(self, flow: np.ndarray) -> tuple[np.ndarray, float]:
        flow = np.asarray(flow, np.float32)
        if flow.ndim != 3 or flow.shape[0] != 2 or flow.shape[1:] != (self.size, self.size):
            raise UserError(f"spot: flow must be (2, {self.size}, {self.size}), got {flow.shape}")
        rigid = 0.0
        single = self.block_means(flow)
        if self.rigid:
            coef = self.fit_rigid(flow)
            rigid = float(np.hypot(*(self.centres @ coef).T).max())
            single -= self.block_centres @ coef
        single = single.astype(np.float32)
        ia, ib = np.array([p[0] for p in self.pairs], int), np.array([p[1] for p in self.pairs], int)
        paired = np.stack([(single[ia, 0] - single[ib, 0]) / 2, (single[ia, 1] + single[ib, 1]) / 2], 1)
        return np.concatenate([single, paired]), rigid


# ------------------------------------------------------------------------------------------- intervals

@dataclass
class Interval:
    """One spotted interval of one track. Frames are source frame indices; times are capture times (ns)."""

    track_id: int
    kind: str
    onset: int
    apex: int
    offset: int
    t_onset_ns: int
    t_apex_ns: int
    t_offset_ns: int
    wall_onset_ns: int = 0
    wall_apex_ns: int = 0
    wall_offset_ns: int = 0
    score: float = 0.0          # peak ROI score, noise units
    intensity: float = 0.0      # peak ROI displacement, crop px
    rois: list[str] = field(default_factory=list)
    discarded: str = ""         # reason, or "" when kept

    @property
    def duration_s(self) -> float:
        return (self.t_offset_ns - self.t_onset_ns) * 1e-9


@dataclass
class _Frame:
    frame: int
    t_mono_ns: int
    t_wall_ns: int
    ref: int
    spans: np.ndarray            # (J, C, 2) displacement over 1..J chained flows, crop px (nan: unknown)
    starts: np.ndarray           # (J,) frame index each span starts from
    sm: np.ndarray               # (J, C, 2) spans averaged over the last `smooth` frames
    scores: np.ndarray | None    # (J, C) noise units, None during warm-up
    flag: str                    # "" or why this frame cannot carry an interval
    acc: np.ndarray | None = None  # (C, 2) accumulated displacement: running sum of flow / lag, crop px
    speed: float = 0.0           # head speed (face node, sustained over ~0.1 s), crop px/s
    busy: bool = False           # part of an event: left out of the noise model

    def best(self) -> np.ndarray:
        """(C,) best score of each channel over the spans."""
        if self.scores is None:
            return np.zeros(self.spans.shape[1])
        return np.nan_to_num(np.fmax.reduce(self.scores, axis=0), nan=0.0)


class TrackSpotter:
    """Online spotting for one face track. `push()` one flow's features per frame; it returns the
    intervals finished at that frame.

    Scores: a micro-expression's onset lasts longer than one flow lag, so besides the flow itself
    (span 1) the displacement over 2..J chained flows (F[t] + F[ref(t)] + ...) is scored too. Chained
    flows telescope: image noise of the shared frames cancels, so their noise grows far slower than
    their signal (measured: x1.45 over 4 links).
    """

    def __init__(self, track_id: int, params: SpotParams, roi_of: np.ndarray,
                 lid_reach: np.ndarray | None = None) -> None:
        self.track_id, self.p = track_id, params
        self.roi_of = roi_of  # (C,) ROI index of each channel (RoiFeatures.roi_of)
        # (C,) brow channels next to the lids (RoiFeatures.lid_reach); none when the layout is unknown
        self.lid_reach = lid_reach if lid_reach is not None else np.zeros(len(roi_of), bool)
        self.head_limit = 0.0  # this face's head-speed limit for micro intervals (Spotter sets it)
        self.quiet_from = -1  # spans starting before this frame reach into the last event
        self.frames: deque[_Frame] = deque()
        self.by_frame: dict[int, _Frame] = {}
        self.noise: np.ndarray | None = None     # (J, C) crop px
        self.ready_frame: int | None = None      # first frame with a noise estimate (spotting starts)
        self.event: list[_Frame] | None = None   # frames of the open event, from its first moving frame
        self.channels: np.ndarray | None = None  # (C,) bool: channels that opened / carry the event
        self.disp: dict[int, np.ndarray] = {}    # frame -> (C, 2) displacement since the event's onset
        self.totals: list[float] = []            # _total() of each event frame's displacement
        self.still = 0                           # frames in a row the open event has not moved
        self.onset: _Frame | None = None
        self.published = False  # the open event's interval is out (early_close); it ends silently
        self.last_frame = -1
        # Rise-and-return detector (see _bump): window lengths (frames), per-window noise, pending bump.
        self.widths: tuple[int, ...] = ()
        self.bnoise: np.ndarray | None = None    # (W, C) crop px: robust scale of a rise over each window
        self.cand: dict | None = None

    # ---- noise model
    def fps(self) -> float:
        """Frame rate from the capture timestamps of the history (30 before there is any)."""
        if len(self.frames) < 2:
            return 30.0
        a, b = self.frames[0], self.frames[-1]
        dt = (b.t_mono_ns - a.t_mono_ns) * 1e-9
        return (b.frame - a.frame) / dt if dt > 0 and b.frame > a.frame else 30.0

    def _forget(self, now_ns: int) -> None:
        horizon = now_ns - int(self.p.noise_window_s * 1e9)
        while self.frames and self.frames[0].t_mono_ns < horizon:
            self.by_frame.pop(self.frames.popleft().frame, None)

    def _update_noise(self) -> None:
        # Every frame outside events and flags: leaving out merely high-scoring frames as well would
        # truncate the sample and bias the scale low (many channels: some score high every frame).
        quiet = [f.sm for f in self.frames if not f.flag and not f.busy]
        span = (self.frames[-1].t_mono_ns - self.frames[0].t_mono_ns) * 1e-9
        if len(quiet) < 5 or (self.noise is None and span < self.p.warmup_s):
            return
        a = np.abs(np.stack(quiet))  # (T, J, C, 2)
        a = a.transpose(1, 2, 0, 3).reshape(a.shape[1], a.shape[2], -1)
        with np.errstate(all="ignore"):
            noise = self._scale(a, axis=2)
        self.noise = np.maximum(np.nan_to_num(noise, nan=np.inf), self.p.noise_floor_px)
        if self.ready_frame is None:
            self.ready_frame = self.frames[-1].frame
        # The rise-and-return score's noise: the same filter's rise (acc[t] - acc[t - w]) on the quiet
        # history, so k_bump is in noise units of the statistic actually thresholded.
        fps = self.fps()
        self.widths = tuple(sorted({max(2, round(w * fps)) for w in self.p.bump_widths_s}))
        bn = []
        for w in self.widths:
            d = [f.acc - g.acc for f in self.frames if not f.flag and not f.busy
                 and (g := self.by_frame.get(f.frame - w)) is not None and not g.flag and not g.busy]
            if len(d) < 5:
                self.bnoise = None
                return
            bn.append(self._scale(np.abs(np.stack(d)).transpose(1, 0, 2).reshape(len(d[0]), -1), axis=1))
        self.bnoise = np.maximum(np.array(bn), self.p.noise_floor_px)

    def _scale(self, a: np.ndarray, axis: int) -> np.ndarray:
        """Robust Gaussian scale of |x| samples `a` along `axis` (nan = missing): 1.4826 * median, or with
        `noise_tail` q also at least the q-quantile over its Gaussian value (half-normal quantile)."""
        nan = np.isnan(a).any()
        scale = 1.4826 * (np.nanmedian(a, axis=axis) if nan else np.median(a, axis=axis))
        if self.p.noise_tail > 0:
            z = NormalDist().inv_cdf((1 + self.p.noise_tail) / 2)
            scale = np.maximum(scale, (np.nanquantile(a, self.p.noise_tail, axis=axis) if nan
                                       else np.quantile(a, self.p.noise_tail, axis=axis)) / z)
        return scale

    # ---- per frame
    def push(self, frame: int, t_mono_ns: int, t_wall_ns: int, ref_frame: int, feats: np.ndarray,
             flag: str = "", speed: float = 0.0) -> list[Interval]:
        """One frame of this track.

        Args:
            frame: source frame index; t_mono_ns, t_wall_ns: its capture time (ns).
            ref_frame: frame index of the flow's reference frame.
            feats: (C, 2) channel features (RoiFeatures), crop px.
            flag: "" or a reason this frame must not carry an interval (head motion, residual, ...).
            speed: head speed at this frame, crop px/s (the face node's, over ~0.1 s).
        Returns:
            intervals finished at this frame, kept and discarded (Interval.discarded says why).
        """
        out: list[Interval] = []
        # Frames dropped upstream (latest-wins links under load): while fewer than the flow lag are
        # missing in a row, the lagged flows still overlap and the displacement chain holds; a longer gap
        # breaks it, and intervals across it are discarded.
        step = frame - self.last_frame if self.last_frame >= 0 else 1
        if step > max(1, frame - ref_frame) and not flag:
            flag = f"{step - 1} frame(s) dropped"
        self.last_frame = frame
        J = max(1, self.p.spans)
        spans = np.full((J, *feats.shape), np.nan, np.float32)
        spans[0] = feats
        starts = np.full(J, ref_frame, np.int64)
        ref = self.by_frame.get(ref_frame)
        if ref is not None:
            spans[1:] = feats + ref.spans[:-1]
            starts[1:] = ref.starts[:-1]
        # Scores use the mean over the last `smooth` frames: neighbouring frames carry independent image
        # noise but (at >= 25 fps) nearly the same expression displacement.
        recent = [spans] + [g.spans for k in range(1, self.p.smooth)
                            if (g := self.by_frame.get(frame - k)) is not None]
        sm = np.mean(recent, axis=0)
        scores = None
        if self.noise is not None:
            scores = np.sqrt(np.mean((sm / self.noise[..., None]) ** 2, axis=2))
        if scores is not None:  # a span reaching back into the last event still holds its motion
            scores[starts < self.quiet_from] = np.nan
        lag = max(1, frame - ref_frame)
        prev = self.frames[-1].acc if self.frames else 0.0
        f = _Frame(frame, t_mono_ns, t_wall_ns, ref_frame, spans, starts, sm, scores, flag,
                   acc=prev + feats.astype(np.float64) * (max(1, step) / lag), speed=speed)
        self.frames.append(f)
        self.by_frame[frame] = f
        if self.event is None:
            self._forget(t_mono_ns)
            if scores is not None and self._triggered(f):
                self.cand = None  # the onset threshold took it: the event machinery measures it
                self._open(f)
            else:
                if frame % 5 == 0 or self.noise is None:  # the scale moves slowly: refresh every 5 frames
                    self._update_noise()
                iv = self._bump(f)
                if iv is not None:
                    out.append(iv)
            return out
        f.busy = True
        self.event.append(f)
        self._chain(f)
        # Moving: the event's channels still change over one flow lag (span 1 reacts first). Around a
        # sharp apex the lagged flow is ~0 for up to lag-1 frames (x[t] ~ x[t-lag] on both slopes), so
        # the face must be still for that long, and back, before the event closes.
        if self._moving(f):
            self.still = 0
        else:
            self.still += 1
        lag = max(1, frame - ref_frame)
        # One still frame is enough once the displacement is back near its start (edge_frac of the apex):
        # that is no apex dip, and it saves a frame of event latency.
        proj, peak = self._projection()  # once per frame: the close tests below all read it
        back = self._returned(proj, peak, self.p.edge_frac)
        if self.still >= 1 and back or self.still >= max(1, lag - 1) and self._returned(proj, peak):
            out += self._close()
        elif (t_mono_ns - self.event[0].t_mono_ns) * 1e-9 > self.p.max_open_s:
            out += self._close(forced=True)
        elif back and self.p.early_close and not self.published:
            out += self._publish_early(peak)
        return out

    def _publish_early(self, peak: float) -> list[Interval]:
        """The open event's interval while the face is still settling, if it is a clear micro-expression.
        The event stays open, and absorbs the settling, until it closes as usual, silently."""
        if peak <= self.p.k_off ** 2:
            return []  # too weak to measure a return against
        iv = self._interval()
        if iv.kind != "micro" or iv.discarded or iv.duration_s > self.p.micro_max_s - self.p.early_margin_s:
            return []
        self.published = True
        return [self._logged(iv)]

    def provisional(self) -> tuple[int, int] | None:
        """(onset, apex) frames of the open event as they would close now, once its displacement has
        passed its peak (None before that, or with no event open): classify can prepare the model input
        while the event waits for its offset. The apex can still move if the face rises again."""
        if self.event is None:
            return self._bump_provisional()
        if self.published:
            return None
        if len(self.totals) < 2 or self.totals[-1] >= max(self.totals):
            return None
        if (self.event[-1].t_mono_ns - self.onset.t_mono_ns) * 1e-9 > self.p.micro_max_s:
            return None  # a macro expression by now: prepared inputs would go unused
        apex = self.event[int(np.argmax(self.totals))]
        return self._early_onset(self.onset, apex).frame, apex.frame

    def _bump_provisional(self) -> tuple[int, int] | None:
        """provisional() of a pending rise-and-return candidate, once its apex can be measured."""
        if self.cand is None or not self.frames:
            return None
        shape = self._bump_shape(self.frames[-1])
        if isinstance(shape, str):
            return None
        _, on, apex = self._bump_onset_apex(shape[0], shape[1], shape[2], self.frames[-1])
        return on.frame, apex.frame

    def _triggered(self, f: _Frame) -> bool:
        """k_on in some channel now, and that channel moving (k_off) in the frame before too: real
        motion persists over consecutive lagged flows, while one frame's noise does not."""
        hot = f.best() >= self.p.k_on
        prev = self.by_frame.get(f.frame - 1)
        if not hot.any() or prev is None or prev.scores is None or prev.busy:
            return False
        return bool((prev.best()[hot] >= self.p.k_off).any())

    def _open(self, trigger: _Frame) -> None:
        self.channels = trigger.best() >= self.p.k_on
        # Walk back over frames still moving in those channels (their RMS score, not their best: with tens
        # of channels hot, one of them is over k_off on most quiet frames by chance, and the onset would
        # walk back into the noise): the event starts at the first of them.
        hist = list(self.frames)
        i = len(hist) - 1
        while i > 0 and hist[i - 1].scores is not None and hist[i - 1].frame == hist[i].frame - 1 \
                and not hist[i - 1].busy and hist[i - 1].frame >= self.quiet_from \
                and np.sqrt(np.mean(hist[i - 1].best()[self.channels] ** 2)) >= self.p.k_off:
            i -= 1
        self.event = hist[i:]
        for f in self.event:
            f.busy = True
        self.onset = hist[i - 1] if i > 0 else hist[i]
        self.disp, self.totals, self.still = {}, [], 0
        for f in self.event:
            self._chain(f)

    def _chain(self, f: _Frame) -> None:
        """Displacement since onset: D[t] = F[t] + D[ref(t)], D = 0 at and before the onset."""
        ref = self.disp.get(f.ref)
        if ref is None:
            if f.ref <= self.onset.frame:
                ref = 0.0
            else:  # the reference frame was dropped: the nearest earlier displacement is the best guess
                earlier = [k for k in self.disp if k <= f.ref]
                ref = self.disp[max(earlier)] if earlier else 0.0
        self.disp[f.frame] = f.spans[0] + ref
        self.channels |= f.best() >= self.p.k_on
        self.totals.append(self._total(self.disp[f.frame]))

    def _moving(self, f: _Frame) -> bool:
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
        a = self.disp[self.event[int(np.argmax(self.totals))].frame][ch]
        s2 = self.noise[0][ch][:, None] ** 2
        norm = float(np.sqrt((a ** 2 / s2).sum()))
        proj = abs(float((np.nan_to_num(f.spans[0][ch]) * a / s2).sum())) / norm if norm > 0 else np.inf
        return proj >= self.p.k_off

    def _tol(self) -> np.ndarray:
        """(C,) noise of a chained displacement, crop px (the longest span's noise, times k_off)."""
        return self.p.k_off * self.noise[-1]

    def _total(self, d: np.ndarray) -> float:
        """Displacement of the event's channels as one number: RMS over channels, noise units."""
        return float(np.sqrt(np.mean((np.hypot(*d[self.channels].T) / self.noise[-1][self.channels]) ** 2)))

    def _projection(self) -> tuple[np.ndarray, float]:
        """Each event frame's displacement projected on the apex displacement (all the event's channels as
        one vector, noise units): ((T,) projections, apex value = squared apex norm)."""
        ch = self.channels
        V = np.stack([self.disp[f.frame][ch] for f in self.event]) / self.noise[-1][ch][:, None]
        V = V.reshape(len(V), -1)
        a = V[int(np.argmax((V ** 2).sum(1)))]
        return V @ a, float(a @ a)

    def _returned(self, proj: np.ndarray, peak: float, frac: float | None = None) -> bool:
        """The face is back: the displacement, projected on the apex displacement (all the event's
        channels as one vector, in noise units, so noise across it does not count), is under
        return_frac of the apex. Chained lagged flows do not telescope exactly (the flow of small motion
        is not linear in it), so a face at rest keeps a residue of ~30-50 % per block, against ~100 %
        while a macro expression holds. proj, peak: _projection()."""
        if peak <= self.p.k_off ** 2:
            return True
        return float(proj[-1]) <= (self.p.return_frac if frac is None else frac) * peak

    def _close(self, forced: bool = False, reason: str = "") -> list[Interval]:
        """End the open event: its interval, unless that was published early."""
        ev = self.event
        out = [] if self.published else [self._logged(self._interval(forced, reason))]
        self.event, self.disp, self.onset, self.channels, self.published = None, {}, None, None, False
        self.quiet_from = ev[-1].frame
        return out

    def _interval(self, forced: bool = False, reason: str = "") -> Interval:
        """The open event's interval as it stands (_close, _publish_early)."""
        ev, p = self.event, self.p
        ia = int(np.argmax(self.totals))
        # Offset: the last frame whose flow still moved, minus the lag: a flow against the frame `lag`
        # back shows motion until `lag` - 1 frames after the face came to rest (the onset mirrors it:
        # the first moving flow is the frame after the onset).
        moving = [i for i, f in enumerate(ev) if self._moving(f)]
        lag = max(1, ev[-1].frame - ev[-1].ref)
        last = ev[moving[-1]].frame if moving else ev[ia].frame
        io = ia
        while io + 1 < len(ev) and ev[io + 1].frame <= last - lag + 1:
            io += 1
        # ... but never before the face is back (edge_frac of the apex, as rise-and-return intervals end): a
        # slow return (a macro expression fading over a second; a small micro's tail under sensor noise)
        # moves too little per lag to count as moving, yet the expression lasts until it is undone.
        proj, peak = self._projection()
        if peak > p.k_off ** 2:
            back = [i for i in range(ia, len(ev)) if proj[i] <= p.edge_frac * peak]
            io = max(io, back[0] if back else len(ev) - 1)
        on, apex, off = self._early_onset(self.onset, ev[ia]), ev[ia], ev[io]
        D = np.stack([self.disp[f.frame] for f in ev])
        score = float(max(f.best().max() for f in ev))
        iv = self._describe(ev, on, apex, off, D, self.channels, score, forced, reason, lag)
        # A micro-expression rises and returns. A displacement that swings past its start, the other way, by
        # more than return_frac of its apex is measured from a noisy onset frame (every chained displacement
        # starts there), or holds two opposite movements: either way not one micro-expression.
        if iv.kind == "micro" and not iv.discarded and peak > p.k_off ** 2 \
                and float(proj[:io + 1].min()) < -p.return_frac * peak:
            iv.discarded = "swings past its start the other way (a noisy onset frame)"
        return iv

    def _early_onset(self, on: _Frame, apex: _Frame) -> _Frame:
        """The onset, moved earlier where the accumulated displacement (the event channels' acc projected
        on their apex displacement, noise-weighted) already rose past edge_frac of its rise before it: at
        low SNR the first frames of a rise move less than k_off per lag, so the onset threshold starts the
        interval late (the offset has the same fix in _close). Never later than `on`."""
        ch = self.channels
        if not self.widths or apex.acc is None or on.acc is None:
            return on
        w = self.disp[apex.frame][ch] / self.noise[-1][ch][:, None] ** 2  # (c, 2)
        hist = [g for g in self.frames if g.acc is not None and g.frame > self.quiet_from
                and on.frame - 2 * self.widths[-1] <= g.frame <= apex.frame]
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

    def _describe(self, ev: list[_Frame], on: _Frame, apex: _Frame, off: _Frame, D: np.ndarray,
                  channels: np.ndarray, score: float, forced: bool, reason: str, lag: int) -> Interval:
        """The interval on -> apex -> off: moved ROIs, kind (blink / micro / macro) and discards.

        ev: the event's frames (flags anywhere in on .. off + lag discard); D (len(ev), C, 2): each frame's
        displacement since the onset, crop px; channels (C,) bool: the channels that carried the event."""
        p = self.p
        mags = np.hypot(D[..., 0], D[..., 1])  # (T, C) crop px
        names = list(ROIS)
        single = self.roi_of >= 0
        pk = mags.max(0)
        def per_roi(values: np.ndarray, reduce=np.max) -> np.ndarray:  # (C,) -> (R,) over single blocks
            return np.array([reduce(values[single & (self.roi_of == r)]) for r in range(len(names))])

        peak = per_roi(pk)  # (R,) crop px
        tol_r = per_roi(self._tol(), np.min)
        # Only ROIs with a channel that scored k_on count: chained displacement alone can drift.
        sig = np.array([bool(channels[single & (self.roi_of == r)].any()) for r in range(len(names))])
        for k, pair in enumerate(PAIRS.values()):  # a mirrored pair channel speaks for both sides
            if channels[self.roi_of == -1 - k].any():
                sig[[names.index(r) for r in pair]] = True
        peak = np.where(sig, peak, 0.0)
        ok = peak > tol_r
        top = float(peak.max())
        rois = [names[r] for r in np.flatnonzero(ok & (peak >= p.roi_frac * top))]
        duration = (off.t_mono_ns - on.t_mono_ns) * 1e-9
        # Blink: the eyes dominate. A lid sweeps several px, and flow bleeds some of it into the brow
        # blocks next to the eye, so "eyes only" means every other ROI well below the eyes, not zero.
        eye_i = [names.index(r) for r in EYE_ROIS]
        # Peaks less their chained-noise tolerance: a noisy mouth block must not outvote a lid.
        net = np.maximum(peak - tol_r, 0.0)
        # Brow blocks next to the lids that move down with them are the lid's, not the brow's.
        it = int(np.argmax(mags.max(1)))
        dragged = self.lid_reach & (D[it, :, 1] > 0)
        pk_own = np.where(dragged, 0.0, pk)
        own = per_roi(pk_own)
        own = np.maximum(np.where(sig, own, 0.0) - tol_r, 0.0)
        eye, other = net[eye_i].max(), np.delete(own, eye_i).max()
        # ... and the lids close: in a blink the upper lid sweeps DOWN over the eye, while the eye-region
        # action units of expressions (AU5 lid raiser, AU6 cheek raiser, AU7 lid tightener) all move skin
        # UP (FACS). The sign of the eye blocks' vertical displacement where they peak tells them apart.
        eye_blocks = single & np.isin(self.roi_of, eye_i)
        ie = int(np.argmax(mags[:, eye_blocks].max(1)))
        closing = float(D[ie][eye_blocks, 1].sum()) > 0  # v > 0: down (y down)
        # ... unless a ROI away from the lids carried the event too and clearly moved: an expression during
        # a blink (common in real footage). Brow blocks within a lid's reach cannot tell (the lid drags them
        # down as it closes and up as it opens), so brow-only expressions under a blink stay blinks.
        far = per_roi(np.where(self.lid_reach, 0.0, pk))
        far = np.maximum(np.where(sig, far, 0.0) - tol_r, 0.0)
        far[eye_i] = 0.0
        ko = int(np.argmax(far))
        expression = far[ko] >= p.blink_expr_px and far[ko] >= p.blink_expr_k * tol_r[ko]
        blink = eye >= p.blink_min_px and other < p.blink_ratio * eye and closing
        if blink and expression:  # the lids outshine the expression's own ROIs: list those too
            rois = [r for k, r in enumerate(names) if r in rois or far[k] >= p.roi_frac * far[ko]]
        if blink and not expression:
            kind = "blink"
        elif forced or duration > p.micro_max_s:
            kind = "macro"
        else:
            kind = "micro"
        # A head movement slows down where it turns (and starts and ends slowly): its fast frames within
        # head_margin_s of the interval discard it too (stabilisation leaves parallax in the crop then).
        margin = int(p.head_margin_s * 1e9)
        flags = sorted({f.flag for f in self.frames if f.flag and (
            on.frame <= f.frame <= off.frame + lag or (f.flag.startswith("head motion")
                                                         and on.t_mono_ns - margin <= f.t_mono_ns
                                                         <= off.t_mono_ns + margin))})
        if not reason and flags:
            reason = flags[0]
        # A micro-expression needs a steady face: a slower head movement (its ends, a drift) than the
        # head-motion flag catches leaves parallax of a micro-expression's size in the stabilised crop.
        if not reason and kind == "micro":
            speed = max((g.speed for g in self.frames
                         if on.t_mono_ns - margin <= g.t_mono_ns <= off.t_mono_ns + margin), default=0.0)
            limit = max(p.bump_head_speed_max, self.head_limit)
            if speed > limit:
                reason = f"head motion {speed:.0f} crop px/s > {limit:.0f} (a micro-expression needs a steady face)"
        # Motion already under way when spotting started (a new track, the first second of a stream):
        # its true onset is unknown, and the part seen (a blink reopening, say) is not what it looks like.
        if not reason and self.ready_frame is not None and on.frame <= self.ready_frame + lag:
            reason = "in progress when spotting started"
        if not reason and kind == "micro" and duration < p.micro_min_s - 1e-3:  # - 1 ms: timestamp rounding
            reason = f"{duration * 1000:.0f} ms < micro_min_s {p.micro_min_s}: too short for a facial action"
        if not reason and top < p.min_intensity_px:
            reason = f"peak displacement {top:.3f} px < min_intensity_px {p.min_intensity_px}"
        iv = Interval(self.track_id, kind, on.frame, apex.frame, off.frame, on.t_mono_ns, apex.t_mono_ns,
                      off.t_mono_ns, on.t_wall_ns, apex.t_wall_ns, off.t_wall_ns, score, top, rois, reason)
        return iv

    def _logged(self, iv: Interval) -> Interval:
        """iv, logged as it goes out (not while _publish_early weighs an open event)."""
        if iv.discarded:
            log.info("track %d: %s interval %d-%d discarded: %s", self.track_id, iv.kind, iv.onset, iv.offset,
                     iv.discarded)
        else:
            log.debug("track %d: %s %d/%d/%d score %.1f %.2f px %s", self.track_id, iv.kind, iv.onset, iv.apex,
                      iv.offset, iv.score, iv.intensity, iv.rois)
        return iv

    # ---- rise-and-return detector
    def _bump(self, f: _Frame) -> Interval | None:
        """Spot a micro-expression too small for the onset threshold by its shape: a rise that returns.

        On the accumulated displacement acc (running sum of flow / lag: the face's displacement, smoothed
        over one lag, plus a random walk of flow noise and any slow drift), the score of channel c for a
        window of w frames ending at apex a = t - w is min(|rise|, return projected on the rise), with
        rise = acc[a] - acc[a - w] and return = acc[a] - acc[t], in units of the rise's own noise scale
        on quiet history (bnoise); the window's score is the RMS of its BUMP_CHANNELS best channels. A
        linear drift cancels in the return; a step (an expression that stays, a head that does not come
        back) has no return; one frame's flow glitch is a step.
        A score >= k_bump makes a candidate; once the displacement after the apex has gone still, the
        bump is measured on the event channels' projected curve against the level before it and the
        level after it (see _bump_close)."""
        if self.bnoise is None or not self.widths or self.noise is None:
            return None
        t = f.frame
        best_z, best_i, best = 0.0, -1, None
        for i, w in enumerate(self.widths):
            a, b = self.by_frame.get(t - w), self.by_frame.get(t - 2 * w)
            if a is None or b is None or b.frame <= self.quiet_from or a.acc is None or b.acc is None:
                continue
            r, q = a.acc - b.acc, a.acc - f.acc
            rn = np.hypot(r[:, 0], r[:, 1]) + 1e-12
            z = np.minimum(rn, (q * r).sum(1) / rn) / self.bnoise[i]
            # Two channels, not one: an action unit moves a patch of skin wider than one block, while a
            # noise bump in one block (low-texture chin, one brow) shows in that block alone (and, at half
            # strength, in its mirrored pair). On the bench the second-best channel of 35 true rises and
            # returns scored 5.1-9.3, that of 9 false ones 2.6-5.8.
            top = float(np.sqrt(np.mean(np.partition(z, -BUMP_CHANNELS)[-BUMP_CHANNELS:] ** 2)))
            if top > best_z:
                best_z, best_i, best = top, i, (z, r / rn[:, None])
        cand = self.cand
        if best is not None and best_z >= self.p.k_bump:
            w = self.widths[best_i]
            new = {"z": best_z, "i": best_i, "w": w, "apex": t - w, "zc": best[0], "dirs": best[1]}
            if cand is None:
                self.cand = cand = new
            elif abs(new["apex"] - cand["apex"]) <= max(w, cand["w"]) and best_z > cand["z"]:
                self.cand = cand = new
        # Measured once the shortest window has passed the apex: the longer windows' scores only pick the
        # channels, and waiting for them would hold every event back by their length (latency).
        if cand is None or t < cand["apex"] + self.widths[0] + 1:
            return None
        return self._bump_close(f)

    def _bump_close(self, f: _Frame) -> Interval | None:
        """Measure the pending bump, or wait (None). P is the event channels' displacement projected on
        their rise directions, in noise units (weighted by their scores). After the apex, P is still once it
        has not fallen by 1 noise unit for a quarter of the shortest window; then pre = the lowest P before
        the apex (back to two longest windows), post = the lowest after it. It returned if peak - post >=
        return_frac * (peak - pre) (else a step, an expression that stays: the onset threshold's business);
        onset = the last frame before the apex at pre + edge_frac of the rise, offset = the first after it
        at post + edge_frac of the return: a baseline from before and after, so drift is not an event."""
        p, cand, t = self.p, self.cand, f.frame
        assert cand is not None
        if (t - cand["apex"]) / self.fps() > 2 * p.micro_max_s:  # not still by now: not a micro-expression
            self.cand = None
            return None
        shape = self._bump_shape(f)
        if shape == "cancel":
            self.cand = None
        if isinstance(shape, str):
            return None
        ev, P, ia, ch = shape
        j = ia
        for k in range(ia + 1, len(ev)):
            if P[k] < P[j] - 1.0:
                j = k
        # Still for a quarter of the shortest window (one frame at 30 fps): the falls are counted in whole
        # noise units, so a return still under way shows; any longer only delays the event (latency).
        if ev[-1].frame - ev[j].frame < max(1, self.widths[0] // 4):
            return None  # still returning
        peak, pre, post = float(P[ia]), float(P[:ia + 1].min()), float(P[ia:].min())
        self.cand = None
        if peak - post < p.return_frac * (peak - pre):
            return None
        ko, on, apex = self._bump_onset_apex(ev, P, ia, f)
        kf = min(k for k in range(ia + 1, len(ev)) if P[k] <= post + p.edge_frac * (peak - post))
        # The offset is not moved back like the onset and apex (see _bump_onset_apex): edge_frac of a
        # tapering return is reached before the face is back, which the trailing cancels (moved back too,
        # offsets came 1.3 frames early on the bench and IoU fell), and the event's latency counts from it.
        off = ev[kf]
        ev = ev[ko:]
        for g in ev:
            g.busy = True
        D = np.stack([g.acc - on.acc for g in ev])
        iv = self._describe(ev, on, apex, off, D, ch, cand["z"], False, "", max(1, f.frame - f.ref))
        self.quiet_from = off.frame
        return self._logged(iv)

    def _bump_shape(self, f: _Frame) -> tuple[list[_Frame], np.ndarray, int, np.ndarray] | str:
        """The pending bump's curve up to frame f: (frames from before its rise, P, apex index in them, the
        channels), or "wait" (too few frames past the apex) or "cancel" (no history before it)."""
        p, cand = self.p, self.cand
        start = cand["apex"] - 2 * self.widths[-1] - 2
        ev = [g for g in self.frames if start <= g.frame <= f.frame and g.acc is not None]
        ia = next((k for k, g in enumerate(ev) if g.frame >= cand["apex"]), None)
        if ia is None or ia == 0:
            return "cancel"
        ch = cand["zc"] >= p.k_off
        wgt = cand["zc"][ch] / np.linalg.norm(cand["zc"][ch])
        A = np.stack([g.acc[ch] for g in ev])  # (T, c, 2)
        P = ((A * cand["dirs"][ch]).sum(2) / self.bnoise[cand["i"]][ch]) @ wgt
        half = max(1, cand["w"] // 2)
        lo, hi = max(1, ia - half), min(len(ev) - 2, ia + half)
        if hi < lo:
            return "wait"
        return ev, P, lo + int(np.argmax(P[lo:hi + 1])), ch

    def _bump_onset_apex(self, ev: list[_Frame], P: np.ndarray, ia: int, f: _Frame) -> tuple[int, _Frame, _Frame]:
        """(ko, onset, apex) of a bump: ev[ko] is the last frame before the apex at pre + edge_frac of the
        rise. acc[t] is the face's displacement averaged over frames t - lag + 1 .. t (a running sum of
        lagged flows / lag), so it trails the face by (lag - 1) / 2 frames: onset and apex move back by
        that from ev[ko] and ev[ia]."""
        pre, peak = float(P[:ia + 1].min()), float(P[ia])
        ko = max(k for k in range(ia) if P[k] <= pre + self.p.edge_frac * (peak - pre))
        s = (max(1, f.frame - f.ref) - 1) // 2
        return ko, ev[max(0, ko - s)], ev[ia - s]

    def finish(self, reason: str = "") -> list[Interval]:
        """The stream or the track ended: close an open event (discarded with `reason` if given)."""
        if self.event is None:
            return []
        return self._close(forced=not reason, reason=reason)


# ----------------------------------------------------------------------------------- multi-track spotter

@dataclass
class FrameInfo:
    """What the face node reported about one track at one frame."""

    head_motion: float = 0.0   # frame px / frame
    residual: float = 0.0      # crop px RMS
    scale: float = 1.0         # crop px per frame px
    position: tuple[float, float] | None = None  # where the crop centre lies in the frame, frame px

    @classmethod
    def from_transform(cls, head_motion: float, residual: float, transform: np.ndarray) -> FrameInfo:
        """From the face node's (2, 3) frame -> crop affine of this track (crops message `transforms`)."""
        M = np.asarray(transform, np.float64)
        A = M[:, :2]
        c = (CROP_SIZE - 1) / 2  # any fixed crop point would do: only its motion in the frame is used
        centre = np.linalg.solve(A, np.array([c, c]) - M[:, 2])
        return cls(float(head_motion), float(residual), float(np.sqrt(abs(np.linalg.det(A)))),
                   (float(centre[0]), float(centre[1])))


class Spotter:
    """Spotting for every track of one stream: feed it face-node info and flows, collect intervals."""

    def __init__(self, params: SpotParams | None = None) -> None:
        self.p = params or SpotParams()
        self.p.check()
        self.tracks: dict[int, TrackSpotter] = {}
        self.info: dict[tuple[int, int], FrameInfo] = {}
        self._features: dict[int, RoiFeatures] = {}
        self._positions: dict[int, deque] = {}  # per track: (frame, face position in frame px) of ~0.1 s
        self._speeds: dict[tuple[int, str], deque] = {}  # per (track, kind): recent rigid / head speeds
        self._last_rigid: dict[int, float] = {}  # per track: the previous frame's rigid speed, crop px/s

    def _limit(self, track_id: int, kind: str, value: float, floor: float, fps: float) -> float:
        """max(floor, median + k_motion MADs) of this track's recent `kind` speeds (then adds `value`)."""
        hist = self._speeds.setdefault((track_id, kind), deque(maxlen=max(10, round(self.p.noise_window_s * fps))))
        limit = floor
        if len(hist) >= 10:
            a = np.fromiter(hist, float)
            med = float(np.median(a))
            limit = max(floor, med + self.p.k_motion * 1.4826 * float(np.median(np.abs(a - med))))
        hist.append(value)
        return limit

    def features(self, size: int) -> RoiFeatures:
        if size not in self._features:
            self._features[size] = RoiFeatures(size, rigid=self.p.rigid)
        return self._features[size]

    def _lid_reach(self, roi_of: np.ndarray) -> np.ndarray | None:
        """RoiFeatures.lid_reach of the layout that produced `roi_of` (features cached by calibration
        carry only roi_of: the layout is found again among the usual crop sizes)."""
        known = list(self._features.values())
        layouts = itertools.chain(known, (RoiFeatures(s) for s in (128, 96, 64, 160, 192, 256)))  # lazily
        return next((f.lid_reach for f in layouts if np.array_equal(f.roi_of, roi_of)), None)

    def note_frame(self, frame: int, track_id: int, info: FrameInfo) -> None:
        """Face-node information for (frame, track); kept for a few seconds."""
        self.info[(frame, int(track_id))] = info
        if len(self.info) > 4096:
            for k in sorted(self.info)[:1024]:
                del self.info[k]

    def end_track(self, track_id: int, reason: str = "track lost") -> list[Interval]:
        self._positions.pop(int(track_id), None)
        self._last_rigid.pop(int(track_id), None)
        for kind in ("rigid", "head"):
            self._speeds.pop((int(track_id), kind), None)
        t = self.tracks.pop(int(track_id), None)
        return t.finish(reason) if t else []

    def push(self, frame: int, t_mono_ns: int, t_wall_ns: int, track_id: int, ref_frame: int,
             flow: np.ndarray) -> list[Interval]:
        """One flow (2, S', S') crop px of `track_id` at `frame` against `ref_frame`."""
        feats, rigid = self.features(flow.shape[-1])(flow)
        return self.push_features(frame, t_mono_ns, t_wall_ns, track_id, ref_frame, feats, rigid,
                                  self.features(flow.shape[-1]).roi_of)

    def push_features(self, frame: int, t_mono_ns: int, t_wall_ns: int, track_id: int, ref_frame: int,
                      feats: np.ndarray, rigid: float, roi_of: np.ndarray) -> list[Interval]:
        """As push(), from RoiFeatures output (calibration replays cached features through this)."""
        track_id = int(track_id)
        spotter = self.tracks.get(track_id)
        if spotter is None:
            spotter = self.tracks[track_id] = TrackSpotter(track_id, self.p, roi_of, self._lid_reach(roi_of))
        lag = max(1, frame - ref_frame)
        fps = spotter.fps()
        info = self.info.pop((frame, track_id), None)
        flag = ""
        sustained = 0.0  # head speed, crop px/s (unknown without face-node info)
        rigid_speed = rigid / lag * fps
        rigid_limit = self._limit(track_id, "rigid", rigid_speed, self.p.rigid_speed_max, fps)
        # Rigid motion of the crop shows in every lagged flow that spans it (lag frames in a row), while the
        # affine fit's noise is independent frame to frame: with lag >= 2, over the limit in two flows
        # running, not one.
        sustained_rigid = min(rigid_speed, self._last_rigid.get(track_id, 0.0)) if lag >= 2 else rigid_speed
        self._last_rigid[track_id] = rigid_speed
        if sustained_rigid > rigid_limit:
            flag = f"rigid motion {sustained_rigid:.0f} crop px/s > {rigid_limit:.0f}"
        if info is not None:
            # Head speed is the displacement of the face (crop centre, frame px) over the last ~0.1 s:
            # per-frame alignment jitter (a webcam's shaky detections, removed by the stabiliser) is
            # independent frame to frame and averages out over the window, while a head movement does
            # not. A single jump far above any jitter (a re-lock of the alignment) counts at once.
            speed = info.head_motion * info.scale * fps
            sustained = speed
            if info.position is not None:
                hist = self._positions.setdefault(track_id, deque(maxlen=max(2, round(0.1 * fps) + 1)))
                hist.append((frame, info.position))
                (f0, p0), (f1, p1) = hist[0], hist[-1]
                if f1 > f0:
                    sustained = float(np.hypot(p1[0] - p0[0], p1[1] - p0[1])) / ((f1 - f0) / fps) * info.scale
            spotter.head_limit = self._limit(track_id, "head", sustained, self.p.bump_head_speed_max, fps)
            if sustained > self.p.head_speed_max or speed > JUMP * self.p.head_speed_max:
                flag = f"head motion {max(sustained, speed):.0f} crop px/s > {self.p.head_speed_max}"
            elif info.residual > self.p.residual_max:
                flag = f"stabilisation residual {info.residual:.2f} px > {self.p.residual_max}"
        return spotter.push(frame, t_mono_ns, t_wall_ns, ref_frame, feats, flag, speed=sustained)

    def finish(self) -> list[Interval]:
        """End of stream: close open events (an event cut by the end is closed as it stands)."""
        out = []
        for tid in list(self.tracks):
            out += self.tracks.pop(tid).finish()
        return out


# ------------------------------------------------------------------------------------------ evaluation

def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame ranges (onset, offset)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def match_pairs(pred: list[tuple[int, int]], truth: list[tuple[int, int]], thr: float = 0.5,
                ) -> list[tuple[int, int]]:
    """MEGC rule: greedy one-to-one matching by IoU >= thr, best IoU first. Returns (pred i, truth j) pairs."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, out = set(), set(), []
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def match(pred: list[tuple[int, int]], truth: list[tuple[int, int]], thr: float = 0.5,
          ) -> tuple[int, int, int]:
    """MEGC rule: greedy one-to-one matching by IoU >= thr. Returns (TP, FP, FN)."""
    tp = len(match_pairs(pred, truth, thr))
    return tp, len(pred) - tp, len(truth) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2TP / (2TP + FP + FN); 1.0 when there was nothing to find and nothing was found."""
    d = 2 * tp + fp + fn
    return 2 * tp / d if d else 1.0
