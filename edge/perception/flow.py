"""Dense optical flow behind one interface: the flow node AND training use this module.

    flow = create_flow("auto")                  # or "nvof", "cuda_tvl1", "cuda_farneback", "dis", "tvl1", "farneback"
    uv = flow.calc(prev, next)                  # (H, W) uint8 grey each -> (H, W, 2) float32 (u, v) px
    eps = optical_strain(uv)                    # (H, W) float32

Convention: image axes, x right, y down; `uv[y, x] = (u, v)` is the displacement in px of the point at
pixel (x, y) of `prev`, so `prev(x, y) ~= next(x + u, y + v)` (OpenCV's convention). A brow raise is a
negative v.

Defaults are tuned for sub-pixel motion under sensor noise (OpenCV's presets are tuned for large motion
and miss it), with two different aims (measurements in docs/flow.md, from `facesleuth bench flow`):
- the model input (edge.data.preprocess) uses `dis` at finest scale 0, with few gradient-descent
  iterations and a sparse patch grid: the lowest per-pixel error on 1-px warps of a real face among the
  CPU backends within 2 ms on a 128x128 crop;
- spotting (the flow node, `auto` on a CPU) uses `farneback` with a 15-px window and poly_n 7: edge.perception.spot
  thresholds means over 8x8-px blocks in units of their own noise, so the noise of a block mean is what
  counts, and Farneback's is about half of DIS's.
`tvl1` (lambda 0.3, 3 warps) is the MER literature's baseline; at ~120 ms a crop it is for offline use.

Hardware flow (`nvof`, NVIDIA Optical Flow 2.0 through cv2.cuda) is coarse: one vector per grid cell
(4x4, or 1x1/2x2 on Ampere and later) in S10.5 fixed point (1/32 px units); it is converted to float px
and upsampled to full resolution (vectors stay in px; only the sampling grid changes).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from edge.errors import Unavailable, UserError

log = logging.getLogger(__name__)

# What `auto` tries, best first. On a GPU: CUDA TV-L1 (fast and fine there), then the NVOF engine (fast
# but coarse: one vector per grid cell), then CUDA Farneback. On a CPU: Farneback, the lowest block-mean
# noise for spotting (module docstring). dis and tvl1 (and vpi, Jetson only) are used when named.
AUTO_ORDER = ("cuda_tvl1", "nvof", "cuda_farneback", "farneback")
BACKENDS = ("nvof", "vpi", "cuda_tvl1", "cuda_farneback", "dis", "tvl1", "farneback")


# ---------------------------------------------------------------------------------------------------
# What this OpenCV build offers (shared with `facesleuth doctor`)
# ---------------------------------------------------------------------------------------------------

def cuda_device_count() -> int:
    """cv2.cuda.getCudaEnabledDeviceCount(): 0 = OpenCV built without CUDA, -1 = no driver, else GPUs."""
    cuda = getattr(cv2, "cuda", None)
    if cuda is None or not hasattr(cuda, "getCudaEnabledDeviceCount"):
        return 0
    try:
        return int(cuda.getCudaEnabledDeviceCount())
    except cv2.error:
        return -1


def has_cuda_opencv() -> bool:
    """True when this OpenCV was built with CUDA and sees a GPU."""
    return cuda_device_count() > 0


def has_nvof() -> bool:
    """True when cv2.cuda has NVIDIA Optical Flow 2.0 (the GPU must still have the engine: Turing+)."""
    return has_cuda_opencv() and hasattr(cv2.cuda, "NvidiaOpticalFlow_2_0_create")


def has_cuda_optflow() -> bool:
    """True when cv2.cuda has the cudaoptflow module (TV-L1, Farneback)."""
    return has_cuda_opencv() and hasattr(cv2.cuda, "OpticalFlowDual_TVL1") and hasattr(cv2.cuda,
                                                                                      "FarnebackOpticalFlow")


def has_optflow_contrib() -> bool:
    """True when cv2.optflow (opencv-contrib) is present: needed for CPU TV-L1."""
    return hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")


def _no_cuda_reason(name: str) -> str:
    n = cuda_device_count()
    why = ("this OpenCV build has no CUDA (cv2.cuda.getCudaEnabledDeviceCount() == 0)" if n == 0
           else "OpenCV has CUDA but finds no GPU/driver (getCudaEnabledDeviceCount() == -1)")
    return f"{name}: {why}; on a CPU use auto (farneback)"


# ---------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------

class FlowBackend(ABC):
    """One optical flow method with fixed parameters.

    Attributes:
        name: backend name as given to create_flow().
        params: the effective parameters (recorded in model files so training and inference agree).
    """

    name = "base"
    defaults: dict[str, Any] = {}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise UserError(f"flow backend {self.name!r}: unknown parameter(s) {sorted(unknown)}; "
                            f"known: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}

    def calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        """Flow from `prev` to `next`: two (H, W) uint8 grey images -> (H, W, 2) float32 (u, v) px."""
        _check_pair(prev, next)
        flow = self._calc(prev, next)
        return np.ascontiguousarray(flow, dtype=np.float32)

    @abstractmethod
    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        """Subclasses compute the flow."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


