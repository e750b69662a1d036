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
from edge.data.faces import MARGIN, FaceTemplate, Subject, head_mask, load_faces, make_subject
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
KINDS = ("micro", "macro", "blink", "head")


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
        for entry in script or []:
            self._events.append(self._scripted(entry, rng))
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
        ts = round(float(s), 2)
        bgr = subj.bgr_at(ts)
        mask = head_mask(bgr.shape[0], ts)
        layer = np.dstack([bgr, (mask * 255 + 0.5).astype(np.uint8)])
        centre = np.array([slot_w * (i + 0.5), self.height * 0.5])
        return {"subject": subj, "s": s, "ts": ts, "layer": layer, "centre": centre, "traj": traj, "scale": scale}

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

    def _blink(self, face: int, t_on: float, rng: np.random.Generator, duration: float | None = None) -> _Event:
        duration = duration or rng.uniform(0.1, 0.35)
        xx, yy = aus.grid()
        fld = aus.BLINK_AMPLITUDE_PX * aus.au_field(aus.BLINK, xx, yy)
        info = {"label": None, "emotion": "blink", "casme2": None, "aus": [45],
                "amplitude_px": aus.BLINK_AMPLITUDE_PX}
        return _Event(face, "blink", t_on, t_on + 0.4 * duration, t_on + duration,
                      np.ascontiguousarray(fld.transpose(1, 2, 0)), info=info)

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

    def _scripted(self, entry: dict, rng: np.random.Generator) -> _Event:
        if not isinstance(entry, dict) or "t" not in entry or "kind" not in entry:
            raise UserError(f"script entry {entry!r} needs at least 't' and 'kind'")
        unknown = set(entry) - SCRIPT_KEYS
        if unknown:
            raise UserError(f"script entry has unknown key(s) {sorted(unknown)}; known: {sorted(SCRIPT_KEYS)}")
        kind, t, face = entry["kind"], float(entry["t"]), int(entry.get("face", 0))
        if kind not in KINDS:
            raise UserError(f"script kind {kind!r} unknown; known: {', '.join(KINDS)}")
        if not 0 <= face < len(self._faces):
            raise UserError(f"script face {face} out of range (video has {len(self._faces)} face(s))")
        if kind in ("micro", "macro"):
            amplitude = entry.get("amplitude_px")
            if "amplitude_frame_px" in entry:
                if amplitude is not None:
                    raise UserError("script entry: give amplitude_px (crop px) or amplitude_frame_px, not both")
                amplitude = float(entry["amplitude_frame_px"]) / self._faces[face]["s"]
            return self._expression(face, kind, t, rng, entry.get("label"), amplitude,
                                    entry.get("aus"), entry.get("duration_s"), entry.get("apex_s"))
        if kind == "blink":
            return self._blink(face, t, rng, entry.get("duration_s"))
        return self._head(face, t, rng, entry.get("amplitude_px"), entry.get("duration_s"))

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
        for rate, make in ((self.domain.blinks_per_min, self._blink), (self.domain.head_turns_per_min, self._head)):
            t = rng.exponential(60.0 / rate) if rate > 0 else np.inf
            while t < self.duration_s:
                ev = make(face, t, rng)
                if ev.t_off < self.duration_s:
                    out.append(ev)
                t = ev.t_off + rng.exponential(60.0 / rate)
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
        for e in self._events:
            if e.face == i and e.disp is not None and e.t_on < t < e.t_off:
                p = float(profile(t, e.t_on, e.t_apex, e.t_off))
                d = e.disp * p if d is None else d + e.disp * p
        if d is not None:  # inverse warp: the skin at c came from c - d(c)
            dd = cv2.remap(d, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            cx, cy = cx - dd[..., 0], cy - dd[..., 1]
        ts = fc["ts"]
        mx = ((cx + (MARGIN + 0.5)) * ts - 0.5).astype(np.float32)
        my = ((cy + (MARGIN + 0.5)) * ts - 0.5).astype(np.float32)
        patch = cv2.remap(fc["layer"], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        patch = patch.astype(np.float32)
        blur = float(np.mean(self.domain.blur_sigma))
        if blur > 0.25:
            patch = cv2.GaussianBlur(patch, (0, 0), blur)
        a = patch[..., 3:] * (1.0 / 255.0)
        roi = img[y0:y1, x0:x1].astype(np.float32)
        roi += a * (patch[..., :3] - roi)
        img[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def write_clip(video: SyntheticVideo, avi: str | Path, truth_json: str | Path | None = None,
               progress: bool = False) -> dict:
    """Write `video` as an MJPG .avi and its ground truth as JSON (default: same name, .json).

    Returns the ground-truth document: preset, seed, fps, n_frames, width, height, faces, domain, convention,
    intervals (SyntheticVideo.truth).
    """
    avi = Path(avi)
    truth_json = Path(truth_json) if truth_json else avi.with_suffix(".json")
    avi.parent.mkdir(parents=True, exist_ok=True)
    # OpenCV's own MJPEG writer at quality 100: the frames already carry the domain's camera compression,
    # and FFmpeg's MJPG (quality fixed near JPEG 75) would compress them a second time, which alone loses
    # most 1-px micro-expressions under sensor noise (measured: 5 of 5 spotted on the frames, 2 on the file).
    writer = cv2.VideoWriter(str(avi), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), video.fps,
                             (video.width, video.height))
    if not writer.isOpened():
        raise UserError(f"cannot open {avi} for writing an MJPG video")
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
    truth_json.write_text(json.dumps(doc, indent=1))
    return doc
