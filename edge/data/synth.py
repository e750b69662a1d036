"""Synthetic micro-expressions: training sample pairs, video clips with ground truth, and a live source.

Faces are real photographs (edge.data.faces) moved by FACS action-unit displacement fields
(edge.data.aus; sign convention there: skin at x moves to x + d(x), rendered as out(x) = in(x - d(x)))
with smooth onset -> apex -> offset profiles, under the nuisances of a capture domain (edge.data.domains).

Three outputs:
- `make_samples()`: onset/apex pairs of aligned grey 128-px crops (edge.perception.geometry layout) + metadata;
- `SyntheticVideo`: BGR frames of one or more faces with events, and `truth` (every interval);
- `write_clip()`: a SyntheticVideo written as MJPG .avi plus a JSON ground truth.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.data import aus, emotions
from edge.data.domains import Domain, get_domain
from edge.data.faces import HEAD_ELLIPSE, MARGIN, FaceTemplate, Subject, head_mask, load_faces, make_subject
from edge.errors import UserError
from edge.perception import geometry
from edge.progress import Progress, track

log = logging.getLogger(__name__)

CROP = geometry.CROP_SIZE
MICRO_DURATION_S = (0.2, 0.5)     # micro-expression total length (< 500 ms)
MICRO_RISE_S = (0.066, 0.26)      # onset -> apex (<= 260 ms)
MACRO_DURATION_S = (0.6, 4.0)     # macro: longer than any micro by more than a frame or two at 30 fps (a
# 0.5-s "macro" is a micro-expression by the MEGC definition, and no measurement tells them apart)
AMPLITUDE_PX = (0.3, 3.0)         # peak displacement, px of the 128-px crop
KINDS = ("micro", "macro", "blink", "head", "speech", "occluder")
# Real-face nuisances (their truth intervals are never expressions). Crop px are px of the 128-px crop.
SPEECH_DURATION_S = (1.0, 4.0)    # one talking burst
SYLLABLE_HZ = (3.0, 6.0)          # syllable rate of a burst (each syllable's period jittered +-30 %)
SPEECH_AMPLITUDE_PX = (2.0, 6.0)  # jaw/lower-lip opening per syllable (real talking: 3.5-5.7, docs/spotting.md)
SPEECH_NOD_PX = (0.2, 1.0)        # head nod on stressed syllables, crop px
BLINK_DRAG = (0.1, 0.3)           # brow/upper-cheek pull of a full blink, fraction of the lid travel
OCCLUDER_DURATION_S = (1.5, 4.0)  # slide in + rest + slide out
OCCLUDER_SLIDE_S = (0.25, 0.5)    # each slide
OCCLUDER_SHAPES = ("hand", "object")
# Occluder targets: the ROIs (edge.perception.geometry.ROIS, aus.CHEEK_ROIS) the object comes to rest on,
# and the side it comes from (image direction of its travel).
OCCLUDER_TARGETS: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "mouth": (("mouth_left", "mouth_right"), (0.0, -1.0)),
    "chin": (("chin",), (0.0, -1.0)),
    "nose": (("nose_left", "nose_right"), (0.0, -1.0)),
    "eye_left": (("eye_left",), (1.0, 0.0)),
    "eye_right": (("eye_right",), (-1.0, 0.0)),
    "eyes": (("eye_left", "eye_right"), (1.0, 0.0)),
    "cheek_left": (("cheek_left",), (1.0, 0.0)),
    "cheek_right": (("cheek_right",), (-1.0, 0.0)),
}


def profile(t: np.ndarray | float, onset: float, apex: float, offset: float) -> np.ndarray:
    """Intensity 0..1 at times t (s): raised-cosine rise onset->apex, raised-cosine fall apex->offset."""
    t = np.asarray(t, np.float64)
    up = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / max(apex - onset, 1e-9), 0, 1))
    down = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - apex) / max(offset - apex, 1e-9), 0, 1))
    return np.where(t <= apex, up, down)


def _pick_pattern(rng: np.random.Generator, class_set: str, label: str) -> emotions.Pattern:
    pats = emotions.patterns_for(class_set, label)
    return pats[rng.integers(len(pats))]


def resolve_label(label: str) -> tuple[str, str]:
    """(class_set, label) for a label of either class set or an emotion name (e.g. "sadness")."""
    for cs, names in emotions.CLASS_SETS.items():
        if label in names:
            return cs, label
    if any(p.emotion == label for p in emotions.PATTERNS):
        return "emotion", label
    known = sorted({*emotions.COMPOSITE_CLASSES, *emotions.CASME2_CLASSES, *(p.emotion for p in emotions.PATTERNS)})
    raise UserError(f"unknown expression label {label!r}; known: {', '.join(known)}")


def draw_amplitudes(rng: np.random.Generator, au_list: tuple[int, ...], peak_px: float,
                    asym: float = 0.0) -> dict[int, float]:
    """Per-AU amplitudes (px) whose combined field, tilted by `asym` (see field_for), peaks at `peak_px`:
    each AU gets a random share so the class cannot be read from one AU's size."""
    w = rng.uniform(0.5, 1.0, len(au_list))
    raw = dict(zip(au_list, w, strict=True))
    xx, yy = aus.grid()
    peak = float(np.hypot(*field_for(raw, xx, yy, asym)).max())
    return {a: float(v * peak_px / peak) for a, v in raw.items()}


def field_for(amps: dict[int, float], x: np.ndarray, y: np.ndarray, asym: float = 0.0) -> np.ndarray:
    """Combined field (2, ...) at crop points, tilted by `asym` (fraction, + = stronger on image right)."""
    d = aus.combo_field(amps, x, y)
    if asym:
        d *= 1.0 + asym * np.clip((np.asarray(x) - CROP / 2) / (CROP / 2), -1, 1)
    return d


# ------------------------------------------------------------------------------------------------ samples
def make_subjects(n: int, seed: int, templates: list[FaceTemplate] | None = None,
                  namespace: str = "") -> list[Subject]:
    """`n` synthetic people from the templates (round robin), ids "syn<seed><namespace>-<photo>-<k>".

    Different seeds or namespaces give different people (make_samples uses the preset as namespace, so a
    held-out domain also holds out its people).
    """
    templates = templates or load_faces()
    rng = np.random.default_rng([seed, 7, zlib.crc32(namespace.encode())])
    tag = f"syn{seed}{'-' + namespace if namespace else ''}"
    return [make_subject(templates[k % len(templates)], rng, f"{tag}-{templates[k % len(templates)].name}-{k:02d}")
            for k in range(n)]


