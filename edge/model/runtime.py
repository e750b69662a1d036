"""One loader for every form of the classifier, on the best runtime this machine offers.

    pred = open_model("model.pt")               # or .onnx, TorchScript .pt, ExportedProgram .pt2
    out = pred.predict(x)                       # x (C, S, S) or (B, C, S, S) float32 motion
    out.probs (B, K), out.classes, out.labels

Order of preference for a model file: TensorRT (torch_tensorrt + CUDA) > PyTorch CUDA > ONNX Runtime >
PyTorch CPU; `prefer=` forces one ("tensorrt", "torch-cuda", "onnxruntime", "torch-cpu"). The loader logs
which runtime it chose and why the better ones were not used.

TensorRT engines are not portable between GPU models or TensorRT versions, so the model file (or its
ONNX / ExportedProgram export) is what ships; the engine is built on first use on the device and cached
under a key made of the GPU name and compute capability, the TensorRT and torch_tensorrt versions, the
model id (hash of weights + config), the precision and the batch range. Any change gives a new key: the
engine is rebuilt and stale engines of the same model are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.errors import Unavailable, UserError
from edge.model.export import MAX_BATCH, META_KEY, compile_tensorrt, tensorrt_available
from edge.model.file import FORMAT, model_from_record, read_record

log = logging.getLogger(__name__)

RUNTIMES = ("tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")


@dataclass
class Prediction:
    """Class probabilities (B, K) float32, rows sum to 1, with the class names they refer to."""

    probs: np.ndarray
    classes: list[str]

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probs.argmax(1)]


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACESLEUTH_CACHE", Path.home() / ".cache" / "facesleuth")) / "engines"


def device_fingerprint() -> dict[str, str]:
    """What a TensorRT engine depends on, read from this machine (CUDA + torch_tensorrt required)."""
    import tensorrt
    import torch_tensorrt

    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "cc": f"{props.major}.{props.minor}", "tensorrt": tensorrt.__version__,
            "torch_tensorrt": torch_tensorrt.__version__, "torch": torch.__version__}


def engine_key(fingerprint: dict[str, str], model_id: str, precision: str, max_batch: int) -> str:
    """Cache key: a readable prefix (model id) plus a hash of everything the engine depends on."""
    blob = json.dumps({**fingerprint, "model": model_id, "precision": precision, "max_batch": max_batch},
                      sort_keys=True)
    return f"{model_id}-{precision}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class EngineCache:
    """Engines on disk, `<dir>/<key>.ep` (or `.onnx`) plus `<key>.json` (what it was built for)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.dir = Path(directory) if directory else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.{'onnx' if '-onnx-' in key else 'ep'}"

    def lookup(self, key: str) -> Path | None:
        p = self.path(key)
        return p if p.is_file() and p.with_suffix(".json").is_file() else None

    def store(self, key: str, write: Any, info: dict[str, Any]) -> Path:
        """Write an engine with write(path); drop other engines of the same model and precision."""
        self.dir.mkdir(parents=True, exist_ok=True)
        prefix = key.rsplit("-", 1)[0] + "-"
        for old in self.dir.glob(prefix + "*"):
            if old.suffix in (".ep", ".onnx") and old.stem != key:
                log.info("removing stale engine %s (built for %s)", old.name,
                         old.with_suffix(".json").read_text() if old.with_suffix(".json").exists() else "?")
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        p = self.path(key)
        tmp = p.with_name(p.name + ".tmp")
        write(tmp)
        tmp.replace(p)
        p.with_suffix(".json").write_text(json.dumps(info, indent=1))
        return p


class Predictor:
    """A loaded classifier. predict(x) on (C, S, S) or (B, C, S, S) float32 -> Prediction."""

    def __init__(self, fn: Any, runtime: str, meta: dict[str, Any]) -> None:
        self._fn, self.runtime, self.meta = fn, runtime, meta
        cfg = meta.get("config", {})
        self.classes: list[str] = list(meta.get("meta", {}).get("classes") or cfg.get("classes") or [])
        self.model_id: str = meta.get("model_id", "unknown")
        self.input_shape = (int(cfg.get("in_chans", 3)), int(cfg.get("img_size", 64)), int(cfg.get("img_size", 64)))
        self.angles: list[float] = list(meta.get("meta", {}).get("angles_deg", []))

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"model {self.model_id} expects input (B, {', '.join(map(str, self.input_shape))}), "
                            f"got {x.shape}")
        outs = [np.asarray(self._fn(np.ascontiguousarray(x[i:i + MAX_BATCH]))) for i in range(0, len(x), MAX_BATCH)]
        return np.concatenate(outs).astype(np.float32)

    def predict(self, x: np.ndarray) -> Prediction:
        z = self.logits(x)
        z = np.exp(z - z.max(1, keepdims=True))
        return Prediction(z / z.sum(1, keepdims=True), self.classes)


