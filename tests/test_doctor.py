"""`facesleuth doctor`: runs as a real command; its JSON has every key and consistent node choices."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2

from edge import doctor
from edge.perception import flow

KEYS = {"python", "jetson", "torch", "torch_cuda", "opencv", "opencv_cuda", "nvof", "gstreamer", "v4l2",
        "optflow_contrib", "onnxruntime", "onnxruntime_providers", "torch_tensorrt", "tensorrt",
        "haar_cascades", "dlib", "dlib68_model", "cameras", "flow_backends"}


def test_doctor_json_command():
    out = subprocess.run([sys.executable, "-m", "edge", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert set(rep["checks"]) == KEYS
    assert set(rep["nodes"]) == {"capture", "face", "flow", "classify"}
    for key, c in rep["checks"].items():
        assert set(c) == {"value", "ok", "hint"}
        assert bool(c["hint"]) == (not c["ok"]), key  # every missing thing says what it means
    assert rep["checks"]["opencv"]["value"] == cv2.__version__
    assert rep["checks"]["opencv_cuda"]["ok"] == flow.has_cuda_opencv()
    assert "dis" in rep["checks"]["flow_backends"]["value"]
    expected = next(b for b in flow.AUTO_ORDER if flow.available_backends()[b] == "yes")
    assert rep["nodes"]["flow"] == f"auto -> {expected}"
    if not flow.has_cuda_opencv():
        assert "falls back to Farneback" in rep["checks"]["opencv_cuda"]["hint"]


def test_doctor_text_report():
    text = doctor.format_report(doctor.collect())
    assert text.splitlines()[0].startswith("python")
    assert "what each node will use:" in text and "flow      auto -> " in text
