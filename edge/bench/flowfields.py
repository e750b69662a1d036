"""Known flow fields on a real face crop, and how far an estimate is from them: the fixtures of
`facesleuth bench flow` (edge.bench.flow) and of the flow tests.

    img = face_crop(128)                           # aligned grey crop (128, 128) uint8
    truth = known_field("brow_raise", 128)         # (128, 128, 2) float32 px, edge.perception.flow's convention
    nxt = warp_by_flow(img, truth)                 # the next frame: true flow img -> nxt is `truth`
    epe = end_point_error(flow.calc(img, nxt), truth, region_mask("brow_raise"))
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge.errors import UserError
from edge.perception.flow import FlowBackend


def warp_by_flow(img: np.ndarray, flow: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Make `next` from `prev` = img so that the TRUE flow prev -> next is exactly `flow` (H, W, 2) px.

    Sign convention: a point at p in `img` moves to p + flow(p). Rendering needs the inverse (backward)
    map: for each output pixel x, find the source p with p + flow(p) = x, by the fixed-point iteration
    p <- x - flow(p) (converges for smooth fields with |grad flow| < 1, i.e. every facial motion), then
    next(x) = img(p) by bilinear remap. Sampling img at x - flow(x) instead would make the truth the
    flow on the NEXT grid, off by the field's gradient times its size.
    """
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    px, py = xs.copy(), ys.copy()
    fu, fv = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    for _ in range(iterations):
        u = cv2.remap(fu, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        v = cv2.remap(fv, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        px, py = xs - u, ys - v
    return cv2.remap(img, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def gaussian_bump(size: int, centre: tuple[float, float], sigma: tuple[float, float],
                  vector: tuple[float, float]) -> np.ndarray:
    """(size, size, 2) float32 field: `vector` (u, v) px at `centre` (x, y) px, Gaussian falloff sigma (sx, sy)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    g = np.exp(-0.5 * (((xs - centre[0]) / sigma[0]) ** 2 + ((ys - centre[1]) / sigma[1]) ** 2))
    return np.stack([g * vector[0], g * vector[1]], -1).astype(np.float32)


def known_field(kind: str, size: int = 128, amplitude: float = 1.0) -> np.ndarray:
    """A known flow field (size, size, 2) float32 px on the canonical aligned crop (edge.perception.geometry).

    kind: "brow_raise" (both brows up by `amplitude` px at their centre), "lip_corner_pull" (mouth
    corners out and up, |vector| = amplitude), "shift" (rigid translation (0.6, -0.4) * amplitude px),
    "rotation" (rigid 1 degree * amplitude about the crop centre).
    """
    from edge.perception.geometry import ROIS

    def centre(roi: str) -> tuple[float, float]:
        x0, y0, x1, y1 = ROIS[roi]
        return (x0 + x1) / 2 * size - 0.5, (y0 + y1) / 2 * size - 0.5

    s = size / 128.0
    if kind == "brow_raise":
        return sum(gaussian_bump(size, centre(r), (10 * s, 6 * s), (0.0, -amplitude))
                   for r in ("brow_left", "brow_right"))
    if kind == "lip_corner_pull":
        a = amplitude / np.sqrt(2)
        return (gaussian_bump(size, centre("mouth_left"), (7 * s, 6 * s), (-a, -a))
                + gaussian_bump(size, centre("mouth_right"), (7 * s, 6 * s), (a, -a)))
    if kind == "shift":
        f = np.empty((size, size, 2), np.float32)
        f[..., 0], f[..., 1] = 0.6 * amplitude, -0.4 * amplitude
        return f
    if kind == "rotation":
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        c = (size - 1) / 2
        t = np.deg2rad(1.0 * amplitude)
        x, y = xs - c, ys - c
        return np.stack([np.cos(t) * x - np.sin(t) * y - x, np.sin(t) * x + np.cos(t) * y - y],
                        -1).astype(np.float32)
    raise UserError(f"unknown field {kind!r}; choose from brow_raise, lip_corner_pull, shift, rotation")


FIELD_ROIS = {"brow_raise": ("brow_left", "brow_right"), "lip_corner_pull": ("mouth_left", "mouth_right"),
              "shift": None, "rotation": None}


def region_mask(kind: str, size: int = 128) -> np.ndarray:
    """(size, size) bool: where EPE is measured for a field: its ROIs, or the inner crop (8-px margin)."""
    from edge.perception.geometry import roi_boxes

    m = np.zeros((size, size), bool)
    rois = FIELD_ROIS.get(kind)
    if rois is None:
        b = max(1, size // 16)
        m[b:-b, b:-b] = True
        return m
    boxes = roi_boxes(size)
    for r in rois:
        x0, y0, x1, y1 = boxes[r]
        m[y0:y1, x0:x1] = True
    return m


def end_point_error(est: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error |est - truth| in px, over `mask` (H, W) bool if given."""
    e = np.hypot(est[..., 0] - truth[..., 0], est[..., 1] - truth[..., 1])
    return float(e[mask].mean() if mask is not None else e.mean())


def motion_gain(est: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """How much of the true motion the estimate sees: sum(est . truth) / sum(|truth|^2) over `mask`.

    1.0 = all of it, 0.3 = a third (the failure mode of flow tuned for large motion); a wrong sign gives
    a negative gain. Complements the EPE, which a mostly-still region dilutes.
    """
    m = np.ones(truth.shape[:2], bool) if mask is None else mask
    num = float((est[m] * truth[m]).sum())
    den = float((truth[m] ** 2).sum())
    return num / den if den > 0 else float("nan")


def face_crop(size: int = 128) -> np.ndarray:
    """A real face photograph as an aligned grey crop (size, size) uint8: skimage's astronaut (public domain).

    The eye centres (201.5, 100.5) and (246.5, 103.5) px were located once with OpenCV's Haar eye
    cascade; the crop is aligned with edge.perception.geometry.align_from_eyes like the face node's crops.
    """
    from skimage import data

    from edge.perception.geometry import align_from_eyes

    rgb = data.astronaut()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    m = align_from_eyes(np.array([201.5, 100.5]), np.array([246.5, 103.5]), size)
    return cv2.warpAffine(grey, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101)


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """img + Gaussian noise (sigma grey levels), rounded and clipped to uint8 (a sensor's noise)."""
    if sigma <= 0:
        return img
    return np.clip(np.rint(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


def time_calc(flow: FlowBackend, prev: np.ndarray, next: np.ndarray, repeats: int = 10) -> tuple[np.ndarray, float]:
    """Run flow.calc once to warm up, then `repeats` times; returns (last flow, median ms per call)."""
    out = flow.calc(prev, next)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = flow.calc(prev, next)
        ts.append((time.perf_counter() - t0) * 1e3)
    return out, float(np.median(ts))