def _torch_fn(module: Any, device: str) -> Any:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return run


def _ort_session(path_or_bytes: Any, threads: int = 0) -> Any:
    import onnxruntime as ort

    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = [p for p in wanted if p in ort.get_available_providers()]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        # idle pool threads otherwise spin for a while after each run, on cores other stages need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path_or_bytes, opts, providers=providers)
    log.info("onnxruntime providers: %s", ", ".join(sess.get_providers()))
    return sess


def _ort_fn(sess: Any) -> Any:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _why_not(runtime: str) -> str | None:
    """None if this runtime can run here, else the reason."""
    if runtime == "tensorrt":
        return tensorrt_available()
    if runtime == "torch-cuda":
        return None if torch.cuda.is_available() else "no CUDA device"
    if runtime == "onnxruntime":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return f"{e.name} is not installed"
        return None
    return None


def _sniff(path: Path) -> str:
    """'model', 'onnx', 'torchscript' or 'exported' from the file's content."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith(b"PK"):  # every torch format is a zip; ONNX is a bare protobuf
        return "onnx"
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        names = []
    if any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("models/model.json") for n in names):
        return "exported"
    if any(n.endswith("data.pkl") for n in names):
        return "model"
    raise UserError(f"{path}: not a model file, ONNX, TorchScript or ExportedProgram file")


def open_model(path: str | Path, prefer: str | None = None, precision: str = "fp16", max_batch: int = 16,
               cache_dir: str | Path | None = None, threads: int = 0) -> Predictor:
    """Open any model form on the best runtime present (or the one named by `prefer`).

    Args:
        path: model file, ONNX, TorchScript or ExportedProgram export.
        prefer: force a runtime from RUNTIMES; Unavailable if it cannot run here.
        precision: TensorRT precision when an engine is built ("fp32", "fp16", "int8").
        max_batch: largest batch a TensorRT engine accepts (others are split).
        threads: CPU threads of the ONNX Runtime session or of PyTorch (process-wide), 0 = the runtime's
            default (one per core): a pipeline node that shares the cores with other stages wants 1.
    """
    path = Path(path)
    if threads > 0:
        torch.set_num_threads(threads)
    if not path.is_file():
        raise UserError(f"model not found: {path}")
    if prefer is not None and prefer not in RUNTIMES:
        raise UserError(f"unknown runtime {prefer!r}; choose from {', '.join(RUNTIMES)}")
    kind = _sniff(path)
    if kind == "model":
        return _open_model_file(path, prefer, precision, max_batch, cache_dir, threads)
    if kind == "onnx":
        if prefer not in (None, "onnxruntime"):
            raise UserError(f"{path} is ONNX; it runs on onnxruntime, not {prefer}")
        reason = _why_not("onnxruntime")
        if reason:
            raise Unavailable(f"cannot run {path}: {reason}")
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - any unparsable file is bad input
            raise UserError(f"{path}: not a model file, ONNX, TorchScript or ExportedProgram file "
                            f"({type(e).__name__})") from None
        if not proto.graph.node:  # protobuf parses many byte strings, e.g. a corrupt file, as an empty model
            raise UserError(f"{path}: not a model file, ONNX, TorchScript or ExportedProgram file (no graph)")
        meta = json.loads({p.key: p.value for p in proto.metadata_props}.get(META_KEY, "{}"))
        log.info("runtime: onnxruntime (%s)", path.name)
        return Predictor(_ort_fn(_ort_session(str(path), threads)), "onnxruntime", meta)
    device = _torch_device(None if (prefer == "tensorrt" and kind == "exported") else prefer, path)
    if kind == "torchscript":
        extra = {META_KEY: ""}
        with warnings.catch_warnings():  # deprecated in torch 2.13 but still supported
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        meta = json.loads(extra[META_KEY] or "{}")
    else:
        extra = {META_KEY: ""}
        side = path.with_name(path.name + ".json")  # TensorRT exports keep their metadata beside them
        meta = json.loads(side.read_text()) if side.is_file() else {}
        if meta.get("export", {}).get("backend") == "tensorrt":
            reason = tensorrt_available()
            if reason:
                raise Unavailable(f"{path} holds TensorRT engines: {reason}")
            import torch_tensorrt  # noqa: F401 - registers the engine op that the program calls
        ep = torch.export.load(str(path), extra_files=extra)
        meta = json.loads(extra[META_KEY]) if extra[META_KEY] else meta
        module = ep.module()
        if meta.get("export", {}).get("backend") == "tensorrt":
            log.info("runtime: tensorrt (%s)", path.name)
            return Predictor(_torch_fn(module, "cuda"), "tensorrt", meta)
        module = module.to(device)
    rt = "torch-cuda" if device == "cuda" else "torch-cpu"
    log.info("runtime: %s (%s %s)", rt, kind, path.name)
    return Predictor(_torch_fn(module, device), rt, meta)


def _torch_device(prefer: str | None, path: Path) -> str:
    if prefer in ("tensorrt", "onnxruntime"):
        raise UserError(f"{path} is a PyTorch export; open the model file or ONNX export for {prefer}")
    if prefer == "torch-cuda" and not torch.cuda.is_available():
        raise Unavailable("runtime torch-cuda requested but no CUDA device is visible")
    return "cuda" if (prefer != "torch-cpu" and torch.cuda.is_available()) else "cpu"


def _open_model_file(path: Path, prefer: str | None, precision: str, max_batch: int,
                     cache_dir: str | Path | None, threads: int) -> Predictor:
    rec = read_record(path)
    if rec.get("format") != FORMAT:
        raise UserError(f"{path} is not a model file")
    meta = {k: v for k, v in rec.items() if k != "state_dict"}
    order = [prefer] if prefer else list(RUNTIMES)
    for rt in order:
        reason = _why_not(rt)
        if reason:
            if prefer:
                raise Unavailable(f"runtime {rt} requested but unavailable: {reason}")
            log.info("runtime %s skipped: %s", rt, reason)
            continue
        model = model_from_record(rec).freeze()
        if rt == "tensorrt":
            fn = _tensorrt_fn(model, rec, precision, max_batch, cache_dir)
        elif rt == "onnxruntime":
            fn = _ort_fn(_ort_session(_cached_onnx(model, rec, cache_dir), threads))
        else:
            dev = "cuda" if rt == "torch-cuda" else "cpu"
            fn = _torch_fn(model.to(dev), dev)
        log.info("runtime: %s (model %s)", rt, rec["model_id"])
        return Predictor(fn, rt, meta)
    raise Unavailable("no runtime available")  # unreachable: torch-cpu always works


def _cached_onnx(model: Any, rec: dict[str, Any], cache_dir: str | Path | None) -> str:
    """The frozen model as a checked ONNX file, exported once per model id and torch version (the
    export takes seconds; a node restart should not)."""
    from edge.model.export import export_meta, export_onnx

    cache = EngineCache(cache_dir)
    key = f"{rec['model_id']}-onnx-{hashlib.sha256(torch.__version__.encode()).hexdigest()[:8]}"
    hit = cache.lookup(key)
    if hit is None:
        log.info("exporting %s to ONNX for onnxruntime (once; cached in %s)", rec["model_id"], cache.dir)
        hit = cache.store(key, lambda p: export_onnx(model, rec["config"], export_meta(rec, "onnx"), p),
                          {"model": rec["model_id"], "torch": torch.__version__})
    return str(hit)


def _tensorrt_fn(model: Any, rec: dict[str, Any], precision: str, max_batch: int,
                 cache_dir: str | Path | None) -> Any:
    import torch_tensorrt

    cache = EngineCache(cache_dir)
    key = engine_key(device_fingerprint(), rec["model_id"], precision, max_batch)
    hit = cache.lookup(key)
    if hit is None:
        log.info("building TensorRT %s engine for %s (first use on this device)", precision, rec["model_id"])
        trt_mod = compile_tensorrt(model, rec["config"], precision, max_batch)
        x = torch.zeros(1, rec["config"]["in_chans"], rec["config"]["img_size"], rec["config"]["img_size"]).cuda()
        hit = cache.store(key, lambda p: torch_tensorrt.save(trt_mod, str(p), output_format="exported_program",
                                                             arg_inputs=[x]),
                          {**device_fingerprint(), "model": rec["model_id"], "precision": precision})
    else:
        log.info("TensorRT engine from cache: %s", hit.name)
    module = torch.export.load(str(hit)).module()

    def run(x: np.ndarray) -> np.ndarray:
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), max_batch):
                outs.append(module(torch.from_numpy(x[i:i + max_batch]).cuda()).float().cpu().numpy())
        return np.concatenate(outs)
    return run
