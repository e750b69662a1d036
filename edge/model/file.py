"""The model file: ONE torch.save'd dict of plain data (tensors, str, int, float, list, dict).

    {"format": "facesleuth-model", "version": 1,
     "name": "soa",                       # registry name for create_model()
     "config": {...},                     # NetConfig.to_dict(): attn, in_chans, img_size, classes, widths, ...
     "state_dict": {...},                 # training-form weights (freeze() is applied at load for deployment)
     "meta": {"classes": [...], "input": {"channels": ["u", "v", "strain"], "size": 64},
              "flow": {"backend": "tvl1", "params": {...}}, "preprocessing": {...},
              "training": {...}, "metrics": {...}, "angles_deg": [...], "created": "...", ...},
     "model_id": "soa-<12 hex>"}          # hash of the weights + config: keys engine caches, tags events

Nothing in it needs a custom class to unpickle, so `torch.load(path, weights_only=True)` reads it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from edge.errors import UserError
from edge.model.net import SOANet, create_model

log = logging.getLogger(__name__)

FORMAT = "facesleuth-model"
VERSION = 1
DEFAULT_CHANNELS = ("u", "v", "strain")


def model_hash(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """12 hex digits of SHA-256 over the config and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(repr(sorted(config.items())).encode())
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


def build_record(model: SOANet, meta: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
    """The dict that save_model() writes (training-form weights only)."""
    if model.frozen:
        raise ValueError("save the training form, not a frozen model (freeze() is applied at load)")
    config = model.cfg.to_dict()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = dict(meta or {})
    meta.setdefault("classes", list(model.classes))
    meta.setdefault("input", {"channels": list(DEFAULT_CHANNELS[: model.cfg.in_chans])
                              + ["apex"] * max(0, model.cfg.in_chans - 3), "size": model.cfg.img_size})
    meta.setdefault("flow", {"backend": "unknown", "params": {}})
    meta.setdefault("preprocessing", {})
    meta.setdefault("training", {})
    meta.setdefault("metrics", {})
    meta["angles_deg"] = [round(a, 4) for a in model.angles()]
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    name = name or config["attn"]
    return {"format": FORMAT, "version": VERSION, "name": name, "config": config, "state_dict": state,
            "meta": meta, "model_id": f"{name}-{model_hash(state, config)}"}


def save_model(model: SOANet, path: str | Path, meta: dict[str, Any] | None = None,
               name: str | None = None) -> str:
    """Write the model file atomically (temp file + rename); returns its model id."""
    rec = build_record(model, meta, name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    buf = io.BytesIO()
    torch.save(rec, buf)
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    log.info("saved model %s to %s", rec["model_id"], path)
    return rec["model_id"]


def read_record(path: str | Path) -> dict[str, Any]:
    """Load and check a model file's dict (weights_only=True: no code runs while loading)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        rec = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's bad input
        raise UserError(f"{path} is not a FaceSleuth model file ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise UserError(f"{path} is not a FaceSleuth model file (no '{FORMAT}' header)")
    if rec.get("version", 0) > VERSION:
        raise UserError(f"{path} has model-file version {rec['version']}; this build reads <= {VERSION}")
    for key in ("name", "config", "state_dict", "meta", "model_id"):
        if key not in rec:
            raise UserError(f"{path} lacks the '{key}' entry")
    return rec


def model_from_record(rec: dict[str, Any]) -> SOANet:
    """Rebuild the network (training form, eval mode) from a record."""
    try:
        model = create_model(rec["name"], **rec["config"])
        model.load_state_dict(_current_layout(rec["state_dict"], model.state_dict()))
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"model file does not match this build's network: {e}") from None
    return model.eval()


def _current_layout(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept files from before the attention bottleneck moved from Conv1d (out, in, 1) to Linear (out, in)
    weights (same numbers, one trailing singleton axis); any other mismatch still fails in load_state_dict."""
    out = dict(state)
    for k, v in state.items():
        if k in own and v.dim() == 3 and v.shape[-1] == 1 and tuple(own[k].shape) == tuple(v.shape[:-1]):
            out[k] = v[..., 0]
    return out


def load_model(path: str | Path, frozen: bool = False) -> tuple[SOANet, dict[str, Any]]:
    """Open a model file. Returns (model in eval mode, frozen if asked; the record without weights)."""
    rec = read_record(path)
    model = model_from_record(rec)
    if frozen:
        model.freeze()
    info = {k: v for k, v in rec.items() if k != "state_dict"}
    return model, info
