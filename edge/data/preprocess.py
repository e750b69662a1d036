"""Model input from an onset/apex pair of aligned face crops: THE preprocessing of training AND the live
classify node, so what the network sees when deployed is what it saw in training.

    spec = PreprocessSpec.from_meta(model_meta)           # or PreprocessSpec() for the defaults
    x = model_input(onset_crop, apex_crop, spec)          # (C, size, size) float32
    xs = precompute(onsets, apexes, spec, cache_dir=...)  # (N, C, size, size), parallel, cached on disk

Steps, all at the crop scale (the canonical aligned crop of edge.perception.geometry, 128 px) until the resize:

1. optical flow onset -> apex with the spec's backend and parameters (edge.perception.flow; u, v in crop px;
   prev(x, y) ~= next(x + u, y + v));
2. global motion: the median flow over the crop is subtracted (`global_motion="median"`), so a residual
   mis-alignment of a fraction of a pixel (which the face node's stabilisation leaves, and which is as
   large as a micro-expression) does not read as facial motion;
3. optical strain magnitude sqrt(u_x^2 + v_y^2 + (u_y + v_x)^2 / 2) (edge.perception.flow.optical_strain);
4. resize to `size` (vectors rescaled, so u, v stay in px of the resized map; strain is dimensionless);
5. normalisation (`norm`):
   - "robust" (default): u, v divided by the sample's 99th-percentile motion magnitude and strain by its
     99th-percentile strain, each floored (`floor_px`, `floor_strain`) so a still face does not blow
     its noise up to full scale. Amplitude differs between people, cameras and intensities far more
     than the pattern does, so the net sees where and which way skin moves, not how far.
   - "fixed": u, v divided by `floor_px` * 10 and strain by `floor_strain` * 10 (keeps amplitude).
   - "minmax": each channel mapped to [0, 1] per sample (the MER literature's choice, MEB / STSTNet).
   Normalised values are clipped to +-`clip`.
6. channels in the spec's order: "u", "v", "strain", optionally "apex" (apex grey, (g / 255 - 0.5) * 2).

The spec travels in the model file's metadata (`spec.to_meta()` gives the "flow", "preprocessing" and
"input" entries), so a model trained with one backend is run with the same one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.perception.flow import create_flow, optical_strain, resize_flow
from edge.progress import Progress

log = logging.getLogger(__name__)

CHANNELS = ("u", "v", "strain", "apex")
NORMS = ("robust", "fixed", "minmax")
GLOBAL_MOTION = ("median", "none")
VERSION = 1  # bump when the computation changes: it is part of every cache key


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that decides a model input. Sizes in px; `flow_params` are the backend's own."""

    backend: str = "dis"
    flow_params: Mapping[str, Any] = field(default_factory=dict)
    size: int = 64
    channels: tuple[str, ...] = ("u", "v", "strain")
    global_motion: str = "median"
    norm: str = "robust"
    floor_px: float = 0.1          # robust-norm floor for the motion scale, px at `size`
    floor_strain: float = 0.02     # robust-norm floor for the strain scale (dimensionless)
    clip: float = 4.0

    def __post_init__(self) -> None:
        if self.backend == "auto":
            raise UserError("preprocessing needs a concrete flow backend (the model file records it), not 'auto'")
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad or not self.channels:
            raise UserError(f"unknown input channel(s) {bad}; choose from {', '.join(CHANNELS)}")
        if self.norm not in NORMS:
            raise UserError(f"unknown normalisation {self.norm!r}; choose from {', '.join(NORMS)}")
        if self.global_motion not in GLOBAL_MOTION:
            raise UserError(f"unknown global_motion {self.global_motion!r}; choose from {', '.join(GLOBAL_MOTION)}")
        if self.size < 8:
            raise UserError(f"input size must be >= 8 px, got {self.size}")
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "flow_params", dict(self.flow_params))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"], d["flow_params"] = list(self.channels), dict(self.flow_params)
        return d

    def key(self) -> str:
        """Stable text of the spec (with the code version) for cache keys."""
        return json.dumps({"v": VERSION, **self.to_dict()}, sort_keys=True, default=str)

    def resolved(self) -> PreprocessSpec:
        """The same spec with the backend's effective parameters filled in (what a model file records)."""
        flow = create_flow(self.backend, **self.flow_params)
        return PreprocessSpec(**{**self.to_dict(), "flow_params": dict(flow.params)})

    def to_meta(self) -> dict[str, Any]:
        """The model-file metadata entries {"flow", "preprocessing", "input"} for this spec."""
        pre = {k: v for k, v in self.to_dict().items() if k not in ("backend", "flow_params", "size", "channels")}
        return {"flow": {"backend": self.backend, "params": dict(self.flow_params)},
                "preprocessing": {"version": VERSION, **pre},
                "input": {"channels": list(self.channels), "size": self.size}}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> PreprocessSpec:
        """The spec a model file's metadata (or its "meta" block's contents) asks for."""
        try:
            flow, pre, inp = meta["flow"], dict(meta.get("preprocessing") or {}), meta["input"]
            version = pre.pop("version", VERSION)
            if version > VERSION:
                raise UserError(f"model needs preprocessing version {version}; this build has {VERSION}")
            known = {f.name for f in fields(cls)}
            extra = set(pre) - known
            if extra:
                raise UserError(f"model file asks for unknown preprocessing option(s) {sorted(extra)}")
            return cls(backend=flow["backend"], flow_params=dict(flow.get("params") or {}),
                       size=int(inp["size"]), channels=tuple(inp["channels"]), **pre)
        except (KeyError, TypeError) as e:
            raise UserError(f"model metadata lacks the preprocessing entry {e}") from None


