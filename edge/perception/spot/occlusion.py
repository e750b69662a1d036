"""Per-ROI occlusion from the flow: change in a ROI that its own flow cannot explain.

Skin moves: warping the current crop back by the flow reproduces the reference crop, up to sensor noise
and a little interpolation, however the skin moved. Something sliding over the face (a hand, hair, an
object) does not: where it covers or uncovers skin, and at its edges, no displacement of the skin makes
the two crops agree. Each ROI's score is its mean absolute warp residual (grey levels) over the ROI's own
typical residual (the median of its last LEVEL_S), so texture and noise, which differ by ROI and camera,
cancel: ~1 on a quiet face or one moving with an expression, 4-20 where an occluder moves.

The same score at the face's lower edges (geometry.EDGE_BOXES, outside every ROI) catches a hand on its
way in: it crosses the jaw line before it covers a ROI, and as it comes the face node re-registers the
face under it, which shifts the lower ROIs by a fraction of a pixel: a micro-expression's size, with no ROI
yet occluded (clm_cap12 frame 1173: docs/spotting.md).

A still occluder leaves no residual, but it makes no motion either (no event to discard). A lid closing
over the eye and an open mouth's teeth are changes of this kind too: the spotter does not count them as
occlusion while the eyes are shut or the face talks (edge.perception.spot.context).
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from edge.perception.geometry import EDGE_BOXES, ROIS, roi_boxes

LEVEL_S = 4.0       # the typical residual: median over this long
RESIDUAL_FLOOR = 0.5  # grey levels: the typical residual is at least this (a flat, noiseless crop)


class WarpResidual:
    """One track's warp residual over its typical level, per ROI and face edge: `update(ref, crop, flow)`."""

    def __init__(self, crop_size: int, fps: float) -> None:
        self.boxes = [*roi_boxes(crop_size).values(), *roi_boxes(crop_size, EDGE_BOXES).values()]
        self.history: deque[np.ndarray] = deque(maxlen=max(10, round(LEVEL_S * fps)))
        yy, xx = np.mgrid[0:crop_size, 0:crop_size].astype(np.float32)
        self.grid = (xx, yy)

    def update(self, ref: np.ndarray, crop: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores of the flow (2, S', S') crop px from grey crop `ref` to `crop`: (R,) per ROI
        (geometry.ROIS order) and (E,) per face edge (geometry.EDGE_BOXES order)."""
        size = crop.shape[0]
        if flow.shape[-1] != size:  # the flow node's output was downscaled: back to crop px and size
            k = size / flow.shape[-1]
            flow = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) * k for c in flow])
        xx, yy = self.grid
        back = cv2.remap(crop, xx + flow[0], yy + flow[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = cv2.absdiff(back, ref).astype(np.float32)
        residual = np.array([diff[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in self.boxes], np.float32)
        level = np.median(np.stack(self.history), axis=0) if len(self.history) >= 5 else residual
        self.history.append(residual)
        scores = residual / np.maximum(level, RESIDUAL_FLOOR)
        return scores[:len(ROIS)], scores[len(ROIS):]
