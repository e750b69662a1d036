"""Test and benchmark clips: a real face photograph moving rigidly over a static background, written as a
real video file (MJPG .avi) with the true per-frame transforms.

The face is skimage's `astronaut` (a frontal photograph that ships inside scikit-image). Motion is smooth
and sub-pixel (a few px of translation, a degree or two of roll, a few % of scale), like a seated person.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError

# Face region of the astronaut image (x0, y0, x1, y1) px; its Haar box is about (177, 66, 95, 95).
FACE_PATCH = (120, 10, 330, 240)
# Eye centres in that image (dlib 68-point means), px.
ASTRONAUT_EYES = np.array([[203.3, 101.5], [246.7, 103.8]])
# Brow centres in that image, px, and the spread of a brow raise (Gaussian sigma, px).
ASTRONAUT_BROWS = np.array([[203.0, 87.0], [247.0, 90.0]])
BROW_SIGMA = 9.0


def brow_raise(face: np.ndarray, amp: float) -> np.ndarray:
    """The face photograph with both brows lifted by `amp` px (a smooth local warp, like AU1+2)."""
    h, w = face.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy = np.zeros((h, w), np.float32)
    for bx, by in ASTRONAUT_BROWS:
        dy -= amp * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * BROW_SIGMA ** 2))
    # Output pixel p shows the input at p - d(p): content moves by d (up for amp > 0).
    return cv2.remap(face, xx, yy - dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def astronaut_grey() -> np.ndarray:
    """The astronaut photograph (512, 512) uint8 grey."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)


def background(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A static (H, W) uint8 background: a soft gradient with blurred low-contrast texture."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 90 + 50 * xx / w + 30 * yy / h
    tex = cv2.GaussianBlur(rng.normal(0, 30, (h, w)), (0, 0), 4)
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def face_transform(k: int, centre: tuple[float, float], scale: float, amp: float = 6.0,
                   roll_deg: float = 2.0, zoom: float = 0.03, phase: float = 0.0) -> np.ndarray:
    """2x3 map astronaut px -> frame px at frame k: the face centre placed at `centre`, moving smoothly."""
    t = 2 * np.pi * k / 50.0 + phase
    cx, cy = centre[0] + amp * np.sin(t), centre[1] + 0.6 * amp * np.sin(0.7 * t + 1.0)
    ang = np.deg2rad(roll_deg * np.sin(0.5 * t))
    s = scale * (1 + zoom * np.sin(0.3 * t))
    fx, fy = (FACE_PATCH[0] + FACE_PATCH[2]) / 2, (FACE_PATCH[1] + FACE_PATCH[3]) / 2
    a, b = s * np.cos(ang), s * np.sin(ang)
    return np.array([[a, -b, cx - (a * fx - b * fy)], [b, a, cy - (b * fx + a * fy)]])


def render(bg: np.ndarray, face: np.ndarray, transforms: list[np.ndarray]) -> np.ndarray:
    """Paste the face patch of `face` (512, 512) onto a copy of `bg` once per transform (feathered edge)."""
    h, w = bg.shape
    x0, y0, x1, y1 = FACE_PATCH
    mask = np.zeros(face.shape, np.float32)
    mask[y0:y1, x0:x1] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), 6) * (mask > 0)
    out = bg.astype(np.float32)
    for T in transforms:
        f = cv2.warpAffine(face.astype(np.float32), T, (w, h), flags=cv2.INTER_CUBIC)
        m = cv2.warpAffine(mask, T, (w, h), flags=cv2.INTER_LINEAR)
        out = out * (1 - m) + f * m
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_clip(path: str | Path, n_frames: int = 60, n_faces: int = 1, size: tuple[int, int] = (640, 480),
               scale: float | None = None, noise: float = 1.0, fps: float = 25.0, seed: int = 0,
               still: bool = False, raise_frames: tuple[int, int] | None = None,
               raise_amp: float = 1.5) -> list[list[np.ndarray]]:
    """Write an MJPG .avi of `n_faces` astronaut faces (0 = background only) moving rigidly.

    Returns the true transforms per frame (astronaut px -> frame px), one list of 2x3 per face.
    `noise` is the sensor noise sigma (grey levels); `still` keeps every face at its start pose;
    frames in `raise_frames` [start, end) show a brow raise of `raise_amp` photograph px.
    """
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h), isColor=False)
    if not writer.isOpened():
        raise UserError(f"cannot write video {path}")
    rng = np.random.default_rng(seed)
    face, bg = astronaut_grey(), background(size, seed)
    raised = brow_raise(face, raise_amp) if raise_frames else face
    if scale is None:
        scale = min(1.2, 0.9 * w / (n_faces * (FACE_PATCH[2] - FACE_PATCH[0]))) if n_faces else 1.0
    centres = [((i + 0.5) * w / n_faces, h * 0.5) for i in range(n_faces)]
    truth = []
    for k in range(n_frames):
        Ts = [face_transform(0 if still else k, c, scale, phase=1.3 * i) for i, c in enumerate(centres)]
        on = raise_frames is not None and raise_frames[0] <= k < raise_frames[1]
        img = render(bg, raised if on else face, Ts).astype(np.float32)
        if noise > 0:
            img += rng.normal(0, noise, img.shape)
        writer.write(np.clip(img + 0.5, 0, 255).astype(np.uint8))
        truth.append(Ts)
    writer.release()
    return truth


def read_frames(path: str | Path) -> list[np.ndarray]:
    """All frames of a video file as (H, W) uint8 grey."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(f"cannot open video {path}")
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cap.release()
    return out


def crop_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Global shift (dx, dy) px of crop b relative to crop a by windowed phase correlation (sub-pixel)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)  # fresh copies: phaseCorrelate writes its inputs
    win = cv2.createHanningWindow(fa.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(fa, fb, win)
    return float(dx), float(dy)