def _render_grey(subject: Subject, scale: float, size: int, d_fn, rigid: np.ndarray) -> np.ndarray:
    """Aligned grey crop of side `size` (scale = size/128): out(x) = template(rigid(c) - d(c)), c crop px.

    `rigid` (2, 3) maps crop px to crop px (residual head motion / mis-alignment); `d_fn(cx, cy)` gives
    the AU field (2, ...) at crop points or None.
    """
    tpl = subject.grey_at(scale)
    r = (np.arange(size, dtype=np.float32) + 0.5) / scale - 0.5  # crop px of each output pixel
    cx, cy = np.meshgrid(r, r)
    sx = rigid[0, 0] * cx + rigid[0, 1] * cy + rigid[0, 2]
    sy = rigid[1, 0] * cx + rigid[1, 1] * cy + rigid[1, 2]
    d = d_fn(cx, cy)
    if d is not None:
        sx, sy = sx - d[0], sy - d[1]
    mx = ((sx + MARGIN + 0.5) * scale - 0.5).astype(np.float32)
    my = ((sy + MARGIN + 0.5) * scale - 0.5).astype(np.float32)
    return cv2.remap(tpl, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _rigid(rng: np.random.Generator, shift_px: float, rot_deg: float) -> np.ndarray:
    """A small similarity about the crop centre: shift ~ N(0, shift_px), rotation ~ N(0, rot_deg)."""
    a = math.radians(rng.normal(0, rot_deg))
    s = 1.0 + rng.normal(0, rot_deg * 0.002)
    c = (CROP - 1) / 2
    m = np.array([[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0]])
    m[:, 2] = [c, c] - m[:, :2] @ [c, c] + rng.normal(0, shift_px, 2)
    return m


def _camera(img: np.ndarray, rng: np.random.Generator, dom: Domain, blur: float, gain: float,
            gamma: float) -> np.ndarray:
    """Light gain, optics blur, camera gamma, sensor noise and compression on one grey or BGR image."""
    f = img.astype(np.float32)
    if blur > 0.25:
        f = cv2.GaussianBlur(f, (0, 0), blur)
    f = 255.0 * np.clip(f * (gain / 255.0), 0, 1) ** gamma
    if dom.noise_sigma > 0:
        f += rng.normal(0.0, dom.noise_sigma, f.shape).astype(np.float32)
    out = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    if dom.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(dom.jpeg_quality)])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def make_samples(n: int, preset: str = "lab200", seed: int = 0, class_set: str = "composite",
                 subjects: int = 12, faces_dir: str | Path | None = None, progress: bool = False,
                 ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Onset/apex training pairs of aligned grey crops, deterministic in `seed`.

    Each sample: a subject and a class (uniform over `class_set`: "composite" or "casme2"), one AU pattern
    of that class, a peak amplitude log-uniform in AMPLITUDE_PX (px of the 128 crop, before the subject's
    gain), a micro-expression profile sampled at the domain's frame rate (so the best frame may miss the
    true apex at 30 fps), and the domain's nuisances: face size (resampling), residual mis-alignment and
    light change between onset and apex, blur, gamma, sensor noise and compression.

    Returns:
        onset, apex: (n, 128, 128) uint8; meta: list of n dicts (label, label_index, emotion, aus,
        amplitudes {au: px}, amplitude_px (peak of the rendered field), intensity, subject, domain, fps).
    """
    if n < 1:
        raise UserError(f"number of samples must be >= 1, got {n}")
    classes = emotions.CLASS_SETS.get(class_set)
    if classes is None:
        raise UserError(f"unknown class set {class_set!r}; known: {', '.join(emotions.CLASS_SETS)}")
    dom = get_domain(preset)
    pool = make_subjects(subjects, seed, load_faces(faces_dir), namespace=preset)
    rng = np.random.default_rng([seed, 11])
    onset = np.empty((n, CROP, CROP), np.uint8)
    apex = np.empty_like(onset)
    meta: list[dict] = []
    xx, yy = aus.grid()
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    with Progress(n, f"synth samples ({preset})", enabled=progress) as bar:
        for i in range(n):
            subj = pool[rng.integers(len(pool))]
            label_index = int(rng.integers(len(classes)))
            pat = _pick_pattern(rng, class_set, classes[label_index])
            peak = float(np.exp(rng.uniform(*np.log(AMPLITUDE_PX)))) * subj.gain
            amps = draw_amplitudes(rng, pat.aus, peak, subj.asym)
            # The apex frame is the frame nearest the true apex: at low fps it can sit on the slope.
            rise = rng.uniform(*MICRO_RISE_S)
            dur = max(rng.uniform(*MICRO_DURATION_S), rise + 0.05)
            times = (rng.uniform(0, 1) + np.arange(int(dur * dom.fps) + 2)) / dom.fps
            intensity = float(profile(times, 0.0, rise, dur).max())
            amps = {a: v * intensity for a, v in amps.items()}
            asym = subj.asym

            iod = rng.uniform(*dom.iod_px)
            size = int(np.clip(round(CROP * iod / (geometry.EYE_DISTANCE * CROP)), 24, 256))
            scale = size / CROP
            jit = dom.jitter_px / scale  # frame px -> crop px
            r0 = ident if jit == 0 else _rigid(rng, jit * 0.5, jit * 0.3)
            r1 = ident if jit == 0 else _rigid(rng, jit * 0.5, jit * 0.3)
            a0 = _render_grey(subj, scale, size, lambda x, y: None, r0)
            a1 = _render_grey(subj, scale, size, lambda x, y, amps=amps, asym=asym: field_for(amps, x, y, asym), r1)
            blur = rng.uniform(*dom.blur_sigma)
            gamma = rng.uniform(*dom.gamma)
            g0 = rng.uniform(0.9, 1.1)
            g1 = g0 * (1.0 + rng.normal(0, dom.illumination * 0.3))
            a0, a1 = _camera(a0, rng, dom, blur, g0, gamma), _camera(a1, rng, dom, blur, g1, gamma)
            interp = cv2.INTER_AREA if size > CROP else cv2.INTER_LINEAR
            onset[i] = a0 if size == CROP else cv2.resize(a0, (CROP, CROP), interpolation=interp)
            apex[i] = a1 if size == CROP else cv2.resize(a1, (CROP, CROP), interpolation=interp)
            meta.append({
                "label": classes[label_index], "label_index": label_index, "class_set": class_set,
                "emotion": pat.emotion, "aus": list(pat.aus), "amplitudes": {str(a): v for a, v in amps.items()},
                "amplitude_px": float(np.hypot(*field_for(amps, xx, yy, asym)).max()),
                "intensity": intensity, "subject": subj.id, "domain": preset, "fps": dom.fps,
                "iod_px": float(iod),
            })
            bar.update(1)
    return onset, apex, meta


def save_samples(path: str | Path, onset: np.ndarray, apex: np.ndarray, meta: list[dict]) -> None:
    """Write samples as one .npz: arrays onset, apex, labels, and meta as a JSON string."""
    labels = np.array([m["label_index"] for m in meta], np.int64)
    np.savez_compressed(path, onset=onset, apex=apex, labels=labels, meta=json.dumps(meta))


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Read a file written by save_samples()."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sample file {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
        return z["onset"], z["apex"], json.loads(str(z["meta"]))
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path} is not a synthetic sample file ({e})") from None


# -------------------------------------------------------------------------------------------------- video
SCRIPT_KEYS = {"t", "kind", "label", "amplitude_px", "amplitude_frame_px", "face", "aus", "duration_s", "apex_s"}
# Keys only the nuisance kinds take (an unknown key for a kind is an error, not silently ignored).
KIND_KEYS = {"blink": {"drag"}, "speech": {"rate_hz", "nod_px"}, "occluder": {"target", "rest_s", "shape"}}


@dataclass
class _Event:
    face: int
    kind: str
    t_on: float
    t_apex: float
    t_off: float
    disp: np.ndarray | None = None             # (128, 128, 2) float32 crop px at intensity 1
    head: tuple[float, float, float] = (0.0, 0.0, 0.0)  # head turn: dx, dy (frame px), rotation (deg)
    info: dict = field(default_factory=dict)
    # Speech: (start, peak, end s, amplitude crop px) of each syllable (disp is then the 1-px field) and of
    # each stressed syllable's head nod (amplitude: crop px down).
    syllables: np.ndarray | None = None
    nods: np.ndarray | None = None
    drag: float = 0.0                          # blink: > 0 is a full closure that drags brows and cheeks
    sprite: np.ndarray | None = None           # occluder: BGRA float32 at SPRITE_SCALE px per crop px
    anchor: np.ndarray | None = None           # occluder: sprite px that rests on the target
    path: tuple[np.ndarray, np.ndarray, float, float] | None = None  # occluder: target, direction, distance, slide s
    wobble: tuple[float, float, float] | None = None  # occluder: rest tremor amplitude (crop px), Hz, phase

    def level(self, t: float) -> float:
        """Intensity at t: the onset -> apex -> offset profile, or the sum of the syllables' (crop px)."""
        if self.syllables is None:
            return float(profile(t, self.t_on, self.t_apex, self.t_off))
        return _bumps(self.syllables, t)