def _check_pair(prev: np.ndarray, next: np.ndarray) -> None:
    for a in (prev, next):
        if a.dtype != np.uint8 or a.ndim != 2:
            raise UserError(f"flow: expected (H, W) uint8 grey images, got {a.dtype} {a.shape}")
    if prev.shape != next.shape:
        raise UserError(f"flow: image shapes differ: {prev.shape} vs {next.shape}")


class DISFlow(FlowBackend):
    """cv2.DISOpticalFlow at finest scale 0 (the presets stop at scale 1-2 and miss sub-pixel motion), with
    few gradient-descent iterations and a sparse patch grid to stay under 2 ms on a 128x128 crop."""

    name = "dis"
    defaults = {"finest_scale": 0, "patch_size": 8, "patch_stride": 6, "gd_iterations": 8,
                "var_iterations": 1, "var_alpha": 20.0, "var_delta": 5.0, "var_gamma": 10.0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        d = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        d.setFinestScale(int(p["finest_scale"]))
        d.setPatchSize(int(p["patch_size"]))
        d.setPatchStride(int(p["patch_stride"]))
        d.setGradientDescentIterations(int(p["gd_iterations"]))
        d.setVariationalRefinementIterations(int(p["var_iterations"]))
        d.setVariationalRefinementAlpha(float(p["var_alpha"]))
        d.setVariationalRefinementDelta(float(p["var_delta"]))
        d.setVariationalRefinementGamma(float(p["var_gamma"]))
        self._dis = d

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        return self._dis.calc(prev, next, None)


class FarnebackFlow(FlowBackend):
    """cv2.calcOpticalFlowFarneback with a 15-px window and poly_n 7: the lowest-noise block means for
    spotting (module docstring), the CPU choice of `auto`."""

    name = "farneback"
    defaults = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 7,
                "poly_sigma": 1.5, "gaussian": False}

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        p = self.params
        flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if p["gaussian"] else 0
        return cv2.calcOpticalFlowFarneback(prev, next, None, float(p["pyr_scale"]), int(p["levels"]),
                                            int(p["winsize"]), int(p["iterations"]), int(p["poly_n"]),
                                            float(p["poly_sigma"]), flags)


