"""The canonical aligned-face geometry: ONE definition used by the synthetic generator, the face node,
training preprocessing and the spotter.

Convention: image axes, x right, y down, pixel centres at integer coordinates, coordinates in pixels of
the aligned crop of side `size` (default 128). "Left eye" is the eye on the image's left (the subject's
right eye). The crop is a similarity transform of the frame (rotation + uniform scale + shift) that puts
the eye centres at `EYE_LEFT` and `EYE_RIGHT` (fractions of the side), so the eye line is horizontal
and the inter-ocular distance is `EYE_DISTANCE * size` px.
"""

from __future__ import annotations

import numpy as np

CROP_SIZE = 128
# Eye centres as fractions of the crop side: the face (brows to chin) fills the crop with a small margin.
EYE_LEFT = (0.315, 0.36)
EYE_RIGHT = (0.685, 0.36)
EYE_DISTANCE = EYE_RIGHT[0] - EYE_LEFT[0]

# Regions of interest on the aligned crop, as (x0, y0, x1, y1) fractions of the side. Mobile regions
# (where action units move skin) and a stable region (nose bridge) used as the rigid reference.
ROIS: dict[str, tuple[float, float, float, float]] = {
    "brow_left": (0.16, 0.18, 0.46, 0.32),
    "brow_right": (0.54, 0.18, 0.84, 0.32),
    "eye_left": (0.20, 0.31, 0.43, 0.42),
    "eye_right": (0.57, 0.31, 0.80, 0.42),
    "nose_left": (0.36, 0.52, 0.47, 0.66),
    "nose_right": (0.53, 0.52, 0.64, 0.66),
    "mouth_left": (0.26, 0.66, 0.44, 0.82),
    "mouth_right": (0.56, 0.66, 0.74, 0.82),
    "chin": (0.38, 0.84, 0.62, 0.97),
}
STABLE_ROIS: dict[str, tuple[float, float, float, float]] = {
    "nose_bridge": (0.44, 0.36, 0.56, 0.52),
}
# The face's lower edges, outside every ROI: a hand reaching the face from below or the side crosses the
# jaw line here before it covers a ROI (edge.perception.spot.occlusion).
EDGE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "jaw_left": (0.08, 0.70, 0.26, 0.94),
    "jaw_right": (0.74, 0.70, 0.92, 0.94),
}
# The face's skin as an ellipse (centre x, centre y, semi-axis x, semi-axis y), fractions of the side:
# cheek to cheek and brows to chin, inside the crop's margin. The spotter fits the crop's rigid motion on
# it, outside the ROIs.
FACE_ELLIPSE = (0.5, 0.55, 0.38, 0.44)


def eye_points(size: int = CROP_SIZE) -> np.ndarray:
    """Canonical eye centres (2, 2) float32 [[xl, yl], [xr, yr]] in crop px (pixel centres)."""
    return np.array([EYE_LEFT, EYE_RIGHT], np.float32) * size - 0.5


def roi_boxes(size: int = CROP_SIZE, rois: dict[str, tuple[float, float, float, float]] | None = None,
              ) -> dict[str, tuple[int, int, int, int]]:
    """ROIs as integer pixel boxes (x0, y0, x1, y1), end-exclusive, for a crop of side `size`."""
    rois = ROIS if rois is None else rois
    return {k: (round(a * size), round(b * size), round(c * size), round(d * size))
            for k, (a, b, c, d) in rois.items()}


def align_from_eyes(left_eye: np.ndarray, right_eye: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The 2x3 float64 similarity mapping frame px -> crop px that puts the eyes at their canonical places.

    Args:
        left_eye, right_eye: (2,) eye centres (x, y) in frame px; left = image left.
        size: crop side in px.
    Returns:
        M (2, 3) such that crop = M @ [x, y, 1]; use with cv2.warpAffine(frame, M, (size, size)).
    """
    src = np.asarray([left_eye, right_eye], np.float64)
    dst = eye_points(size).astype(np.float64)
    d_src, d_dst = src[1] - src[0], dst[1] - dst[0]
    norm = float(np.hypot(*d_src))
    if norm < 1e-6:
        raise ValueError("eye points coincide")
    # Similarity as a complex multiplication z -> a*z + b, a = d_dst / d_src.
    a = complex(*d_dst) / complex(*d_src)
    b = complex(*dst[0]) - a * complex(*src[0])
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
