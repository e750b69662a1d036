"""ROI motion features: one flow field of the aligned crop -> per-channel mean residual flow.

Rigid removal: an affine motion field is fitted robustly (Tukey IRLS) to the flow on the face outside the
mobile ROIs (edge.perception.geometry) and subtracted, so residual head motion the stabiliser left does not reach the
channels; how much it removed is reported too (fast rigid motion flags the frame). Channels: every
canonical ROI is cut into blocks of ~BLOCK_FRAC of the crop side (about one action unit's skin patch); a
channel is the mean residual flow (u, v) of a block or of a 2x2 group of neighbouring blocks (a patch
seldom sits on the block grid), or the mirrored mean of one of those and its twin on the other side of the
face (bilateral action units: sqrt(2) less noise).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import UserError
from edge.perception.geometry import FACE_ELLIPSE, ROIS, roi_boxes
from edge.perception.robust import tukey_irls

EYE_ROIS = ("eye_left", "eye_right")

# Bilateral ROIs (mirror images in edge.perception.geometry): many action units move both sides alike, so the
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
                for row_a, row_b in zip(ga, gb, strict=True):
                    for j, channel in enumerate(row_a):
                        self.pairs.append((channel, row_b[len(row_b) - 1 - j]))
                        roi_of.append(-1 - k)
        self.roi_of = np.array(roi_of)
        self.n_blocks = len(self.slices)
        # Brow blocks within reach of the upper lid (their lower edge within a block of the eye ROIs' top):
        # a lid sweeping down drags these with it in the flow (Farneback's 15-px window spreads it a block
        # up, and an alignment a few px off puts the lid itself in a brow block), so they do not count
        # against a blink. With edge.perception.geometry's ROIs that is every brow block (two blocks tall).
        eye_top = min(boxes[r][1] for r in EYE_ROIS)
        self.lid_reach = np.zeros(len(roi_of), bool)
        for c, (sy, _) in enumerate(self.slices):
            self.lid_reach[c] = self.names[roi_of[c]].startswith("brow") and sy.stop >= eye_top - blk
        # Reference region for the rigid fit: the face's skin (FACE_ELLIPSE) minus the mobile ROIs (+1 px).
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        u, v = (xx + 0.5) / size, (yy + 0.5) / size
        ecx, ecy, erx, ery = FACE_ELLIPSE
        ref = ((u - ecx) / erx) ** 2 + ((v - ecy) / ery) ** 2 <= 1.0
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
        """Affine flow coefficients (3, 2): u = c0 + c1 x + c2 y (x, y centred, in crop sides), robust
        (Tukey IRLS: expression pixels inside the reference region get weight ~0)."""
        b = flow.reshape(2, -1)[:, self.ref_idx].T.astype(np.float64)  # (n, 2)
        A = self.A

        def fit(w: np.ndarray) -> np.ndarray:
            sw = np.sqrt(w)[:, None]
            return np.linalg.lstsq(A * sw, b * sw, rcond=None)[0]

        coef = tukey_irls(fit(np.ones(len(b))), fit, lambda c: np.hypot(*(b - A @ c).T), iters=2, eps=1e-6)
        assert coef is not None  # least squares always fits
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
        one, twin = np.array([p[0] for p in self.pairs], int), np.array([p[1] for p in self.pairs], int)
        paired = np.stack([(single[one, 0] - single[twin, 0]) / 2, (single[one, 1] + single[twin, 1]) / 2], 1)
        return np.concatenate([single, paired]), rigid