class TVL1Flow(FlowBackend):
    """cv2.optflow Dual TV-L1 (the MER literature's standard). lambda 0.3 (OpenCV: 0.15) resists noise better
    and 3 warps (OpenCV: 5) cost less with no loss on sub-pixel motion (module docstring)."""

    name = "tvl1"
    defaults = {"tau": 0.25, "lambda_": 0.3, "theta": 0.3, "nscales": 5, "warps": 3, "epsilon": 0.01,
                "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0,
                "median_filtering": 5}
    # OpenCV's own defaults, the literature's baseline (`facesleuth bench flow` compares against both).
    OPENCV_DEFAULTS = {"lambda_": 0.15, "nscales": 5, "warps": 5}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if not has_optflow_contrib():
            raise Unavailable("tvl1: cv2.optflow is missing (install opencv-contrib-python-headless); use auto "
                              "(farneback)")
        p = self.params
        # The kwarg really is spelt `innnerIterations` in OpenCV's binding (`innerIterations` is a TypeError).
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
            tau=float(p["tau"]), lambda_=float(p["lambda_"]), theta=float(p["theta"]),
            nscales=int(p["nscales"]), warps=int(p["warps"]), epsilon=float(p["epsilon"]),
            innnerIterations=int(p["inner_iterations"]), outerIterations=int(p["outer_iterations"]),
            scaleStep=float(p["scale_step"]), gamma=float(p["gamma"]),
            medianFiltering=int(p["median_filtering"]))

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        return self._tvl1.calc(prev, next, None)


class _CudaFlow(FlowBackend):
    """Shared for the cv2.cuda backends: the cudaoptflow check (nvof checks its own engine) and
    upload/download."""

    needs_cudaoptflow = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.needs_cudaoptflow and not has_cuda_optflow():
            raise Unavailable(_no_cuda_reason(self.name))

    def _gpu(self, img: np.ndarray):
        g = cv2.cuda_GpuMat()
        g.upload(img)
        return g


