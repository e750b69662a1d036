"""Dense optical flow behind one interface: the flow node AND training use this module.

    flow = create_flow("auto")                  # or "nvof", "cuda_tvl1", "cuda_farneback", "dis", "tvl1", "farneback"
    uv = flow.calc(prev, next)                  # (H, W) uint8 grey each -> (H, W, 2) float32 (u, v) px
    eps = optical_strain(uv)                    # (H, W) float32

Convention: image axes, x right, y down; `uv[y, x] = (u, v)` is the displacement in px of the point at
pixel (x, y) of `prev`, so `prev(x, y) ~= next(x + u, y + v)` (OpenCV's convention). A brow raise is a
negative v.

Defaults (chosen for sub-pixel motion under sensor noise, and shown to be): `facesleuth bench flow` on a
128x128 aligned crop of skimage's astronaut photograph warped by known fields, 2-core x86_64 shared
with other jobs, OpenCV 4.14. EPE = mean end-point error (px) in the field's ROIs; gain = share of the
true motion seen (1 = all); "noisy" = Gaussian noise sigma = 2 grey levels on both frames, 3 draws.

                                      ms   brow raise 1 px           lip-corner pull 1 px
                                           EPE clean/noisy  gain     EPE clean/noisy  gain clean/noisy
    dis preset MEDIUM (finest scale 1)  1.7   0.119 / 0.127   0.73     0.349 / 0.347   0.20 / 0.20
    dis DEFAULT (scale 0, stride 6,     1.9   0.124 / 0.149   0.91     0.180 / 0.152   0.63 / 0.77
      8 GD iters, 1 var. iter)
    farneback window 15                 3.4   0.194 / 0.196   0.98     0.160 / 0.169   0.69 / 0.68
    farneback window 9, poly_n 5        4.0   0.200 / 0.209   1.02     0.127 / 0.157   0.80 / 0.80
    tvl1 OpenCV defaults (lambda 0.15)  ~120  0.075 / 0.083   0.88     0.195 / 0.329   0.56 / 0.25
    tvl1 DEFAULT (lambda 0.3, 3 warps)  ~120  0.073 / 0.079   0.89     0.155 / 0.283   0.67 / 0.37

DIS's presets stop at scale 1 or 2 and see a fifth of a lip-corner pull; at finest scale 0 it sees most
of it, and fewer gradient-descent iterations with a sparser patch grid pay for scale 0, so `dis` is the
default of the model input (edge.data.preprocess) and the one CPU backend inside the per-pixel targets
(<= 2 ms, brow EPE <= 0.15 clean and <= 0.25 noisy). Farneback's 9-px window sees the full amplitude but
smears it (higher EPE).

Spotting (the flow node, `auto` on a CPU) asks something else: edge.spot averages the flow over blocks of
8x8 crop px and thresholds the block means in units of their own noise, so per-pixel sharpness buys
nothing there and the noise of a block mean is all. Measured on lag-3 flows of stabilised crops through
edge.spot.RoiFeatures (rigid part removed), rise-and-return score of the scripted micro-expressions over
the largest score on quiet frames (median of the micro-expressions; 1 = lost in the noise):

                                              ms    block noise  webcam30 1.5 px   edge60 0.5 px (sigma 1/3)
    dis DEFAULT                               3.3   0.078 px     1.34              1.25
    dis, 16-px patches, stride 8              5.1   0.034 px     2.31              1.50
    farneback window 9, poly_n 5 (old)        4.8   0.066 px     2.01              -
    farneback window 15, poly_n 7, sigma 1.5  5.2   0.037 px     2.43              1.67

(webcam30: 3 clips, 15 micro-expressions, JPEG 70, small faces; edge60: 4 clips, 20.) Farneback with a
15-px window and the wider polynomial (poly_n 7, poly_sigma 1.5) is the default here and `auto`'s CPU
choice: twice the margin of `dis` on webcam footage. On `facesleuth bench spotting` (seed 0) the spotter
found 47 of the 50 micro-expressions of 0.5-1 px with it, against 31 with `dis` (each at its own
thresholds). TV-L1 at OpenCV's
lambda loses most of the lip motion under noise (gain 0.25); lambda 0.3 recovers part of it and 3 warps
cost nothing on sub-pixel motion. Times are from a quiet moment; with other jobs on the same 2 cores
(load ~5) `dis` measured 2.1-2.7 ms (1 thread: 2.0-2.2 ms): rerun the bench on the target device.

Hardware flow (`nvof`, NVIDIA Optical Flow 2.0 through cv2.cuda) is coarse: one vector per grid cell
(4x4, or 1x1/2x2 on Ampere and later) in S10.5 fixed point (1/32 px units); it is converted to float px
and upsampled to full resolution (vectors stay in px; only the sampling grid changes).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from edge.errors import Unavailable, UserError

log = logging.getLogger(__name__)

# Best first: what `auto` tries. nvof is last among the CUDA ones only for accuracy reasons (coarse
# grid, open quality reports upstream); on a GPU the CUDA TV-L1 is both fast and fine.
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
    """Shared upload/download for the cv2.cuda backends."""

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
        if not has_cuda_optflow():
            raise Unavailable(_no_cuda_reason(self.name))
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
        if not has_cuda_optflow():
            raise Unavailable(_no_cuda_reason(self.name))
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
        raise Unavailable("flow: no backend available")  # dis ships with every OpenCV: not expected
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


# ---------------------------------------------------------------------------------------------------
# Known warps (tests and `facesleuth bench flow`)
# ---------------------------------------------------------------------------------------------------

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
    """A known flow field (size, size, 2) float32 px on the canonical aligned crop (edge.geometry).

    kind: "brow_raise" (both brows up by `amplitude` px at their centre), "lip_corner_pull" (mouth
    corners out and up, |vector| = amplitude), "shift" (rigid translation (0.6, -0.4) * amplitude px),
    "rotation" (rigid 1 degree * amplitude about the crop centre).
    """
    from edge.geometry import ROIS

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
    from edge.geometry import roi_boxes

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
    cascade; the crop is aligned with edge.geometry.align_from_eyes like the face node's crops.
    """
    from skimage import data

    from edge.geometry import align_from_eyes

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