_FLOWS: dict[str, Any] = {}


def _flow_for(spec: PreprocessSpec):
    """One backend instance per (backend, params) per process: creating DIS/TV-L1 objects is not free."""
    k = json.dumps([spec.backend, dict(spec.flow_params)], sort_keys=True, default=str)
    if k not in _FLOWS:
        _FLOWS[k] = create_flow(spec.backend, **spec.flow_params)
    return _FLOWS[k]


def _check_crop(name: str, a: np.ndarray) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise UserError(f"{name} crop must be an (S, S) uint8 grey image, got {got}")
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise UserError(f"{name} crop is too small: {a.shape}")


def _scale(x: np.ndarray, floor: float) -> float:
    return max(float(np.percentile(x, 99)), floor)


def model_input(onset_crop: np.ndarray, apex_crop: np.ndarray,
                spec: PreprocessSpec | Mapping[str, Any]) -> np.ndarray:
    """The network input for one onset/apex pair.

    Args:
        onset_crop, apex_crop: (S, S) uint8 grey aligned crops of the same track (S = 128 canonically).
        spec: a PreprocessSpec, or a model file's metadata dict (PreprocessSpec.from_meta).
    Returns:
        (C, spec.size, spec.size) float32, channels in spec.channels order (module docstring).
    """
    if not isinstance(spec, PreprocessSpec):
        spec = PreprocessSpec.from_meta(spec)
    _check_crop("onset", onset_crop)
    _check_crop("apex", apex_crop)
    if onset_crop.shape != apex_crop.shape:
        raise UserError(f"onset and apex crops differ in size: {onset_crop.shape} vs {apex_crop.shape}")
    flow = _flow_for(spec).calc(onset_crop, apex_crop)                 # (S, S, 2) crop px
    if spec.global_motion == "median":
        flow = flow - np.median(flow.reshape(-1, 2), axis=0)
    strain = optical_strain(flow)
    flow = resize_flow(flow, spec.size)                               # vectors now in px of `size`
    strain = cv2.resize(strain, (spec.size, spec.size), interpolation=cv2.INTER_AREA)
    u, v = flow[..., 0], flow[..., 1]
    if spec.norm == "robust":
        m = _scale(np.hypot(u, v), spec.floor_px)
        u, v, strain = u / m, v / m, strain / _scale(strain, spec.floor_strain)
    elif spec.norm == "fixed":
        u, v, strain = u / (10 * spec.floor_px), v / (10 * spec.floor_px), strain / (10 * spec.floor_strain)
    else:
        u, v, strain = (_minmax(c) for c in (u, v, strain))
    chans = {"u": u, "v": v, "strain": strain}
    out = np.empty((len(spec.channels), spec.size, spec.size), np.float32)
    for i, name in enumerate(spec.channels):
        if name == "apex":
            g = cv2.resize(apex_crop, (spec.size, spec.size), interpolation=cv2.INTER_AREA)
            out[i] = (g.astype(np.float32) / 255.0 - 0.5) * 2.0
        else:
            out[i] = np.clip(chans[name], -spec.clip, spec.clip)
    return out


def _minmax(c: np.ndarray) -> np.ndarray:
    lo, hi = float(c.min()), float(c.max())
    return (c - lo) / (hi - lo) if hi > lo else np.zeros_like(c)