class CudaTVL1Flow(_CudaFlow):
    """cv2.cuda.OpticalFlowDual_TVL1 with the same noise-robust lambda as the CPU default."""

    name = "cuda_tvl1"
    defaults = {"tau": 0.25, "lambda_": 0.3, "theta": 0.3, "nscales": 5, "warps": 3, "epsilon": 0.01,
                "iterations": 300, "scale_step": 0.8, "gamma": 0.0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self._alg = cv2.cuda.OpticalFlowDual_TVL1.create(
            float(p["tau"]), float(p["lambda_"]), float(p["theta"]), int(p["nscales"]), int(p["warps"]),
            float(p["epsilon"]), int(p["iterations"]), float(p["scale_step"]), float(p["gamma"]))

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        return self._alg.calc(self._gpu(prev), self._gpu(next), None).download()


class CudaFarnebackFlow(_CudaFlow):
    """cv2.cuda.FarnebackOpticalFlow with the CPU backend's parameters."""

    name = "cuda_farneback"
    defaults = dict(FarnebackFlow.defaults)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self._alg = cv2.cuda.FarnebackOpticalFlow.create(
            int(p["levels"]), float(p["pyr_scale"]), False, int(p["winsize"]), int(p["iterations"]),
            int(p["poly_n"]), float(p["poly_sigma"]), cv2.OPTFLOW_FARNEBACK_GAUSSIAN if p["gaussian"] else 0)

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        return self._alg.calc(self._gpu(prev), self._gpu(next), None).download()


class NvofFlow(_CudaFlow):
    """NVIDIA Optical Flow 2.0 (hardware engine, Turing+): S10.5 grid vectors -> px, upsampled to full res.

    perf: "slow" | "medium" | "fast"; grid: output grid size 1, 2 or 4 px (1 and 2 need Ampere+).
    The engine is created lazily for each image size (NVOF objects are size-bound).
    """

    name = "nvof"
    defaults = {"perf": "slow", "grid": 1}
    needs_cudaoptflow = False
    _PERF = {"slow": "NV_OF_PERF_LEVEL_SLOW", "medium": "NV_OF_PERF_LEVEL_MEDIUM",
             "fast": "NV_OF_PERF_LEVEL_FAST"}
    _GRID = {1: "NV_OF_OUTPUT_VECTOR_GRID_SIZE_1", 2: "NV_OF_OUTPUT_VECTOR_GRID_SIZE_2",
             4: "NV_OF_OUTPUT_VECTOR_GRID_SIZE_4"}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if not has_nvof():
            if has_cuda_opencv():
                raise Unavailable("nvof: this OpenCV CUDA build lacks NvidiaOpticalFlow_2_0 "
                                  "(cudaoptflow built without the NVOF SDK); use cuda_tvl1 or dis")
            raise Unavailable(_no_cuda_reason(self.name))
        if self.params["perf"] not in self._PERF or int(self.params["grid"]) not in self._GRID:
            raise UserError(f"nvof: perf must be one of {list(self._PERF)} and grid one of {list(self._GRID)}")
        self._engines: dict[tuple[int, int], Any] = {}

    def _engine(self, w: int, h: int):
        eng = self._engines.get((w, h))
        if eng is None:
            perf = getattr(cv2.cuda, "NvidiaOpticalFlow_2_0_" + self._PERF[self.params["perf"]])
            grid = getattr(cv2.cuda, "NvidiaOpticalFlow_2_0_" + self._GRID[int(self.params["grid"])])
            try:
                eng = cv2.cuda.NvidiaOpticalFlow_2_0_create((w, h), perf, grid)
            except cv2.error as e:  # the GPU has no optical flow engine, or the grid is unsupported
                raise Unavailable(f"nvof: the GPU refused NVIDIA Optical Flow ({str(e).strip()[:120]}); "
                                  "use cuda_tvl1") from e
            self._engines[(w, h)] = eng
        return eng

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        h, w = prev.shape
        out = self._engine(w, h).calc(self._gpu(prev), self._gpu(next), None)
        raw = out[0] if isinstance(out, tuple) else out
        raw = raw.download() if hasattr(raw, "download") else np.asarray(raw)
        return nvof_to_px(raw, (h, w))


def nvof_to_px(raw: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """NVOF output (gh, gw, 2) int16 S10.5 grid vectors -> (H, W, 2) float32 px at full resolution.

    S10.5 fixed point: value / 32 = px. The grid is upsampled bilinearly with cell centres aligned
    (cv2.resize's convention); vectors are NOT rescaled because they are already in full-res px.
    """
    flow = raw.astype(np.float32) / 32.0
    h, w = size_hw
    if flow.shape[:2] != (h, w):
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    return flow


class VpiFlow(FlowBackend):
    """NVIDIA VPI dense optical flow on Jetson Orin's optical flow accelerator (OFA backend).

    quality: "low" | "medium" | "high"; grid: 1, 2 or 4 px per vector (VPI >= 2.3 takes `gridSize`).
    VPI returns S10.5 motion vectors (2S16) per grid cell, like NVOF: converted by nvof_to_px().
    Written from VPI's Python reference (vpi.optflow_dense); not yet run on an Orin by this project.
    """

    name = "vpi"
    defaults = {"quality": "high", "grid": 4}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        try:
            import vpi  # noqa: F401  (NVIDIA VPI ships with JetPack, not on PyPI)
        except ImportError:
            raise Unavailable("vpi: NVIDIA VPI's Python module is not installed (JetPack on Jetson Orin); "
                              "use nvof or dis") from None
        if self.params["quality"] not in ("low", "medium", "high") or int(self.params["grid"]) not in (1, 2, 4):
            raise UserError("vpi: quality must be low, medium or high and grid 1, 2 or 4")

    def _calc(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        import vpi

        quality = getattr(vpi.OptFlowQuality, self.params["quality"].upper())
        with vpi.Backend.VIC:  # the OFA reads block-linear images: convert on the VIC engine
            a = vpi.asimage(prev).convert(vpi.Format.Y8_ER_BL)
            b = vpi.asimage(next).convert(vpi.Format.Y8_ER_BL)
        mv = vpi.optflow_dense(a, b, backend=vpi.Backend.OFA, quality=quality, gridSize=int(self.params["grid"]))
        with mv.rlock_cpu() as raw:
            return nvof_to_px(np.array(raw, copy=True), prev.shape)


_REGISTRY: dict[str, Callable[..., FlowBackend]] = {
    "vpi": VpiFlow, "nvof": NvofFlow, "cuda_tvl1": CudaTVL1Flow, "cuda_farneback": CudaFarnebackFlow,
    "dis": DISFlow, "tvl1": TVL1Flow, "farneback": FarnebackFlow,
}


def available_backends() -> dict[str, str]:
    """Backend name -> "yes" or the one-line reason it is unavailable here (GPU engine not probed)."""
    out = {}
    for name in BACKENDS:
        try:
            _REGISTRY[name]()
            out[name] = "yes"
        except Unavailable as e:
            out[name] = str(e)
    return out


def create_flow(backend: str = "auto", **params: Any) -> FlowBackend:
    """Make a flow backend by name. `auto` takes the best this OpenCV build and GPU offer and logs which.

    Params are the backend's own (see each class's `defaults`); with `auto` they go to the chosen one
    only if it accepts them all, otherwise it keeps its defaults. Raises Unavailable (one line) for a
    backend this machine lacks, UserError for an unknown name or parameter.
    """
    if backend == "auto":
        reasons = []
        for name in AUTO_ORDER:
            cls = _REGISTRY[name]
            try:
                use = params if set(params) <= set(cls.defaults) else {}
                if params and not use:
                    log.warning("flow auto: %s does not take %s; using its defaults", name, sorted(params))
                flow = cls(**use)
            except Unavailable as e:
                reasons.append(str(e).split(":")[0])
                continue
            log.info("flow backend auto -> %s%s", name,
                     f" (unavailable: {', '.join(reasons)})" if reasons else "")
            return flow
        raise Unavailable("flow: no backend available")  # farneback is in every OpenCV build: not expected
    if backend not in _REGISTRY:
        raise UserError(f"unknown flow backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return _REGISTRY[backend](**params)


# ---------------------------------------------------------------------------------------------------
# Derived quantities and helpers
# ---------------------------------------------------------------------------------------------------

def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Optical strain magnitude (H, W) float32 of a flow field (H, W, 2) in px.

    eps = sqrt(u_x^2 + v_y^2 + 1/2 (u_y + v_x)^2), i.e. the Frobenius norm of the symmetric strain tensor
    [[u_x, e_xy], [e_xy, v_y]] with e_xy = (u_y + v_x) / 2 (the MER literature's formula; SOFTNet uses
    forward differences). Derivatives here are CENTRAL differences (np.gradient: one-sided at the border),
    so the strain is centred on the pixel rather than shifted by half a pixel. Rigid translation gives 0.
    """
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise UserError(f"optical_strain: expected (H, W, 2) flow, got {flow.shape}")
    u, v = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    u_y, u_x = np.gradient(u)
    v_y, v_x = np.gradient(v)
    return np.sqrt(u_x ** 2 + v_y ** 2 + 0.5 * (u_y + v_x) ** 2).astype(np.float32)


def resize_flow(flow: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a (H, W, 2) px flow to (h, w) = size, rescaling the vectors so they stay in the new px."""
    h, w = (size, size) if isinstance(size, int) else size
    H, W = flow.shape[:2]
    if (h, w) == (H, W):
        return flow
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA if w < W else cv2.INTER_LINEAR)
    out[..., 0] *= w / W
    out[..., 1] *= h / H
    return out


class LagBuffer:
    """Per-track ring of past crops, so flow can be taken against the frame `lag` frames back.

    push(track_id, frame_index, crop) stores the crop and returns (ref_frame_index, ref_crop) for the
    crop `lag` pushes earlier on that track, or the track's oldest crop while it is younger than `lag`
    (None on its first frame). A gap in frame indices (a dropped frame upstream) is not papered over: the
    reference is `lag` received crops back, and its true frame index is returned.
    """

    def __init__(self, lag: int) -> None:
        if lag < 1:
            raise UserError(f"flow lag must be >= 1 frame, got {lag}")
        self.lag = lag
        self._rings: dict[int, deque[tuple[int, np.ndarray]]] = {}

    def push(self, track_id: int, frame_index: int, crop: np.ndarray) -> tuple[int, np.ndarray] | None:
        ring = self._rings.setdefault(int(track_id), deque(maxlen=self.lag + 1))
        ring.append((int(frame_index), crop))
        return ring[0] if len(ring) > 1 else None

    def end(self, track_id: int) -> None:
        """Forget a track (it ended)."""
        self._rings.pop(int(track_id), None)

    def tracks(self) -> list[int]:
        return list(self._rings)
