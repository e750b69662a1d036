"""Per-track locked aligned crop with frame-to-frame rigid stabilisation.

Why: detector boxes jitter by 1-2 frame px from frame to frame, as much as a micro-expression moves skin,
so crops are never cut from per-frame boxes. A track fixes its alignment once (eyes on the canonical
places of edge.perception.geometry: eye line horizontal, canonical scale) and keeps a *template*, the first aligned
crop. Every frame, points on the template in regions that expressions barely move (nose bridge, temples,
cheek contour; never brows, eyes or mouth) are tracked with pyramidal Lucas-Kanade into the frame warped
by the previous alignment; a similarity transform fitted robustly to them (reweighted least squares from
no motion: deterministic, see robust_similarity) corrects the alignment, and one more iteration at the
finest level makes it sub-pixel. So the crops are registered to the template, not to the previous frame,
and do not drift.

Re-anchoring: when the template no longer matches (inliers drop, the fit residual grows, or after
`max_age` frames, e.g. lighting or pose changed) the template becomes the current crop. The current crop
is already registered to the old template, so the alignment does not jump; only the appearance that
later frames are compared with changes.

Slow correction of the canonical placement: the eyes found at birth may be off (a noisy eye cascade, or
its box fallback, which ignores roll). When later landmarks (`retarget`) disagree with the locked
placement by more than `pull_tolerance` crop px, the output crop is pulled towards them by at most
`pull_step` crop px per frame: a rigid drift far slower than any facial movement, never a jump. The pull
is an output-side correction C (crop -> crop); tracking stays registered to the template, so the pull is
not measured as head motion and does not fight the stabilisation.

Convention: as edge.perception.geometry (x right, y down, pixel centres at integers). M is the 2x3 float64 affine
frame px -> crop px (cv2.warpAffine(frame, M, (S, S))).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from edge.perception.geometry import CROP_SIZE, ROIS, STABLE_ROIS, align_from_eyes, eye_points, roi_boxes
from edge.perception.robust import tukey_irls

log = logging.getLogger(__name__)

# Anchor regions (fractions of the crop side) for the rigid fit: geometry's stable nose bridge plus the
# temples and the cheek contour next to the face edge, where no action unit moves skin much. The mobile
# ROIs of edge.perception.geometry are cut out of these regions again, whatever the numbers below say.
ANCHOR_ROIS: dict[str, tuple[float, float, float, float]] = {
    **STABLE_ROIS,
    "temple_left": (0.04, 0.14, 0.17, 0.44),
    "temple_right": (0.83, 0.14, 0.96, 0.44),
    "contour_left": (0.06, 0.44, 0.20, 0.66),
    "contour_right": (0.80, 0.44, 0.94, 0.66),
}

LK_WIN = (15, 15)
INLIER_PX = 0.75  # an anchor point within this many crop px of the fitted similarity agrees with it
LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.003)


def invert(M: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return cv2.invertAffineTransform(M.astype(np.float64))


def compose(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The 2x3 affine x -> A(B(x))."""
    return (np.vstack([A, [0, 0, 1]]) @ np.vstack([B, [0, 0, 1]]))[:2]


def apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (K, 2) points."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ M[:, :2].T + M[:, 2]