def align_pair(onset: np.ndarray, apex: np.ndarray, detector: Any, landmarker: Any,
               size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops of a dataset's onset and apex frames, both cut with ONE transform found on the onset
    (the largest face, its eyes at the canonical places of edge.perception.geometry), as the face node does for a
    track and as the MER literature crops a clip (one box for all frames), so head pose alone adds no flow.

    Args:
        onset, apex: (H, W) uint8 grey frames; detector/landmarker: edge.perception.face make_detector() and
            make_landmarker() objects.
    Returns:
        (onset crop, apex crop), each (size, size) uint8.
    """
    from edge.perception.geometry import align_from_eyes

    faces = detector.detect(onset)
    if not faces:
        raise UserError("no face found in the onset frame")
    box = max(faces, key=lambda f: f.box[2] * f.box[3]).box
    eyes, _ = landmarker.eyes(onset, box)
    m = align_from_eyes(eyes[0], eyes[1], size)
    return tuple(cv2.warpAffine(f, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
                 for f in (onset, apex))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# Disk cache and parallel precomputation
# ---------------------------------------------------------------------------------------------------

def input_key(onset_crop: np.ndarray, apex_crop: np.ndarray, spec: PreprocessSpec) -> str:
    """SHA-256 (hex) over the spec (with the code version) and both crops' shapes and bytes."""
    h = hashlib.sha256(spec.key().encode())
    for a in (onset_crop, apex_crop):
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class FeatureCache:
    """Model inputs on disk, one .npy per sample: `<dir>/<key[:2]>/<key>.npy`. Safe for several writers
    (each file is written to a temporary name and renamed into place)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return np.load(p)
        except (OSError, ValueError):  # a truncated file from a killed run: recompute it
            log.warning("unreadable cache entry %s: recomputing", p)
            return None

    def put(self, key: str, x: np.ndarray) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, x)
        tmp.replace(p)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACESLEUTH_CACHE", Path.home() / ".cache" / "facesleuth")) / "features"


def _work(job: tuple[np.ndarray, np.ndarray, PreprocessSpec, str | None]) -> tuple[np.ndarray, int]:
    """Worker: inputs for a chunk of pairs, through the cache. Returns (inputs, how many were cached)."""
    onsets, apexes, spec, cache_dir = job
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend
    cache = FeatureCache(cache_dir) if cache_dir else None
    out, hits = [], 0
    for o, a in zip(onsets, apexes, strict=True):
        key = input_key(o, a, spec) if cache else ""
        x = cache.get(key) if cache else None
        if x is None:
            x = model_input(o, a, spec)
            if cache:
                cache.put(key, x)
        else:
            hits += 1
        out.append(x)
    return np.stack(out), hits


def precompute(onsets: np.ndarray, apexes: np.ndarray, spec: PreprocessSpec,
               cache_dir: str | Path | None = None, workers: int | None = None, chunk: int = 32,
               progress: bool = True) -> np.ndarray:
    """Model inputs for many pairs, in parallel processes, through the disk cache.

    Args:
        onsets, apexes: (N, S, S) uint8 aligned grey crops.
        spec: the preprocessing.
        cache_dir: feature cache directory (None: no cache).
        workers: processes (default: CPU count; 0 or 1 = in this process).
    Returns:
        (N, C, spec.size, spec.size) float32, in input order.
    """
    onsets, apexes = np.asarray(onsets), np.asarray(apexes)
    if onsets.ndim != 3 or onsets.shape != apexes.shape or onsets.dtype != np.uint8 or apexes.dtype != np.uint8:
        raise UserError(f"precompute: onsets/apexes must be two (N, S, S) uint8 arrays of one shape, "
                        f"got {onsets.dtype} {onsets.shape} and {apexes.dtype} {apexes.shape}")
    n = len(onsets)
    cdir = str(cache_dir) if cache_dir else None
    jobs = [(onsets[i:i + chunk], apexes[i:i + chunk], spec, cdir) for i in range(0, n, chunk)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(workers, len(jobs))
    parts: list[np.ndarray] = []
    hits = 0
    with Progress(n, f"preprocess ({spec.backend})", enabled=progress) as bar:
        if workers <= 1:
            results = map(_work, jobs)
            for x, h in results:
                parts.append(x)
                hits += h
                bar.update(len(x))
        else:
            # spawn, not fork: the parent may hold torch / OpenCV thread pools that fork would copy broken.
            with mp.get_context("spawn").Pool(workers) as pool:
                for x, h in pool.imap(_work, jobs):
                    parts.append(x)
                    hits += h
                    bar.update(len(x))
    log.info("preprocessed %d pairs (%d from cache) with %s", n, hits, spec.backend)
    if not parts:
        return np.zeros((0, len(spec.channels), spec.size, spec.size), np.float32)
    return np.concatenate(parts)
