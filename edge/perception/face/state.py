"""Facial state per track and frame: eye openness, mouth opening, speech activity and head pose.

What the spotter needs to tell a micro-expression from the movements around it that are not one: a blink
(eye_open drops), speech (mouth_open oscillating at syllable rate), a head turn (pose). One
`FaceStateTracker` per face track holds the running levels and filters; `update()` gives a `FaceState`.

Sources, by the landmarks the tracker has:
- dlib68 or mesh (MediaPipe's face mesh in dlib's 68-point layout; searched every frame for this): eye aspect ratio of the 6 points per eye, inner-lip gap of
  points 60-67 over the inter-ocular distance, head pose by cv2.solvePnP of 9 rigid points (eye corners,
  nose) against FACE_MODEL_MM (pose_source "pnp68").
- eyes (eye cascade, no lid or lip points): appearance on the aligned crop. Eye openness is how much
  each eye ROI still looks like the track's usual eye (EyeLikeness: a blink's lid is not in the running
  template), mouth opening the RMS vertical grey gradient in the lips' band, both relative to the track's
  usual level; pose is roll from the eye line only, yaw and pitch nan (pose_source "eye_line"). On the
  real clips (edge.data.real) this eye measure also drops in head turns and misses some blinks: dlib68
  is the usable source.

Not here yet: per-ROI occlusion (a hand, hair or glare).

Angles: degrees. yaw > 0: the face turns towards the image's right (the nose moves right); pitch > 0: the
face tilts up; roll > 0: clockwise in the image (the image-right eye lower), the eye line's angle.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import butter

from edge.perception.face.align import apply, invert
from edge.perception.geometry import roi_boxes

# A generic adult face in mm, camera axes for a frontal face (x to the image's right, y down, z away from
# the camera; origin between the inner eye corners): the eye corners and the nose only, the points that
# move with the skull (the jaw drops the chin and the mouth corners by 10-30 mm when the mouth opens or
# smiles, which read as 30 degrees of pitch). Widths are adult anthropometric means (Farkas): outer canthi
# 90 mm apart, nose wings ~30. Heights are where dlib's points lie on a frontal face (its nose "tip" 30 is
# half-way down the nose, not the pronasale): the median of frontal frames of clm_cap12 and
# feat_wolfganglanger scaled to that 90 mm (anthropometric heights put pitch 20-30 degrees off there).
# Depths from the profile's means: nose tip 22 mm ahead of the inner canthi's plane, outer canthi 12
# behind it.
FACE_MODEL_MM: dict[int, tuple[float, float, float]] = {
    36: (-45.0, 1.0, 12.0), 39: (-18.0, 0.0, 0.0), 42: (18.0, 0.0, 0.0), 45: (45.0, 1.0, 12.0),  # canthi
    27: (0.0, -7.0, -6.0), 30: (0.0, 21.0, -22.0), 33: (0.0, 40.0, -12.0),  # sellion, nose, subnasale
    31: (-14.0, 37.0, -6.0), 35: (14.0, 37.0, -6.0),  # nose wings
}
PNP_POINTS = np.array(list(FACE_MODEL_MM))
PNP_MODEL = np.array(list(FACE_MODEL_MM.values()), np.float64)
PNP_MARGIN = 1.15  # the previous frame's pose is kept over the frontal start only if it reprojects this much
# better (a ratio of RMS px)
PNP_MAX_ERROR = 0.05  # RMS reprojection error, in outer eye-corner spacings, above which there is no pose:
# landmarks that fit the rigid model (frontal or turned) reproject to ~1.5 %; a hand on the face or a
# landmark fit gone astray gives 8-11 % with a pose 25 degrees off in yaw and pitch
DLIB_EYES = (np.arange(36, 42), np.arange(42, 48))  # 6 points each, corner, 2 upper lid, corner, 2 lower
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper / lower inner-lip points facing each other

LEVEL_WINDOW_S = 10.0  # the track's usual open level: a high quantile over this much of its past
LEVEL_QUANTILE = 80.0  # percent: eyes are open most of the time, blinks (< 5 % of frames) do not reach it
EAR_FLOOR = 0.18  # the open level is at least this EAR (a shut eye's EAR is ~0.1): a track born with its
# eyes shut does not take them for its open level
LIKENESS_FLOOR = 0.2  # the usual eye likeness (NCC) is at least this: below it the eye ROI holds no eye
LIKENESS_TAU_S = 2.0  # the eye template's time constant: ten blinks' length
SPEECH_BAND_HZ = (2.0, 8.0)  # syllable rate
SPEECH_WINDOW_S = 1.0
# Band RMS of mouth_open that reads as full speech activity: inter-ocular fractions for the lip gap
# (syllables open the lips by ~0.1-0.3 IOD), usual-level ratios for the appearance proxy.
SPEECH_FULL = {"dlib68": 0.05, "mesh": 0.05, "eyes": 0.15}
MOUTH_BAND = (0.36, 0.68, 0.64, 0.86)  # the lips' band on the aligned crop, fractions (x0, y0, x1, y1)


@dataclass(frozen=True)
class FaceState:
    """One track's state in one frame.

    eye_open: (image-left, image-right) openness, 1 = this track's usual open level, ~0 = shut
        (the left eye is the subject's right, as in edge.perception.geometry); dlib68: eye aspect ratio
        over its usual level; eyes: likeness to the usual eye over its usual level.
    mouth_open: dlib68: inner-lip gap over the inter-ocular distance (0 = lips together, ~0.5 wide open);
        eyes: the mouth band's vertical gradient relative to the track's usual level (1 = as usual).
    speech: 0..1, band energy of mouth_open at 2-8 Hz over the last ~1 s (SPEECH_FULL is 1).
    yaw, pitch, roll: degrees (module docstring); yaw and pitch are nan with pose_source "eye_line", all
        three with "pnp68" in a frame whose landmarks fit no rigid pose (head_pose).
    pose_source: "pnp68" (solvePnP on dlib points) or "eye_line" (roll from the eyes only).
    """

    eye_open: tuple[float, float]
    mouth_open: float
    speech: float
    yaw: float
    pitch: float
    roll: float
    pose_source: str


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """Eye aspect ratio of 6 dlib points (6, 2) px: mean lid gap of the two point pairs over the corner
    distance (unitless; ~0.3 open, under ~0.15 shut). 0 when the corners coincide."""
    p = np.asarray(eye, np.float64)
    width = np.hypot(*(p[3] - p[0]))
    if width < 1e-6:
        return 0.0
    return float((np.hypot(*(p[1] - p[5])) + np.hypot(*(p[2] - p[4]))) / (2.0 * width))


def inter_ocular(points68: np.ndarray) -> float:
    """Distance between the two eyes' point centres (px) of (68, 2) landmarks."""
    p = np.asarray(points68, np.float64)
    return float(np.hypot(*(p[DLIB_EYES[1]].mean(0) - p[DLIB_EYES[0]].mean(0))))


def mouth_gap(points68: np.ndarray) -> float:
    """Inner-lip gap of (68, 2) landmarks over the inter-ocular distance (unitless, 0 = lips together)."""
    p = np.asarray(points68, np.float64)
    gap = np.mean([np.hypot(*(p[a] - p[b])) for a, b in INNER_LIP_PAIRS])
    iod = inter_ocular(p)
    return float(gap / iod) if iod > 1e-6 else 0.0


def vertical_gradient(crop: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """RMS vertical grey gradient (grey levels / px, Sobel scaled to a unit step) inside `box`
    (x0, y0, x1, y1, end-exclusive crop px) of a grey crop: the horizontal edges of lids, iris and lips."""
    x0, y0, x1, y1 = box
    patch = crop[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1].astype(np.float32)
    if patch.shape[0] < 3 or patch.shape[1] < 3:
        return 0.0
    gy = cv2.Sobel(patch, cv2.CV_32F, 0, 1, ksize=3)[1:-1, 1:-1] / 8.0
    return float(np.sqrt(np.mean(gy * gy)))


class EyeLikeness:
    """How much an eye ROI looks like this track's usual open eye: the normalised cross-correlation
    (-1..1) of the ROI with a running mean of the ROI (time constant `tau_frames`, far longer than a
    blink), so a blink's lid, which the open eye's template does not show, lowers it for the blink's
    frames while slow changes (light, gaze, a new pose) are followed."""

    def __init__(self, box: tuple[int, int, int, int], tau_frames: float) -> None:
        self.box, self.rate = box, 1.0 / max(1.0, tau_frames)
        self.template: np.ndarray | None = None

    def update(self, crop: np.ndarray) -> float:
        """NCC of this frame's ROI of the (S, S) grey crop with the template (1.0 on the first frame)."""
        x0, y0, x1, y1 = self.box
        patch = crop[y0:y1, x0:x1].astype(np.float32)
        if self.template is None:
            self.template = patch
            return 1.0
        a, b = patch - patch.mean(), self.template - self.template.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        ncc = float((a * b).sum() / den) if den > 1e-6 else 0.0
        self.template += self.rate * (patch - self.template)
        return ncc


def roll_deg(left: np.ndarray, right: np.ndarray) -> float:
    """Angle of the eye line from the image-left to the image-right eye (frame px), degrees, > 0 clockwise
    in the image (y down)."""
    d = np.asarray(right, np.float64) - np.asarray(left, np.float64)
    return float(np.degrees(np.arctan2(d[1], d[0])))


def camera_matrix(width: int, height: int) -> np.ndarray:
    """A generic camera for a frame of width x height px: focal length = the width (a ~53 degree
    horizontal field of view, between a webcam's and a phone's), principal point at the centre."""
    f = float(width)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def euler_deg(rvec: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees, as the module docstring signs them, of a model -> camera rotation
    vector, decomposed as R = Rz(roll) Ry(-yaw) Rx(-pitch)."""
    R, _ = cv2.Rodrigues(np.asarray(rvec, np.float64))
    ry = np.degrees(np.arcsin(np.clip(-R[2, 0], -1.0, 1.0)))
    rx = np.degrees(np.arctan2(R[2, 1], R[2, 2]))
    rz = np.degrees(np.arctan2(R[1, 0], R[0, 0]))
    return float(-ry), float(-rx), float(rz)


def head_pose(points68: np.ndarray, frame_size: tuple[int, int],
              guess: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float, float, tuple | None]:
    """Head pose of (68, 2) frame-px landmarks in a frame of (width, height) px: (yaw, pitch, roll) degrees
    and (rvec, tvec) to pass back as the next frame's `guess`; nan angles and None if no pose is found.

    solvePnP (iterative) of PNP_POINTS against FACE_MODEL_MM with camera_matrix(), started from the guess
    and from a frontal face at the distance the eye corners' spacing gives. A face's rigid points are
    nearly flat, so a mirrored pose (yaw and pitch both flipped) fits them almost as well: started from the
    guess alone a track can lock onto it for seconds. The start whose solution reprojects better wins, and
    the frontal one unless the other is better by PNP_MARGIN. No pose when the winner's RMS error exceeds
    PNP_MAX_ERROR eye-corner spacings."""
    img = np.ascontiguousarray(np.asarray(points68, np.float64)[PNP_POINTS])
    K = camera_matrix(*frame_size)
    spacing = float(np.hypot(*(points68[45] - points68[36])))
    if spacing < 1e-6:
        return float("nan"), float("nan"), float("nan"), None
    z = K[0, 0] * (FACE_MODEL_MM[45][0] - FACE_MODEL_MM[36][0]) / spacing
    centre = img.mean(0)
    frontal = (np.zeros((3, 1)), np.array([[(centre[0] - K[0, 2]) * z / K[0, 0]],
                                           [(centre[1] - K[1, 2]) * z / K[1, 1]], [z]]))
    best, best_err = None, float("inf")
    for k, (r0, t0) in enumerate([frontal] + ([guess] if guess is not None else [])):
        ok, rvec, tvec = cv2.solvePnP(PNP_MODEL, img, K, None, r0.copy(), t0.copy(), True, cv2.SOLVEPNP_ITERATIVE)
        if not ok or tvec[2, 0] <= 0:
            continue
        proj, _ = cv2.projectPoints(PNP_MODEL, rvec, tvec, K, None)
        err = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, 1)))) * (PNP_MARGIN if k else 1.0)
        if err < best_err:
            best, best_err = (rvec, tvec), err
    if best is None or best_err > PNP_MAX_ERROR * spacing:
        return float("nan"), float("nan"), float("nan"), None
    return (*euler_deg(best[0]), best)


class RunningLevel:
    """A signal's usual high level: the LEVEL_QUANTILE-th percentile of its last `window` samples, at
    least `floor` (the signal's unit)."""

    def __init__(self, window: int, floor: float = 1e-6) -> None:
        self.values: deque[float] = deque(maxlen=max(1, window))
        self.floor = floor

    def update(self, x: float) -> float:
        """Add a sample; the level including it."""
        self.values.append(x)
        return max(float(np.percentile(self.values, LEVEL_QUANTILE)), self.floor)


class BandEnergy:
    """RMS of a signal band-passed to `band` Hz (2nd-order Butterworth, causal, one sample at a time) over
    its last `window_s` seconds, at `fps` samples per second; in the signal's unit. The band is clipped
    below Nyquist, so a slow camera still gets a filter."""

    def __init__(self, fps: float, band: tuple[float, float] = SPEECH_BAND_HZ,
                 window_s: float = SPEECH_WINDOW_S) -> None:
        hi = min(band[1], 0.45 * fps)
        self.sos = butter(2, [min(band[0], 0.5 * hi), hi], "bandpass", fs=fps, output="sos")
        self.z = np.zeros((len(self.sos), 2))
        self.sq: deque[float] = deque(maxlen=max(2, round(window_s * fps)))
        self.first: float | None = None

    def update(self, x: float) -> float:
        """Filter one sample; the band RMS over the window."""
        if self.first is None:  # start from the first value, not from 0: no step response at birth
            self.first = x
        y = x - self.first
        for s, (b0, b1, b2, _, a1, a2) in enumerate(self.sos):  # direct form II transposed biquads
            z = self.z[s]
            out = b0 * y + z[0]
            z[0], z[1] = b1 * y - a1 * out + z[1], b2 * y - a2 * out
            y = out
        self.sq.append(y * y)
        return float(np.sqrt(np.mean(self.sq)))


class FaceStateTracker:
    """The per-track state: usual open levels of both eyes (and of the mouth proxy), the speech filter
    and the last pose solution. `landmarks`: "dlib68", "mesh" (68 points in dlib's layout) or "eyes"; `fps`:
    the stream's frame rate."""

    def __init__(self, landmarks: str, fps: float, crop_size: int) -> None:
        self.landmarks = landmarks
        window = round(LEVEL_WINDOW_S * fps)
        # The mesh's lids (iris model) give open eyes an EAR of ~0.37 where dlib's give ~0.31: the same floor
        # is below both.
        floor = EAR_FLOOR if landmarks in ("dlib68", "mesh") else LIKENESS_FLOOR
        self.eye_levels = (RunningLevel(window, floor), RunningLevel(window, floor))
        self.mouth_level = RunningLevel(window, 1e-3)
        self.speech = BandEnergy(fps)
        self.speech_full = SPEECH_FULL[landmarks]
        boxes = roi_boxes(crop_size)
        self.eye_looks = tuple(EyeLikeness(boxes[k], LIKENESS_TAU_S * fps) for k in ("eye_left", "eye_right"))
        self.mouth_box = roi_boxes(crop_size, {"mouth": MOUTH_BAND})["mouth"]
        self.pose: tuple | None = None

    def update(self, crop: np.ndarray, points_crop: np.ndarray, M: np.ndarray,
               frame_size: tuple[int, int]) -> FaceState:
        """This frame's state from the aligned grey crop (S, S), this frame's landmarks in crop px ((68, 2)
        dlib points, or the (2, 2) eye centres with the eye cascade), M (2, 3) frame -> crop, and the
        frame's (width, height) px."""
        if len(points_crop) == 68:
            ears = [eye_aspect_ratio(points_crop[idx]) for idx in DLIB_EYES]
            mouth = mouth_gap(points_crop)
            frame_pts = apply(invert(M), points_crop)
            yaw, pitch, roll, self.pose = head_pose(frame_pts, frame_size, self.pose)
            source = "pnp68"
        else:
            ears = [max(0.0, e.update(crop)) for e in self.eye_looks]
            grad = vertical_gradient(crop, self.mouth_box)
            mouth = grad / self.mouth_level.update(grad)
            frame_eyes = apply(invert(M), points_crop)
            yaw, pitch, roll = float("nan"), float("nan"), roll_deg(frame_eyes[0], frame_eyes[1])
            source = "eye_line"
        eye_open = tuple(round(e / lv.update(e), 4) for e, lv in zip(ears, self.eye_levels, strict=True))
        speech = min(1.0, self.speech.update(mouth) / self.speech_full)
        return FaceState(eye_open, round(mouth, 4), round(speech, 4), yaw, pitch, roll, source)