def anchor_mask(size: int = CROP_SIZE) -> np.ndarray:
    """(S, S) uint8 mask, 255 where anchor points may lie."""
    mask = np.zeros((size, size), np.uint8)
    for x0, y0, x1, y1 in roi_boxes(size, ANCHOR_ROIS).values():
        mask[y0:y1, x0:x1] = 255
    for x0, y0, x1, y1 in roi_boxes(size, ROIS).values():
        mask[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 0  # 2 px margin: LK windows reach across
    return mask


def pick_points(template: np.ndarray, max_points: int = 48) -> np.ndarray:
    """(K, 1, 2) float32 anchor points on the template: corners per anchor region, so no region (often
    the textured contour) takes them all; a grid on the nose bridge when the skin is too smooth."""
    size = template.shape[0]
    per = max(4, max_points // len(ANCHOR_ROIS))
    full = anchor_mask(size)
    pts = []
    for x0, y0, x1, y1 in roi_boxes(size, ANCHOR_ROIS).values():
        m = np.zeros_like(full)
        m[y0:y1, x0:x1] = full[y0:y1, x0:x1]
        found = cv2.goodFeaturesToTrack(template, per, 0.01, 4, mask=m, blockSize=5)
        if found is not None:
            pts.append(found.reshape(-1, 2))
    pts = np.concatenate(pts) if pts else np.zeros((0, 2), np.float32)
    if len(pts) < 8:
        x0, y0, x1, y1 = roi_boxes(size, STABLE_ROIS)["nose_bridge"]
        gx, gy = np.meshgrid(np.linspace(x0, x1 - 1, 3), np.linspace(y0, y1 - 1, 4))
        pts = np.concatenate([pts, np.stack([gx.ravel(), gy.ravel()], 1)])
    return pts.astype(np.float32).reshape(-1, 1, 2)


def robust_similarity(src: np.ndarray, dst: np.ndarray, iters: int = 6) -> np.ndarray | None:
    """(2, 3) similarity mapping (K, 2) points `src` to `dst`, by iteratively reweighted least squares
    (Tukey's biweight) started from no motion.

    Deterministic on purpose: the crop was warped with the last alignment, so no motion is the prior,
    and reweighting from there keeps the same consensus frame after frame. RANSAC's random samples can
    flip between two near-equal point sets (after a head turn, parallax splits the temples from the cheek
    contour) and jitter the crop by most of a pixel from frame to frame, which reads as face motion.
    """
    z, w = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]

    def fit(wt: np.ndarray) -> tuple[complex, complex] | None:  # z -> a z + b, weighted least squares
        if wt.sum() <= 0:
            return None
        zc, wc = (wt * z).sum() / wt.sum(), (wt * w).sum() / wt.sum()
        den = (wt * np.abs(z - zc) ** 2).sum()
        if den <= 1e-9:
            return None
        a = (wt * np.conj(z - zc) * (w - wc)).sum() / den
        return a, wc - a * zc

    # The weights' scale is never narrower than the inlier band.
    model = tukey_irls((1 + 0j, 0j), fit, lambda m: np.abs(m[0] * z + m[1] - w), iters, min_scale=INLIER_PX / 2)
    if model is None:
        return None
    a, b = model
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


@dataclass
class StabResult:
    """One frame of one track: `crop` (S, S) uint8, `M` (2, 3) frame -> emitted crop, `residual` RMS crop px of
    the anchor points about the fitted similarity, `motion` frame px/frame of the face since the last
    frame, `inliers` anchor points that agreed, `ok` False when the lock was lost (crop not valid)."""

    crop: np.ndarray
    M: np.ndarray
    residual: float
    motion: float
    inliers: int
    ok: bool
    reanchored: bool = False


class Stabiliser:
    """The locked, stabilised aligned crop of one face track.

    Args:
        grey: (H, W) uint8 frame in which the face was found.
        eyes: (2, 2) eye centres frame px, image-left first.
        size: crop side px.
        max_age: frames after which the template is refreshed even when it still matches.
        reanchor_residual: RMS crop px above which the template is refreshed.
        min_inliers: fewer agreeing anchor points than this and the lock is lost.
        pull_tolerance, pull_step: see "Slow correction" above, crop px and crop px per frame.

    `M` maps frame -> template crop (what tracking registers to); `output_M` = C o M is what the
    emitted crops use.
    """

    def __init__(self, grey: np.ndarray, eyes: np.ndarray, size: int = CROP_SIZE, max_age: int = 300,
                 reanchor_residual: float = 0.5, min_inliers: int = 6, pull_tolerance: float = 3.0,
                 pull_step: float = 0.03) -> None:
        self.size, self.max_age = size, max_age
        self.reanchor_residual, self.min_inliers = reanchor_residual, min_inliers
        self.pull_tolerance, self.pull_step = pull_tolerance, pull_step
        self.M = align_from_eyes(eyes[0], eyes[1], size)
        self.C = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        self.target: np.ndarray | None = None
        self._anchor(self._warp(grey, self.M))

    @property
    def output_M(self) -> np.ndarray:
        """(2, 3) frame px -> emitted crop px."""
        return compose(self.C, self.M)

    def retarget(self, eyes: np.ndarray) -> bool:
        """New eye centres (2, 2) frame px for the current frame: start a slow pull if they disagree with
        the output placement by more than the tolerance. Returns whether a pull is under way."""
        target = compose(align_from_eyes(eyes[0], eyes[1], self.size), invert(self.M))
        probe = eye_points(self.size)
        off = np.hypot(*(apply(target, probe) - apply(self.C, probe)).T).max()
        self.target = target if off > self.pull_tolerance else None
        if self.target is not None:
            log.debug("pulling the crop placement by %.1f px towards new landmarks", off)
        return self.target is not None

    def _pull(self) -> None:
        if self.target is None:
            return
        probe = eye_points(self.size)
        off = np.hypot(*(apply(self.target, probe) - apply(self.C, probe)).T).max()
        if off <= self.pull_step:
            self.C, self.target = self.target, None
        else:  # linear blend of two similarities is a similarity: [[a, -b], [b, a]] stays that shape
            self.C = self.C + (self.target - self.C) * (self.pull_step / off)

    def _warp(self, grey: np.ndarray, M: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(grey, M, (self.size, self.size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

    def _anchor(self, crop: np.ndarray) -> None:
        self.template = crop
        self.points = pick_points(crop)
        self.age = 0

    def _fit(self, crop: np.ndarray, levels: int) -> tuple[np.ndarray | None, float, int]:
        """Similarity D (template px -> crop px) from the anchor points, its RMS residual and inliers."""
        moved, st, _ = cv2.calcOpticalFlowPyrLK(self.template, crop, self.points, self.points.copy(),
                                                winSize=LK_WIN, maxLevel=levels, criteria=LK_CRITERIA,
                                                flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
        good = st.ravel() == 1
        if good.sum() < self.min_inliers:
            return None, float("inf"), int(good.sum())
        src, dst = self.points[good].reshape(-1, 2), moved[good].reshape(-1, 2)
        D = robust_similarity(src, dst)
        # A face does not change size by a fifth between two frames: such a fit locked onto something else.
        if D is None or not 0.8 < float(np.hypot(D[0, 0], D[1, 0])) < 1.25:
            return None, float("inf"), 0
        r = np.hypot(*(apply(D, src) - dst).T)
        inl = r < INLIER_PX
        if inl.sum() < self.min_inliers:
            return None, float("inf"), int(inl.sum())
        return D, float(np.sqrt((r[inl] ** 2).mean())), int(inl.sum())

    def update(self, grey: np.ndarray) -> StabResult:
        """Stabilise the next frame (H, W) uint8. On a lost lock the alignment stays as it was."""
        prev = self.M
        M = prev
        residual, inliers = float("inf"), 0
        # Coarse-to-fine: a pyramid pass catches the motion, a finest-level pass makes it sub-pixel.
        for levels in (3, 0):
            crop = self._warp(grey, M)
            D, residual, inliers = self._fit(crop, levels)
            if D is None:
                return StabResult(crop, self.output_M, residual, 0.0, inliers, False)
            M = compose(invert(D), M)
        self.M = M
        self.age += 1
        reanchor = (residual > self.reanchor_residual or inliers < 0.5 * len(self.points)
                    or self.age >= self.max_age)
        if reanchor:
            log.debug("re-anchor: residual %.2f px, %d/%d inliers, age %d", residual, inliers,
                      len(self.points), self.age)
            self._anchor(self._warp(grey, M))
        self._pull()
        out = self.output_M
        return StabResult(self._warp(grey, out), out, residual, self.motion(prev, M), inliers, True, reanchor)

    def recover(self, grey: np.ndarray, guess: np.ndarray) -> StabResult | None:
        """Find the lost face again from `guess` (2, 3) frame -> template crop, e.g. the last alignment moved
        by as much as the detection box moved: registered to the same template, so the placement carries on
        where it was on the face instead of being rebuilt from new landmarks (a jump of 5-30 crop px with
        the Haar eye cascade). The stabiliser is unchanged and None is returned when the template does not
        register there (the face turned or changed too much while lost)."""
        M = guess
        for levels in (3, 3, 0):  # the guess is coarser than a frame's motion: one more pyramid pass
            D, residual, inliers = self._fit(self._warp(grey, M), levels)
            if D is None or inliers < 0.5 * len(self.points) or residual > self.reanchor_residual:
                return None
            M = compose(invert(D), M)
        prev, self.M = self.M, M
        self._anchor(self._warp(grey, M))  # the template is the found crop: it registers to the old one
        out = self.output_M
        return StabResult(self._warp(grey, out), out, residual, self.motion(prev, M), inliers, True, True)

    def motion(self, prev: np.ndarray, M: np.ndarray) -> float:
        """Mean displacement, frame px, of the face's central points between two alignments."""
        s = self.size
        probe = np.array([[0.3, 0.3], [0.7, 0.3], [0.3, 0.8], [0.7, 0.8]]) * s
        return float(np.hypot(*(apply(invert(M), probe) - apply(invert(prev), probe)).T).mean())