def _bumps(rows: np.ndarray, t: float) -> float:
    """Sum of amplitude * profile over (start, peak, end, amplitude) rows at time t."""
    live = rows[(rows[:, 0] < t) & (t < rows[:, 2])]
    return float(sum(a * profile(t, s0, s1, s2) for s0, s1, s2, a in live))


SPRITE_SCALE = 2.0  # occluder sprite px per crop px


class SyntheticVideo:
    """A live synthetic camera: BGR uint8 frames (height, width, 3) of `faces` people with scripted or
    random micro/macro-expressions, blinks and head movements, under the nuisances of `preset`.

    `truth` lists every interval as a dict: face, kind (micro/macro/blink/head), onset/apex/offset (frame
    index, frame k is at k / fps s), t_onset/t_apex/t_offset (s), label (3-class composite or None),
    emotion, casme2 (5-class or None), aus, amplitude_px (peak AU displacement in px of the 128 crop; for
    head turns the peak shift in frame px), amplitude_frame_px (the same peak in px of the video frame: what
    a camera sees; crop px times the face's frame px per crop px). `script` entries: {"t": onset s, "kind":
    ..., optional "label", "amplitude_px" or "amplitude_frame_px" (expressions: the peak in crop or frame
    px), "face", "aus", "duration_s", "apex_s" (onset->apex)}.
    Extra keyword args: `faces_dir` (user photos), `overrides` (Domain fields, e.g. {"noise_sigma": 0}),
    `random_events` (draw random events besides the script; default: only when there is no script).

    Real-face nuisances (truth kinds other than micro/macro are never expressions):
    - `blink` with "drag": true (a fraction drawn from BLINK_DRAG) or a fraction 0..1: a full blink. The lid
      closes over the whole eye (appearance: lid skin and a lash line cover the eye, not only a warp) and
      drags the brows and upper cheeks down by `drag` times the lid travel. Truth: kind "blink", + "drag".
    - "speech": a talking burst from `t` for "duration_s" (default SPEECH_DURATION_S) at "rate_hz"
      syllables a second (default SYLLABLE_HZ, each period jittered): every syllable drops the jaw and parts
      the lips (aus.SPEECH, aus.SPEECH_CORNERS: lower lip, mouth corners and chin down, corners in) by its
      own amplitude (SPEECH_AMPLITUDE_PX, or up to "amplitude_px"), a dark gap opens between the lips, and
      stressed syllables nod the head by "nod_px" crop px (0: no nod). Truth: kind "speech", apex at the
      widest syllable, amplitude_px that syllable's opening, + "syllables", "rate_hz".
    - "occluder": a hand-like skin-toned patch with fingers ("shape": "hand") or a plain textured object
      ("object") slides in over "target" (OCCLUDER_TARGETS), rests "rest_s" and slides out, within
      "duration_s" (default OCCLUDER_DURATION_S). Truth: kind "occluder" from the first to the last frame it
      covers part of the head, amplitude_px its travel (crop px), + "target", "shape", "rest_s".
    - Domain fields (overrides): `speech_per_min`, `occluders_per_min` (random events), `blink_drag` (random
      blinks become full blinks dragging by about that fraction), `restless` (continuous head sway, nods,
      rolls and leaning, 1 = a person talking), and `iod_px` (face size, e.g. (25, 30) for small faces).
    The nuisances draw from their own random streams, so a preset without them gives the same clip and
    truth for a seed as before they existed, and adding a nuisance to a script leaves its other events as
    they were.
    """

    def __init__(self, preset: str = "webcam30", seed: int = 0, duration_s: float = 30.0,
                 width: int = 640, height: int = 480, faces: int = 1,
                 script: list[dict] | None = None, fps: float | None = None, *,
                 faces_dir: str | Path | None = None, overrides: dict | None = None,
                 random_events: bool | None = None) -> None:
        if duration_s <= 0 or width < 64 or height < 64 or faces < 1:
            raise UserError(f"bad synthetic video size: duration {duration_s} s, {width}x{height}, {faces} face(s)")
        if fps is not None and not 1 <= fps <= 1000:
            raise UserError(f"fps must be in 1..1000, got {fps}")
        self.domain = get_domain(preset, **(overrides or {}))
        self.preset, self.seed, self.width, self.height = preset, seed, width, height
        self.fps = float(fps or self.domain.fps)
        self.n_frames = max(1, int(round(duration_s * self.fps)))
        self.duration_s = self.n_frames / self.fps
        rng = np.random.default_rng([seed, 23])
        self._rng_seed = seed
        subjects = make_subjects(faces, seed, load_faces(faces_dir))
        self._faces = [self._place(i, faces, subj, rng) for i, subj in enumerate(subjects)]
        self._events: list[_Event] = []
        for j, entry in enumerate(script or []):
            self._events.append(self._scripted(entry, rng, j))
        if random_events if random_events is not None else not script:
            for i in range(faces):
                self._events.extend(self._random_events(i, rng))
        self._events.sort(key=lambda e: (e.t_on, e.face))
        self.truth: list[dict] = [self._interval(e) for e in self._events]
        self._background = self._make_background(rng)
        # Sensor noise is drawn afresh for every frame (shot and read noise are independent between
        # exposures) into this buffer, int16 grey levels: OpenCV's generator fills 900k normals in ~5 ms.
        # (A bank of 3 noise frames at random shifts, used before, gave every lag-3 flow the same noise
        # pattern moved by a few px: a coherent texture motion no sensor makes, which the flow followed.)
        self._noise = np.empty((height, width, 3), np.int16) if self.domain.noise_sigma > 0 else None
        self._light = self._light_curve(rng)
        self._gamma = float(rng.uniform(*self.domain.gamma))

    # ---- set-up
    def _place(self, i: int, n: int, subj: Subject, rng: np.random.Generator) -> dict:
        """Base pose, slow drift/jitter/scale trajectories and the pre-scaled BGRA layer of face i."""
        dom = self.domain
        slot_w = self.width / n
        iod = rng.uniform(*dom.iod_px) * self.width / 640.0
        iod = min(iod, 0.28 * slot_w, 0.2 * self.height)
        s = iod / (geometry.EYE_DISTANCE * CROP)  # frame px per crop px
        t = np.arange(self.n_frames) / self.fps
        traj = np.zeros((3, self.n_frames))       # dx, dy (frame px), rotation (deg)
        for k in range(3):
            for _ in range(3):
                f = rng.uniform(0.05, 0.3)
                amp = dom.drift_px_s / (2 * np.pi * f) / 3 * (1.0 if k < 2 else 0.15)
                traj[k] += amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        traj[:2] += rng.normal(0, dom.jitter_px, (2, self.n_frames))
        scale = 1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.02, 0.1) * t + rng.uniform(0, 2 * np.pi))
        scale *= 1.0 if dom.drift_px_s > 0 else 0.0
        scale[scale == 0] = 1.0
        if dom.restless > 0:
            sway, lean = self._restless(i, t, s)
            traj += sway
            scale = scale * lean
        ts = round(float(s), 2)
        bgr = subj.bgr_at(ts)
        mask = head_mask(bgr.shape[0], ts)
        layer = np.dstack([bgr, (mask * 255 + 0.5).astype(np.uint8)])
        centre = np.array([slot_w * (i + 0.5), self.height * 0.5])
        return {"subject": subj, "s": s, "ts": ts, "layer": layer, "centre": centre, "traj": traj, "scale": scale,
                **_face_marks(subj)}

    def _restless(self, face: int, t: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
        """A head that is never still, at the domain's `restless` level (1 = a person talking): sway of ~3
        crop px at 0.1-0.5 Hz, bursts of 1-2.5 Hz nods of ~1 crop px, rolls of ~1.5 deg and leaning in and
        out by ~2 %. Returns the (3, T) dx, dy (frame px), roll (deg) to add and the (T,) scale factor."""
        lvl = self.domain.restless
        rng = np.random.default_rng([self._rng_seed, 47, face])
        out = np.zeros((3, t.size))
        for k, amp in ((0, 3.0 * s), (1, 2.0 * s), (2, 1.5)):
            for _ in range(3):
                out[k] += lvl * amp / 3 ** 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
        # Nods come in bursts: a slow random envelope (knots every 0.7 s) gates a 1-2.5 Hz oscillation.
        knots = np.arange(0.0, t[-1] + 1.4, 0.7)
        env = np.interp(t, knots, rng.uniform(0, 1, knots.size) ** 2)
        out[1] += lvl * 1.0 * s * env * np.sin(2 * np.pi * rng.uniform(1.0, 2.5) * t + rng.uniform(0, 2 * np.pi))
        lean = 1.0 + lvl * 0.02 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * np.pi))
        return out, lean

    def _expression(self, face: int, kind: str, t_on: float, rng: np.random.Generator, label: str | None = None,
                    amplitude: float | None = None, au_list: list[int] | None = None,
                    duration: float | None = None, rise: float | None = None) -> _Event:
        if kind == "micro":
            duration = duration or rng.uniform(*MICRO_DURATION_S)
            rise = rise or min(rng.uniform(*MICRO_RISE_S), 0.6 * duration)
        else:
            duration = duration or float(np.exp(rng.uniform(*np.log(MACRO_DURATION_S))))
            rise = rise or rng.uniform(0.2, 0.45) * duration
        if not 0 < rise < duration:
            raise UserError(f"onset->apex {rise} s must lie inside the duration {duration} s")
        if au_list:
            bad = [a for a in au_list if a not in aus.AUS]
            if bad:
                raise UserError(f"unknown action unit(s) {bad}; modelled: {sorted(aus.AUS)}")
            matching = [p for p in emotions.PATTERNS if set(p.aus) == set(au_list)]
            pat = matching[0] if matching else emotions.Pattern("others", tuple(au_list), None, "others")
        else:
            cs, lab = resolve_label(label) if label else ("composite", emotions.COMPOSITE_CLASSES[rng.integers(3)])
            pats = ([p for p in emotions.PATTERNS if p.emotion == lab] if cs == "emotion"
                    else emotions.patterns_for(cs, lab))
            pat = pats[rng.integers(len(pats))]
        subj = self._faces[face]["subject"]
        if amplitude is None:
            amplitude = float(np.exp(rng.uniform(*np.log(AMPLITUDE_PX)))) * subj.gain
            if kind == "macro":
                amplitude = float(rng.uniform(3.0, 6.0))
        amps = draw_amplitudes(rng, pat.aus, amplitude, subj.asym)
        xx, yy = aus.grid()
        fld = field_for(amps, xx, yy, subj.asym)
        info = {"label": pat.composite, "emotion": pat.emotion, "casme2": pat.casme2, "aus": list(pat.aus),
                "amplitude_px": round(float(np.hypot(*fld).max()), 4)}
        return _Event(face, kind, t_on, t_on + rise, t_on + duration, np.ascontiguousarray(fld.transpose(1, 2, 0)),
                      info=info)

    def _blink(self, face: int, t_on: float, rng: np.random.Generator, duration: float | None = None,
               drag: float = 0.0) -> _Event:
        duration = duration or rng.uniform(0.1, 0.35)
        xx, yy = aus.grid()
        fld = aus.BLINK_AMPLITUDE_PX * aus.au_field(aus.BLINK, xx, yy)
        info = {"label": None, "emotion": "blink", "casme2": None, "aus": [45],
                "amplitude_px": aus.BLINK_AMPLITUDE_PX}
        if drag > 0:  # a full blink: the lid's closing muscle pulls the brow and upper cheek along
            fld = fld + drag * aus.BLINK_AMPLITUDE_PX * aus.au_field(aus.BLINK_DRAG, xx, yy)
            info["drag"] = round(float(drag), 4)
        return _Event(face, "blink", t_on, t_on + 0.4 * duration, t_on + duration,
                      np.ascontiguousarray(fld.transpose(1, 2, 0)), info=info, drag=float(drag))

    def _speech(self, face: int, t_on: float, rng: np.random.Generator, duration: float | None = None,
                amplitude: float | None = None, rate: float | None = None, nod: float | None = None) -> _Event:
        """A talking burst: syllables at `rate` Hz (each period jittered +-30 %, pauses between some words),
        each opening the jaw by its own amplitude (crop px; the widest is `amplitude` when given)."""
        duration = duration or rng.uniform(*SPEECH_DURATION_S)
        rate = rate or rng.uniform(*SYLLABLE_HZ)
        rows: list[list[float]] = []
        t = t_on
        while not rows or t < t_on + duration:
            period = rng.uniform(0.7, 1.3) / rate
            rows.append([t, t + rng.uniform(0.35, 0.55) * period, t + period, rng.uniform(*SPEECH_AMPLITUDE_PX)])
            t += period
            if rng.random() < 0.12:  # a short pause between words, mouth closed
                t += rng.uniform(0.08, 0.25)
        syl = np.array(rows)
        if amplitude is not None:
            syl[:, 3] *= amplitude / syl[:, 3].max()
        nod = rng.uniform(*SPEECH_NOD_PX) if nod is None else nod
        stressed = syl[rng.random(len(syl)) < 0.3]
        nods = None
        if nod > 0 and len(stressed):
            span = 2.5 * (stressed[:, 2] - stressed[:, 0])  # a nod is slower than the syllable it stresses
            nods = np.stack([stressed[:, 0], stressed[:, 0] + 0.6 * span, stressed[:, 0] + span,
                             np.full(len(stressed), float(nod))], 1)
        xx, yy = aus.grid()
        fld = aus.combo_field({aus.SPEECH: 1.0, aus.SPEECH_CORNERS: 0.35}, xx, yy)
        fld /= float(np.hypot(*fld).max())  # 1 crop px at the peak: the syllables' amplitudes scale it
        i_max = int(syl[:, 3].argmax())
        t_off = float(syl[-1, 2])
        info = {"label": None, "emotion": "speech", "casme2": None, "aus": [25, 26],
                "amplitude_px": round(float(syl[i_max, 3]), 4), "syllables": len(syl),
                "rate_hz": round(len(syl) / (t_off - t_on), 3)}
        return _Event(face, "speech", t_on, float(syl[i_max, 1]), t_off, np.ascontiguousarray(fld.transpose(1, 2, 0)),
                      info=info, syllables=syl, nods=nods)

    def _occluder(self, face: int, t_on: float, rng: np.random.Generator, duration: float | None = None,
                  target: str | None = None, rest: float | None = None, shape: str | None = None) -> _Event:
        """A hand or object sliding from outside the head onto `target`, resting, and sliding back out."""
        if target is None:
            target = str(rng.choice(["mouth", "chin", "eye_left", "eye_right", "cheek_left", "cheek_right"]))
        if target not in OCCLUDER_TARGETS:
            raise UserError(f"occluder target {target!r} unknown; known: {', '.join(OCCLUDER_TARGETS)}")
        if shape is None:
            shape = "hand" if rng.random() < 0.75 else "object"
        if shape not in OCCLUDER_SHAPES:
            raise UserError(f"occluder shape {shape!r} unknown; known: {', '.join(OCCLUDER_SHAPES)}")
        slide = rng.uniform(*OCCLUDER_SLIDE_S)
        if rest is None:
            duration = duration or rng.uniform(*OCCLUDER_DURATION_S)
            slide = min(slide, 0.4 * duration)
            rest = duration - 2 * slide
        elif duration is None:
            duration = rest + 2 * slide
        else:
            slide = (duration - rest) / 2
        if rest < 0 or slide < 0.1:
            raise UserError(f"occluder: rest {rest:g} s leaves under 0.1 s to slide in and out of {duration:g} s")
        fc = self._faces[face]
        sprite, anchor, lead = (_hand_sprite if shape == "hand" else _object_sprite)(rng, fc["skin_bgr"])
        boxes = geometry.roi_boxes(CROP, {**geometry.ROIS, **aus.CHEEK_ROIS})
        rois, direction = OCCLUDER_TARGETS[target]
        corners = np.array([boxes[r] for r in rois], np.float64)
        goal = np.array([(corners[:, 0].min() + corners[:, 2].max()) / 2, (corners[:, 1].min() + corners[:, 3].max()) / 2])
        dirv = np.array(direction, np.float64)
        # Travel: from where its leading edge touches the head outline (so the truth interval is the frames
        # it covers) to resting on the target.
        distance = _exit_distance(goal, -dirv) + lead
        wobble = (float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.8, 2.0)), float(rng.uniform(0, 2 * np.pi)))
        info = {"label": None, "emotion": "occluder", "casme2": None, "aus": [], "amplitude_px": round(distance, 3),
                "target": target, "shape": shape, "rest_s": round(float(rest), 4)}
        return _Event(face, "occluder", t_on, t_on + duration / 2, t_on + duration, info=info, sprite=sprite,
                      anchor=anchor, path=(goal, dirv, distance, slide), wobble=wobble)

    def _head(self, face: int, t_on: float, rng: np.random.Generator, amplitude: float | None = None,
              duration: float | None = None) -> _Event:
        """A larger rigid head movement that returns (a distractor: moves the face, not the expression)."""
        duration = duration or rng.uniform(0.6, 1.5)
        s = self._faces[face]["s"]
        amplitude = amplitude or rng.uniform(8.0, 20.0) * s
        ang = rng.uniform(0, 2 * np.pi)
        head = (amplitude * math.cos(ang), amplitude * math.sin(ang), float(rng.uniform(-8, 8)))
        info = {"label": None, "emotion": "head", "casme2": None, "aus": [], "amplitude_px": round(float(amplitude), 3)}
        return _Event(face, "head", t_on, t_on + duration / 2, t_on + duration, head=head, info=info)

    def _scripted(self, entry: dict, rng: np.random.Generator, index: int = 0) -> _Event:
        if not isinstance(entry, dict) or "t" not in entry or "kind" not in entry:
            raise UserError(f"script entry {entry!r} needs at least 't' and 'kind'")
        known = SCRIPT_KEYS | KIND_KEYS.get(str(entry["kind"]), set())
        unknown = set(entry) - known
        if unknown:
            raise UserError(f"script entry has unknown key(s) {sorted(unknown)} for kind {entry['kind']!r}; "
                            f"known: {sorted(known)}")
        try:
            kind, t, face = entry["kind"], float(entry["t"]), int(entry.get("face", 0))
        except (TypeError, ValueError):
            raise UserError(f"script entry {entry!r}: 't' must be a number of seconds, 'face' an index") from None
        if kind not in KINDS:
            raise UserError(f"script kind {kind!r} unknown; known: {', '.join(KINDS)}")
        if not 0 <= face < len(self._faces):
            raise UserError(f"script face {face} out of range (video has {len(self._faces)} face(s))")
        if kind in ("blink", "speech", "occluder"):
            return self._nuisance(kind, face, t, entry, rng, np.random.default_rng([self._rng_seed, 43, index]))
        if kind in ("micro", "macro"):
            amplitude = entry.get("amplitude_px")
            if "amplitude_frame_px" in entry:
                if amplitude is not None:
                    raise UserError("script entry: give amplitude_px (crop px) or amplitude_frame_px, not both")
                amplitude = float(entry["amplitude_frame_px"]) / self._faces[face]["s"]
            return self._expression(face, kind, t, rng, entry.get("label"), amplitude,
                                    entry.get("aus"), entry.get("duration_s"), entry.get("apex_s"))
        return self._head(face, t, rng, entry.get("amplitude_px"), entry.get("duration_s"))

    def _nuisance(self, kind: str, face: int, t: float, entry: dict, rng: np.random.Generator,
                  own: np.random.Generator) -> _Event:
        """A scripted blink, speech or occluder. Blinks draw their duration from the shared stream as they
        always did; everything new draws from the entry's `own` stream (the class docstring says why)."""
        def number(key: str, lo: float, hi: float) -> float | None:
            v = entry.get(key)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise UserError(f"script {kind} entry: {key!r} must be a number in {lo:g}..{hi:g}, got {v!r}")
            return float(v)

        duration = number("duration_s", 0.02, 600.0)
        if kind == "blink":
            drag = entry.get("drag", 0.0)
            drag = float(own.uniform(*BLINK_DRAG)) if drag is True else 0.0 if drag is False else number("drag", 0, 1)
            return self._blink(face, t, rng, duration, drag or 0.0)
        if kind == "speech":
            amplitude = number("amplitude_px", 0.01, 30.0)
            if entry.get("amplitude_frame_px") is not None:
                if amplitude is not None:
                    raise UserError("script entry: give amplitude_px (crop px) or amplitude_frame_px, not both")
                amplitude = number("amplitude_frame_px", 0.01, 60.0) / self._faces[face]["s"]
            return self._speech(face, t, own, duration, amplitude, number("rate_hz", 0.5, 15.0),
                                number("nod_px", 0.0, 10.0))
        for key in ("target", "shape"):
            if key in entry and not isinstance(entry[key], str):
                raise UserError(f"script occluder entry: {key!r} must be a name, got {entry[key]!r}")
        return self._occluder(face, t, own, duration, entry.get("target"), number("rest_s", 0.0, 600.0),
                              entry.get("shape"))

    def _random_events(self, face: int, rng: np.random.Generator) -> list[_Event]:
        """Expressions one after another with 1-3 s gaps (3 micro : 1 macro); blinks and head turns as
        Poisson processes at the domain's rates, independent of the expressions."""
        out, t = [], rng.uniform(0.3, 1.5)
        while True:
            kind = "micro" if rng.random() < 0.75 else "macro"
            ev = self._expression(face, kind, t, rng)
            if ev.t_off >= self.duration_s:
                break
            out.append(ev)
            t = ev.t_off + rng.uniform(1.0, 3.0)
        own = np.random.default_rng([self._rng_seed, 53, face])  # the nuisances' own stream (class docstring)
        blink = self._blink
        if self.domain.blink_drag > 0:
            def blink(face: int, t: float, rng: np.random.Generator) -> _Event:
                drag = float(np.clip(self.domain.blink_drag * own.uniform(0.6, 1.4), 0.0, 1.0))
                return self._blink(face, t, rng, drag=drag)
        for rate, make in ((self.domain.blinks_per_min, blink), (self.domain.head_turns_per_min, self._head)):
            t = rng.exponential(60.0 / rate) if rate > 0 else np.inf
            while t < self.duration_s:
                ev = make(face, t, rng)
                if ev.t_off < self.duration_s:
                    out.append(ev)
                t = ev.t_off + rng.exponential(60.0 / rate)
        for rate, make in ((self.domain.speech_per_min, self._speech),
                           (self.domain.occluders_per_min, self._occluder)):
            t = own.exponential(60.0 / rate) if rate > 0 else np.inf
            while t < self.duration_s:
                ev = make(face, t, own)
                if ev.t_off < self.duration_s:
                    out.append(ev)
                t = ev.t_off + own.exponential(60.0 / rate)
        return out

    def _interval(self, e: _Event) -> dict:
        f = self.fps
        amp = e.info["amplitude_px"] * (1.0 if e.kind == "head" else self._faces[e.face]["s"])
        return {"face": e.face, "kind": e.kind, "onset": int(round(e.t_on * f)), "apex": int(round(e.t_apex * f)),
                "offset": int(round(e.t_off * f)), "t_onset": round(e.t_on, 6), "t_apex": round(e.t_apex, 6),
                "t_offset": round(e.t_off, 6), **e.info, "amplitude_frame_px": round(float(amp), 4)}

    def _make_background(self, rng: np.random.Generator) -> np.ndarray:
        """A static room: low-frequency coloured texture plus a light gradient, uint8 BGR."""
        low = rng.uniform(60, 190, (6, 8, 1)) + rng.uniform(-20, 20, (6, 8, 3))
        low = low.astype(np.float32)
        bg = cv2.resize(low, (self.width, self.height), interpolation=cv2.INTER_CUBIC)
        fine = cv2.resize(rng.normal(0, 12, (self.height // 4, self.width // 4, 3)).astype(np.float32),
                          (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        ramp = np.linspace(0.8, 1.1, self.width, dtype=np.float32)[None, :, None]
        return np.clip((bg + fine) * ramp + 0.5, 0, 255).astype(np.uint8)

    def _light_curve(self, rng: np.random.Generator) -> np.ndarray:
        t = np.arange(self.n_frames) / self.fps
        f = rng.uniform(0.02, 0.2)
        return 1.0 + self.domain.illumination * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))

    # ---- rendering
    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.n_frames):
            yield self.frame(k)

    def face_transform(self, face: int, k: int) -> np.ndarray:
        """(2, 3) float64 crop px -> frame px similarity of face `face` at frame k (the true alignment)."""
        fc = self._faces[face]
        t = k / self.fps
        dx, dy, rot = fc["traj"][:, k]
        for e in self._events:
            if e.face == face and e.kind == "head" and e.t_on < t < e.t_off:
                p = float(profile(t, e.t_on, e.t_apex, e.t_off))
                dx, dy, rot = dx + p * e.head[0], dy + p * e.head[1], rot + p * e.head[2]
            elif e.face == face and e.nods is not None and e.t_on < t:
                dy = dy + fc["s"] * _bumps(e.nods, t)
        s = fc["s"] * fc["scale"][k]
        a = math.radians(rot)
        m = np.array([[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0]])
        c = np.array([(CROP - 1) / 2, (CROP - 1) / 2])
        m[:, 2] = fc["centre"] + [dx, dy] - m[:, :2] @ c
        return m

    def frame(self, k: int) -> np.ndarray:
        """Frame k (0 <= k < n_frames), BGR uint8 (height, width, 3); deterministic in (seed, k)."""
        if not 0 <= k < self.n_frames:
            raise IndexError(f"frame {k} outside 0..{self.n_frames - 1}")
        t = k / self.fps
        img = self._background.copy()
        for i, fc in enumerate(self._faces):
            self._draw_face(img, i, fc, k, t)
        for e in self._events:
            if e.kind == "occluder" and e.t_on < t < e.t_off:
                self._draw_occluder(img, e, k, t)
        if self._noise is not None:
            cv2.setRNGSeed(int(np.random.default_rng([self._rng_seed, 31, k]).integers(2**31)))
            sigma = self.domain.noise_sigma
            cv2.randn(self._noise, (0.0, 0.0, 0.0), (sigma, sigma, sigma))  # one Scalar entry per channel
            img = cv2.add(img, self._noise, dtype=cv2.CV_8U)
        # Light level and camera gamma in one lookup table: out = 255 * (light * v / 255) ** gamma.
        lut = 255.0 * np.clip(self._light[k] * np.arange(256) / 255.0, 0, 1) ** self._gamma
        out = cv2.LUT(img, (lut + 0.5).astype(np.uint8))
        if self.domain.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(self.domain.jpeg_quality)])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out

    def _draw_face(self, img: np.ndarray, i: int, fc: dict, k: int, t: float) -> None:
        m = self.face_transform(i, k)
        # Frame box of the head region (crop px -8..136 x -30..146 covers HEAD_ELLIPSE).
        corners = np.array([[-8, -30, 1], [136, -30, 1], [-8, 146, 1], [136, 146, 1]], np.float64) @ m.T
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.width), min(y1, self.height)
        if x1 <= x0 or y1 <= y0:
            return
        inv = cv2.invertAffineTransform(m).astype(np.float32)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        cx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        cy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        d = None
        looks = []  # events that change the face's appearance, not only its shape
        for e in self._events:
            if e.face == i and e.disp is not None and e.t_on < t < e.t_off:
                p = e.level(t)
                d = e.disp * p if d is None else d + e.disp * p
                if e.kind == "speech" or e.drag > 0:
                    looks.append((e, p))
        c0 = (cx, cy) if looks else None  # where each frame pixel is on the crop, before the skin moved
        if d is not None:  # inverse warp: the skin at c came from c - d(c)
            dd = cv2.remap(d, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            cx, cy = cx - dd[..., 0], cy - dd[..., 1]
        ts = fc["ts"]
        mx = ((cx + (MARGIN + 0.5)) * ts - 0.5).astype(np.float32)
        my = ((cy + (MARGIN + 0.5)) * ts - 0.5).astype(np.float32)
        patch = cv2.remap(fc["layer"], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        patch = patch.astype(np.float32)
        if c0 is not None:
            for e, p in looks:
                (_mouth_gap if e.kind == "speech" else _closed_lids)(patch, fc, *c0, p)
        blur = float(np.mean(self.domain.blur_sigma))
        if blur > 0.25:
            patch = cv2.GaussianBlur(patch, (0, 0), blur)
        a = patch[..., 3:] * (1.0 / 255.0)
        roi = img[y0:y1, x0:x1].astype(np.float32)
        roi += a * (patch[..., :3] - roi)
        img[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)

    def _draw_occluder(self, img: np.ndarray, e: _Event, k: int, t: float) -> None:
        """Composite occluder `e` over the frame: its sprite placed on the crop (it moves with the face it
        covers, like a hand held against it), along its slide, then through the face's crop -> frame map."""
        goal, dirv, distance, slide = e.path
        amp, hz, phase = e.wobble
        ramp = min(1.0, (t - e.t_on) / slide, (e.t_off - t) / slide)
        reach = 0.5 - 0.5 * math.cos(math.pi * max(ramp, 0.0))  # 0 at the head outline, 1 resting
        pos = goal - (1.0 - reach) * distance * dirv + amp * math.sin(2 * np.pi * hz * t + phase) * np.array([0.6, 0.8])
        rot = np.array([[-dirv[1], -dirv[0]], [dirv[0], -dirv[1]]])  # the sprite's up (fingers) along the travel
        a = rot / SPRITE_SCALE                                         # sprite px -> crop px
        b = pos - a @ e.anchor
        m = self.face_transform(e.face, k)
        full = np.hstack([m[:, :2] @ a, (m[:, :2] @ b + m[:, 2])[:, None]])  # sprite px -> frame px
        h, w = e.sprite.shape[:2]
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ full.T
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [self.width, self.height])
        if x1 <= x0 or y1 <= y0:
            return
        full[:, 2] -= [x0, y0]
        patch = cv2.warpAffine(e.sprite, full, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        blur = float(np.mean(self.domain.blur_sigma))
        if blur > 0.25:
            patch = cv2.GaussianBlur(patch, (0, 0), blur)
        alpha = patch[..., 3:]
        roi = img[y0:y1, x0:x1].astype(np.float32)
        roi += alpha * (patch[..., :3] - roi)
        img[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ nuisance appearance
def _face_marks(subj: Subject) -> dict:
    """Where this person's lip line and eye centres lie on the crop (the identity warp moves them a few px
    off the canonical layout) and their skin colour: what open mouths, closed lids and hands are drawn
    with. Lip line: the strongest horizontal edge near the canonical one (lips meeting, or the teeth's
    edge in a smile); eyes: the centroid of the darkest pixels (iris, lashes) near each canonical eye."""
    sc, grey = subj.scale, subj.grey.astype(np.float32)

    def px(c: float) -> int:  # crop px -> template px
        return int(round((c + MARGIN + 0.5) * sc - 0.5))

    iod = geometry.EYE_DISTANCE * CROP
    eyes0 = geometry.eye_points(CROP)
    lip0 = float(eyes0[:, 1].mean()) + 1.05 * iod
    rows = grey[px(lip0 - 5):px(lip0 + 5) + 1, px(CROP / 2 - 8):px(CROP / 2 + 8)].mean(1)
    lip_y = lip0 - 5 + (int(np.diff(rows).argmin()) + 0.5) / sc  # going down, the steepest fall into the gap
    eyes = []
    for ex, ey in eyes0:
        win = grey[px(ey - 4):px(ey + 4), px(ex - 7):px(ex + 7)]
        dark = win <= np.quantile(win, 0.12)
        yy, xx = np.nonzero(dark)
        eyes.append((ex - 7 + xx.mean() / sc, ey - 4 + yy.mean() / sc))
    def colour(y0: float, y1: float) -> np.ndarray:
        box = subj.image[px(y0):px(y1), px(eyes0[0, 0] - 4):px(eyes0[0, 0] + 4)]
        return np.median(box.reshape(-1, 3), 0).astype(np.float32)

    skin = colour(eyes0[0, 1] + 12, eyes0[0, 1] + 16)  # upper cheek
    lid = 0.5 * colour(eyes0[0, 1] - 8, eyes0[0, 1] - 6) + 0.5 * 0.85 * skin  # between the eye and the brow
    return {"lip_y": float(lip_y), "lip_shift": float(lip_y - lip0), "eyes": np.array(eyes, np.float32),
            "skin_bgr": skin, "lid_bgr": lid}


def _mouth_gap(patch: np.ndarray, fc: dict, cx: np.ndarray, cy: np.ndarray, level: float) -> None:
    """Darken the gap between the lips of a speech field at `level` crop px (in place, BGR float32): a warp
    alone stretches the lips' skin, where a real open mouth shows the dark inside. The gap runs from where
    the upper lip's edge has moved to where the lower lip's has (the field just above and below the lip
    line), so it is widest mid-mouth and closes towards the corners."""
    lip = fc["lip_y"]
    iod = geometry.EYE_DISTANCE * CROP
    near = np.abs(cy - lip) < 0.5 * iod
    if not near.any():
        return
    x, y = cx[near], cy[near]
    # The lips' edges move with the field's upper- and lower-lip patches (aus.SPEECH, 0.94 and 1.16 eye
    # distances under the eyes), shifted with this person's lip line.
    eye_y = float(geometry.eye_points(CROP)[:, 1].mean())
    y_up, y_lo = eye_y + 0.94 * iod + fc["lip_shift"], eye_y + 1.16 * iod + fc["lip_shift"]
    f_up = aus.combo_field({aus.SPEECH: 1.0, aus.SPEECH_CORNERS: 0.35}, x, np.full_like(x, y_up))
    f_lo = aus.combo_field({aus.SPEECH: 1.0, aus.SPEECH_CORNERS: 0.35}, x, np.full_like(x, y_lo))
    norm = level / _SPEECH_PEAK
    top, bot = lip + norm * f_up[1], lip + norm * f_lo[1]
    alpha = (np.clip((y - top) / 0.6 + 0.5, 0, 1) * np.clip((bot - y) / 0.6 + 0.5, 0, 1)
             * np.clip((bot - top) / 1.5, 0, 1) * np.clip((0.38 * iod - np.abs(x - CROP / 2)) / 2.0, 0, 1))
    inside = np.array([38.0, 30.0, 62.0], np.float32)  # dark red-brown mouth cavity, BGR
    sub = patch[near]
    sub[:, :3] += 0.9 * alpha[:, None] * (inside - sub[:, :3])
    patch[near] = sub


_SPEECH_PEAK = float(np.hypot(*aus.combo_field({aus.SPEECH: 1.0, aus.SPEECH_CORNERS: 0.35}, *aus.grid())).max())


def _closed_lids(patch: np.ndarray, fc: dict, cx: np.ndarray, cy: np.ndarray, level: float) -> None:
    """Cover each eye with its upper lid down to the closure of a full blink at `level` (0..1 of the blink
    profile; fully shut over its top fifth), with a dark lash line along the lid's edge: the eye region
    goes flat and darker, as a camera sees a real blink (in place, BGR float32)."""
    closure = min(1.0, 1.25 * level)
    if closure <= 0:
        return
    iod = geometry.EYE_DISTANCE * CROP
    aw, ah = 0.26 * iod, 3.6  # crop px: half the eye's width and height, with a margin
    for ex, ey in fc["eyes"]:
        near = (np.abs(cx - ex) < aw + 2) & (np.abs(cy - ey) < ah + 2)
        if not near.any():
            continue
        x, y = cx[near], cy[near]
        bow = np.clip(1.0 - ((x - ex) / aw) ** 2, 0, 1)  # almond: the fissure's arcs meet at the corners
        top, bottom = ey - ah * bow, ey + 0.8 * ah * bow
        edge = top + closure * (bottom - top)            # the lid's margin follows the eye's curve down
        inside = np.clip((y - top) / 0.8 + 0.8, 0, 1) * np.clip((aw - np.abs(x - ex)) / 1.5, 0, 1)
        cover = inside * np.clip((edge - y) / 0.7 + 0.5, 0, 1)
        shade = 0.8 + 0.2 * np.clip((edge - y) / (2 * ah), 0, 1)  # the lid darker towards its margin
        lash = inside * np.clip(1.0 - np.abs(y - edge) / 0.9, 0, 1) * min(1.0, 4 * closure)
        sub = patch[near]
        sub[:, :3] += cover[:, None] * (fc["lid_bgr"] * shade[:, None] - sub[:, :3])
        sub[:, :3] *= 1.0 - 0.6 * lash[:, None]
        patch[near] = sub


def _exit_distance(p: np.ndarray, d: np.ndarray) -> float:
    """How far from crop point `p` (inside the head) along unit direction `d` the head outline is."""
    cx, cy, ax, ay = HEAD_ELLIPSE
    u = np.array([(p[0] - cx) / ax, (p[1] - cy) / ay])
    v = np.array([d[0] / ax, d[1] / ay])
    a, b, c = v @ v, 2 * u @ v, u @ u - 1.0
    return float((-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a))


def _texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 surface: `colour` with broad shading and fine grain (so optical flow can follow
    it as it would a real hand or object), lit a little from above."""
    broad = cv2.resize(rng.uniform(0.92, 1.08, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.normal(0, 7.0, (h, w)).astype(np.float32), (0, 0), 0.9)
    light = np.linspace(1.06, 0.9, h, dtype=np.float32)[:, None]
    return colour[None, None, :] * (broad * light)[..., None] + grain[..., None]


def _hand_sprite(rng: np.random.Generator, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A hand, fingers up, BGRA float32 (alpha 0..1) at SPRITE_SCALE px per crop px, about a real hand's
    size against the face (palm ~1.1 eye distances wide); the anchor (sprite px) is mid-finger, where it
    rests on its target; and the reach (crop px) from the anchor to the fingertips."""
    sc, iod = SPRITE_SCALE, geometry.EYE_DISTANCE * CROP
    palm_w = rng.uniform(1.0, 1.2) * iod * sc
    palm_h = 0.85 * palm_w
    finger = rng.uniform(0.7, 0.85) * iod * sc
    fw = palm_w / 4.3
    h, w = int(palm_h + 1.15 * finger + 12), int(1.5 * palm_w + 12)
    mid, top = w / 2, 1.15 * finger + 6
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int(mid), int(top + palm_h / 2)), (int(palm_w / 2), int(palm_h / 2 * 1.05)), 0, 0, 360, 1.0, -1,
                cv2.LINE_AA)
    lengths = np.array([0.85, 1.0, 0.95, 0.75])[:: 1 if rng.random() < 0.5 else -1] * finger
    tips = []
    for j, length in enumerate(lengths):
        x = mid + (j - 1.5) * 1.02 * fw
        tip = (x + rng.normal(0, 0.05) * length, top + fw / 2 - length)
        tips.append(tip)
        cv2.line(mask, (int(x), int(top + fw)), (int(tip[0]), int(tip[1])), 1.0, max(1, int(0.9 * fw)), cv2.LINE_AA)
    side = 1 if lengths[0] < lengths[-1] else -1  # the thumb on the index finger's side
    cv2.line(mask, (int(mid + side * 0.42 * palm_w), int(top + 0.6 * palm_h)),
             (int(mid + side * 0.7 * palm_w), int(top + 0.05 * palm_h)), 1.0, max(1, int(1.05 * fw)), cv2.LINE_AA)
    tone = skin * rng.uniform(0.85, 1.05) * rng.uniform(0.96, 1.04, 3)
    bgr = _texture(rng, h, w, tone.astype(np.float32))
    # Rounded fingers: darker towards their sides (and in the gaps between them); creases across the
    # fingers at the knuckles.
    inner = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    bgr *= (0.72 + 0.28 * np.clip(inner / (0.3 * fw), 0, 1))[..., None]
    for frac in (0.35, 0.7):
        y = int(top - frac * finger * 0.9)
        bgr[max(y - 1, 0):y + 1] *= 0.9
    alpha = cv2.GaussianBlur(mask, (0, 0), 0.8)
    anchor = np.array([mid, top - 0.45 * finger])
    reach = (anchor[1] - min(t[1] for t in tips)) / sc
    return np.dstack([bgr, np.clip(alpha, 0, 1)]).astype(np.float32), anchor, float(reach)


def _object_sprite(rng: np.random.Generator, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A plain textured object (a phone, a mug, a sheet) as a rounded rectangle, like _hand_sprite."""
    sc, iod = SPRITE_SCALE, geometry.EYE_DISTANCE * CROP
    w, h = int(rng.uniform(0.8, 1.2) * iod * sc), int(rng.uniform(1.3, 1.8) * iod * sc)
    r = int(0.15 * w)
    mask = np.zeros((h + 8, w + 8), np.float32)
    cv2.rectangle(mask, (4 + r, 4), (4 + w - r, 4 + h), 1.0, -1)
    cv2.rectangle(mask, (4, 4 + r), (4 + w, 4 + h - r), 1.0, -1)
    for x, y in ((4 + r, 4 + r), (4 + w - r, 4 + r), (4 + r, 4 + h - r), (4 + w - r, 4 + h - r)):
        cv2.circle(mask, (x, y), r, 1.0, -1, cv2.LINE_AA)
    colour = rng.uniform(30, 200, 3).astype(np.float32)
    bgr = _texture(rng, h + 8, w + 8, colour)
    label = rng.uniform(0.7, 1.3)  # a printed band across it
    y0 = int(rng.uniform(0.3, 0.6) * h)
    bgr[y0:y0 + int(0.15 * h)] *= label
    alpha = cv2.GaussianBlur(mask, (0, 0), 0.8)
    anchor = np.array([4 + w / 2, 4 + 0.3 * h])
    return np.dstack([bgr, np.clip(alpha, 0, 1)]).astype(np.float32), anchor, float((anchor[1] - 4) / sc)


# write_clip codecs: name -> (OpenCV backend, FourCC). MJPG is OpenCV's own writer; the others go through
# FFmpeg at its default rate control, as a phone or a streaming camera would deliver them.
CODECS = {"MJPG": (cv2.CAP_OPENCV_MJPEG, "MJPG"), "mp4v": (cv2.CAP_FFMPEG, "mp4v"), "h264": (cv2.CAP_FFMPEG, "avc1")}


def _open_writer(path: Path, codec: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    if codec not in CODECS:
        raise UserError(f"unknown clip codec {codec!r}; known: {', '.join(CODECS)}")
    api, fourcc = CODECS[codec]
    return cv2.VideoWriter(str(path), api, cv2.VideoWriter_fourcc(*fourcc), fps, size)


def can_write(codec: str, folder: str | Path) -> bool:
    """Whether this OpenCV build can write `codec` (an H.264 encoder is often missing from its FFmpeg):
    tries a tiny file in `folder`."""
    probe = Path(folder) / f".probe-{codec}.mp4"
    writer = _open_writer(probe, codec, 30.0, (64, 64))
    ok = writer.isOpened()
    writer.release()
    probe.unlink(missing_ok=True)
    return ok


def write_clip(video: SyntheticVideo, avi: str | Path, truth_json: str | Path | None = None,
               progress: bool = False, codec: str = "MJPG") -> dict:
    """Write `video` as a video file (default: MJPG .avi; `codec` one of CODECS, mp4v and h264 best in an
    .mp4) and its ground truth as JSON (default: same name, .json).

    Returns the ground-truth document: preset, seed, fps, n_frames, width, height, faces, domain, convention,
    intervals (SyntheticVideo.truth), and codec where it is not MJPG.
    """
    avi = Path(avi)
    truth_json = Path(truth_json) if truth_json else avi.with_suffix(".json")
    avi.parent.mkdir(parents=True, exist_ok=True)
    # OpenCV's own MJPEG writer at quality 100: the frames already carry the domain's camera compression,
    # and FFmpeg's MJPG (quality fixed near JPEG 75) would compress them a second time, which alone loses
    # most 1-px micro-expressions under sensor noise (measured: 5 of 5 spotted on the frames, 2 on the file).
    writer = _open_writer(avi, codec, video.fps, (video.width, video.height))
    if not writer.isOpened():
        if codec == "h264":
            raise UserError(f"cannot write {avi}: this OpenCV build's FFmpeg has no H.264 encoder; use MJPG or mp4v")
        raise UserError(f"cannot open {avi} for writing a {codec} video")
    if codec == "MJPG":
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    try:
        for frame in track(video, f"clip {avi.name}", total=len(video), enabled=progress):
            writer.write(frame)
    finally:
        writer.release()
    doc = {"video": avi.name, "preset": video.preset, "seed": video.seed, "fps": video.fps,
           "n_frames": video.n_frames, "width": video.width, "height": video.height, "faces": len(video._faces),
           "subjects": [f["subject"].id for f in video._faces], "domain": video.domain.to_dict(),
           "convention": "frame k is at k/fps s; onset/apex/offset are frame indices; amplitude_px is in px "
                         "of the 128-px aligned crop (head: frame px), amplitude_frame_px in px of the video frame",
           "intervals": video.truth}
    if codec != "MJPG":
        doc["codec"] = codec
    truth_json.write_text(json.dumps(doc, indent=1))
    return doc
