"""`facesleuth doctor [--json]`: what this machine offers the pipeline, and what each node will use.

One row per capability (Python, torch + CUDA, OpenCV + CUDA / NVOF / GStreamer / V4L2, onnxruntime and its
providers, torch_tensorrt and TensorRT, Haar cascades, dlib + its 68-point model, cameras), each with a
one-line hint when something a Jetson user expects is missing. Nothing here fails: absence is reported.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import platform
import sys
from pathlib import Path
from typing import Any

from edge.jsonout import JsonOut, add_json_argument

log = logging.getLogger(__name__)

HAAR_FILES = ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml")


def _version(module: str) -> str | None:
    """Installed version of a module without failing (None: not installed or not importable)."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception as e:  # a broken install (e.g. a TensorRT/torch mismatch) is reported, not raised
        return f"broken ({type(e).__name__}: {str(e)[:60]})"


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def collect() -> dict[str, Any]:
    """Every check as {key: {"value": ..., "ok": bool, "hint": str}} plus the nodes' choices."""
    import cv2

    from edge.perception import capture, flow

    checks: dict[str, dict[str, Any]] = {}

    def add(key: str, value: Any, ok: bool, hint: str = "") -> None:
        checks[key] = {"value": value, "ok": bool(ok), "hint": "" if ok else hint}

    add("python", f"{platform.python_version()} ({platform.machine()})", sys.version_info >= (3, 10),
        "Python 3.10+ is required")
    add("jetson", is_jetson(), True)

    torch_v = _version("torch")
    torch_cuda = False
    if torch_v and not torch_v.startswith("broken"):
        import torch
        torch_cuda = bool(torch.cuda.is_available())
        cuda_desc = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}" if torch_cuda else "no CUDA"
        add("torch", f"{torch_v} ({cuda_desc})", True)
    else:
        add("torch", torch_v or "not installed", False, "install torch (on Jetson: NVIDIA's wheel for your JetPack)")
    add("torch_cuda", torch_cuda, torch_cuda,
        "torch has no CUDA: the classifier runs on the CPU (on Jetson install NVIDIA's torch wheel)")

    n_cuda = flow.cuda_device_count()
    add("opencv", cv2.__version__, True)
    add("opencv_cuda", n_cuda, n_cuda > 0,
        "OpenCV has no CUDA: flow falls back to Farneback on the CPU (build OpenCV with CUDA for cuda_tvl1/nvof)")
    add("nvof", flow.has_nvof(), flow.has_nvof(),
        "no NVIDIA Optical Flow in OpenCV: the flow node cannot use nvof (needs CUDA OpenCV with the NVOF SDK)")
    add("gstreamer", capture.has_gstreamer(), capture.has_gstreamer(),
        "OpenCV has no GStreamer: CSI cameras (nvarguscamerasrc) cannot be opened; use JetPack's OpenCV")
    add("v4l2", capture.has_v4l2(), capture.has_v4l2(), "OpenCV has no V4L2: USB cameras cannot be opened")
    add("optflow_contrib", flow.has_optflow_contrib(), flow.has_optflow_contrib(),
        "cv2.optflow missing: no CPU TV-L1 (install opencv-contrib-python-headless)")

    ort_v = _version("onnxruntime")
    providers: list[str] = []
    if ort_v and not ort_v.startswith("broken"):
        import onnxruntime
        providers = list(onnxruntime.get_available_providers())
    add("onnxruntime", ort_v or "not installed", bool(ort_v), "no onnxruntime: ONNX models cannot run")
    gpu_ep = any(p in providers for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    add("onnxruntime_providers", providers, gpu_ep,
        "onnxruntime has no CUDA/TensorRT provider: ONNX runs on the CPU (Jetson: onnxruntime-gpu wheel)")
    tt_v, trt_v = _version("torch_tensorrt"), _version("tensorrt")
    add("torch_tensorrt", tt_v or "not installed", bool(tt_v) and not tt_v.startswith("broken"),
        "no torch_tensorrt: no TensorRT engine for the classifier (pip install 'facesleuth-edge[tensorrt]' "
        "matching your torch)")
    add("tensorrt", trt_v or "not installed", bool(trt_v) and not trt_v.startswith("broken"),
        "no TensorRT Python module (JetPack ships it: python3-libnvinfer)")

    haar_dir = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    present = [f for f in HAAR_FILES if (haar_dir / f).is_file()]
    add("haar_cascades", f"{len(present)}/{len(HAAR_FILES)} in {haar_dir or '?'}", len(present) == len(HAAR_FILES),
        "Haar cascade files missing (OpenCV 5 wheels dropped them): keep opencv-contrib-python-headless<5")
    dlib_v = _version("dlib")
    add("dlib", dlib_v or "not installed", bool(dlib_v),
        "no dlib: alignment uses eye cascades, not 68 landmarks (pip install dlib-bin face_recognition_models)")
    model = _dlib68_model()
    add("dlib68_model", str(model) if model else "not found", model is not None,
        "dlib's 68-point model not found (pip install face_recognition_models, or Debian's libdlib-data)")
    cams = capture.list_cameras()
    add("cameras", cams, bool(cams), "no /dev/video* camera found (connect one, or use a file/synthetic source)")

    backends = flow.available_backends()
    add("flow_backends", [k for k, v in backends.items() if v == "yes"], True)
    return {"checks": checks, "nodes": node_choices(checks, backends)}


def _dlib68_model() -> Path | None:
    try:
        from edge.perception.face.landmarks import find_dlib68_model
    except ImportError:
        return None
    return find_dlib68_model()


def node_choices(checks: dict[str, dict[str, Any]], backends: dict[str, str]) -> dict[str, str]:
    """What each node will use on this machine, in words."""
    from edge.perception.flow import AUTO_ORDER

    flow_auto = next((b for b in AUTO_ORDER if backends.get(b) == "yes"), "none")
    cams = checks["cameras"]["value"]
    capture = ", ".join(filter(None, [
        f"V4L2 cameras {', '.join(cams)}" if cams and checks["v4l2"]["ok"] else "",
        "GStreamer/CSI" if checks["gstreamer"]["ok"] else "", "files, folders, synthetic"]))
    face = "Haar detection + " + ("dlib 68 landmarks" if checks["dlib68_model"]["ok"] else "eye-cascade alignment")
    if not checks["haar_cascades"]["ok"]:
        face = "no detector (Haar cascade files missing)"
    if checks["torch_tensorrt"]["ok"] and checks["torch_cuda"]["ok"]:
        classify = "Torch-TensorRT engine"
    elif checks["onnxruntime"]["ok"]:
        providers = checks["onnxruntime_providers"]["value"]
        best = next((p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in providers),
                    "CPUExecutionProvider")
        classify = f"onnxruntime ({best})"
    else:
        classify = "torch (" + ("CUDA" if checks["torch_cuda"]["ok"] else "CPU") + ")"
    return {"capture": capture, "face": face, "flow": f"auto -> {flow_auto}", "classify": classify}


def format_report(report: dict[str, Any]) -> str:
    """Left-aligned text: check, ok/--, value (hint on the next line); then the node choices."""

    def show(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list):
            return ", ".join(map(str, v)) or "none"
        return str(v)

    width = max(map(len, report["checks"]))
    lines = []
    for k, c in report["checks"].items():
        lines.append(f"{k:<{width}}  {'ok' if c['ok'] else '--'}  {show(c['value'])}")
        if c["hint"]:
            lines.append(f"{'':<{width}}      hint: {c['hint']}")
    lines += ["", "what each node will use:"]
    lines += [f"  {k:<9} {v}" for k, v in report["nodes"].items()]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_json_argument(parser, "the report as one JSON document")


def main(args: argparse.Namespace) -> int:
    out = JsonOut(args.json)
    report = collect()
    if out.text:
        print(format_report(report))
    out.document(report)
    return 0
