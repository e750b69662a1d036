"""The training loop of the SOA classifier: `fit`, `predict` and their distributed helpers (torch).

Kept apart from `edge.train` (the command, its configs and argument checks) so that a bad argument to
`facesleuth train` or `eval` is refused before torch is imported (about 1.5 s on a 2-core machine).
What the loop does (optimiser groups, schedule, flips, determinism, resume, DDP, global BatchNorm) is in
edge.train's docstring.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edge.errors import Unavailable, UserError
from edge.train import TrainConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------------

class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all DDP ranks.

    Sums and sums of squares are all-reduced with an autograd-aware all_reduce, so gradients flow
    through the shared statistics as they would in one process. Outside a process group it is plain
    BatchNorm2d (same state dict, so the model file does not know it was used).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for GlobalBatchNorm in place (parameters and buffers kept)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm  # same fields, only forward differs
    return model


def dist_init(device: str) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=_dt.timedelta(seconds=300))
    return dist.get_rank(), dist.get_world_size()


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    config: TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Unavailable("train: CUDA requested but torch sees no GPU (torch.cuda.is_available() is False); "
                              "use --device cpu")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    elif name != "cpu":
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, scaled so their mean over the samples is 1 (absent classes get 0)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    w *= len(labels) / float((w[labels]).sum())
    return torch.tensor(w, dtype=torch.float32)


def predict(model: nn.Module, x: np.ndarray, batch: int = 256, device: torch.device | None = None) -> np.ndarray:
    """Class probabilities (N, K) float32 of inputs x (N, C, S, S), eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.softmax(model(torch.from_numpy(x[i:i + batch]).to(device)).float(), 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _flip(x: torch.Tensor, mask: torch.Tensor, channels: Sequence[str]) -> torch.Tensor:
    """Mirror samples where mask is True: x -> x[..., ::-1], and u -> -u (motion mirrors too)."""
    if not bool(mask.any()):
        return x
    x = x.clone()
    m = x[mask].flip(-1)
    if "u" in channels:
        m[:, list(channels).index("u")] *= -1
    x[mask] = m
    return x


def _lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def fit(x: np.ndarray, y: np.ndarray, classes: Sequence[str], cfg: TrainConfig, *,
        x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
        checkpoint: str | Path | None = None, resume: bool = False, progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a network from scratch (or resume) on inputs x (N, C, S, S) float32 and labels y (N,) int64.

    Runs as one process or as one rank of a torchrun job (module docstring). Returns the trained model
    (on CPU, eval mode, plain BatchNorm) and the per-epoch history (loss, accuracy, angles, validation).
    `on_epoch(record)` is called after each epoch's checkpoint is written.
    """
    from edge.data.metrics import scores
    from edge.model import create_model
    from edge.model.angles import sweep_initial_angle
    from edge.progress import Progress

    # Deterministic kernels; cuBLAS needs its workspace fixed before the first CUDA call to be so.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = resolve_device(cfg.device)
    rank, world = dist_init(str(device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    n, k = len(x), len(classes)
    if n == 0 or len(y) != n:
        raise UserError(f"train: need as many labels as inputs and at least one sample (got {n} and {len(y)})")
    batch = min(cfg.batch, n) // world * world
    if batch < world or batch < 2:
        raise UserError(f"train: batch {cfg.batch} with {world} processes and {n} samples is too small")
    steps_per_epoch = n // batch
    amp = cfg.amp and device.type == "cuda"

    _seed_all(cfg.seed)  # the same initial weights on every rank
    model = create_model(cfg.arch, in_chans=x.shape[1], img_size=x.shape[-1], classes=tuple(classes),
                         angle=cfg.angle_init, drop=cfg.drop, **cfg.model_kwargs)
    weights = class_weights(y, k).to(device)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, np.int64))
    channels = _channels_of(x.shape[1])

    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    state = None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise UserError(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("config") != config_key(cfg, n, x.shape):
            raise UserError(f"--resume: {ckpt} was written for other data or settings; start afresh or match them")
        model.load_state_dict(state["model"])
        start, history = int(state["epoch"]) + 1, list(state["history"])
        log.info("resuming from %s after epoch %d", ckpt, start)
    elif cfg.angle_sweep and model.angle_parameters():
        g = torch.Generator().manual_seed(cfg.seed)
        idx = torch.randperm(n, generator=g)[: min(n, 4 * batch)]
        batches = [(xt[idx[i:i + batch]], yt[idx[i:i + batch]]) for i in range(0, len(idx), batch)]
        best, sweep = sweep_initial_angle(model, batches, lambda o, t: F.cross_entropy(o, t, weight=weights.cpu()))
        model.set_angles(best)
        log.info("angle sweep: start all stages at %.0f deg (%s)", best,
                 ", ".join(f"{a:.0f}: {s:.3f}" for a, s in sweep.items()))

    model.to(device)
    if world > 1:
        use_global_batchnorm(model)
        net: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = model
    angle_ids = {id(p) for p in model.angle_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in angle_ids],
               "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if angle_ids:
        groups.append({"params": model.angle_parameters(), "lr": cfg.angle_lr, "weight_decay": cfg.angle_wd})
    opt = torch.optim.AdamW(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])

    best_epoch, best_uf1 = (state or {}).get("best_epoch", -1), (state or {}).get("best_uf1", -1.0)
    best_state = (state or {}).get("best_model")
    # Nested bars: the epochs, and inside each the batches (inside `eval`'s bar over the folds).
    with Progress(cfg.epochs, "train: epochs", enabled=progress and rank == 0, initial=start) as epochs_bar:
        for epoch in range(start, cfg.epochs):
            t0 = time.monotonic()
            # Everything random in this epoch comes from (seed, epoch): a resumed run repeats it exactly.
            g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            perm = torch.randperm(n, generator=g)
            flips = (torch.rand(n, generator=g) < 0.5) if cfg.flip else torch.zeros(n, dtype=torch.bool)
            torch.manual_seed(cfg.seed * 7919 + epoch + 1)  # dropout
            net.train()
            loss_sum, correct, seen = 0.0, 0, 0
            per_rank = batch // world
            with Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}: batches",
                          enabled=progress and rank == 0) as bar:
                for b in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + b
                    for grp, base in zip(opt.param_groups, base_lrs, strict=True):
                        grp["lr"] = base * _lr_factor(step, steps_per_epoch, cfg)
                    idx = perm[b * batch:(b + 1) * batch][rank * per_rank:(rank + 1) * per_rank]
                    xb = _flip(xt[idx], flips[idx], channels).to(device, non_blocking=True)
                    yb = yt[idx].to(device, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        out = net(xb)
                        per = F.cross_entropy(out.float(), yb, reduction="none") * weights[yb]
                        # Normalised by the GLOBAL batch and scaled by world size: DDP's gradient mean over
                        # ranks then equals the gradient of the global-batch mean loss.
                        loss = per.sum() * world / batch
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    loss_sum += float(per.sum().detach())
                    correct += int((out.argmax(1) == yb).sum())
                    seen += len(yb)
                    bar.update(1, loss=loss_sum / seen)
            loss_sum, correct, seen = _all_sum([loss_sum, correct, seen], device)
            rec: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / seen, "acc": correct / seen,
                                   "angles": [round(a, 3) for a in model.angles()],
                                   "lr": opt.param_groups[0]["lr"]}
            if x_val is not None and y_val is not None and len(y_val):
                pv = predict(model, x_val, device=device).argmax(1)
                s = scores(y_val, pv, k)
                rec["val"] = {"uf1": s["uf1"], "uar": s["uar"], "accuracy": s["accuracy"]}
                if cfg.select == "val" and s["uf1"] > best_uf1:
                    best_uf1, best_epoch = s["uf1"], epoch + 1
                    best_state = {kk: v.detach().cpu().clone() for kk, v in model.state_dict().items()}
            rec["time_s"] = round(time.monotonic() - t0, 2)
            history.append(rec)
            if rank == 0:
                val = f" val_uf1 {rec['val']['uf1']:.3f} val_uar {rec['val']['uar']:.3f}" if "val" in rec else ""
                ang = " angles " + " ".join(f"{a:.1f}" for a in rec["angles"]) if rec["angles"] else ""
                log.info("epoch %d/%d loss %.4f acc %.3f%s%s (%.1f s)", epoch + 1, cfg.epochs, rec["loss"], rec["acc"],
                         val, ang, rec["time_s"])
            if ckpt is not None:
                if rank == 0:
                    _save_checkpoint(ckpt, {
                        "config": config_key(cfg, n, x.shape), "epoch": epoch, "history": history,
                        "model": {kk: v.detach().cpu() for kk, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                        "best_epoch": best_epoch, "best_uf1": best_uf1, "best_model": best_state})
                barrier()
            if on_epoch is not None:
                on_epoch(rec)
            epochs_bar.update(1, loss=rec["loss"], acc=rec["acc"],
                              **({"val_uf1": rec["val"]["uf1"]} if "val" in rec else {}))

    if cfg.select == "val":
        if best_state is None:
            raise UserError("--select val needs a validation set (--val-frac > 0)")
        model.load_state_dict(best_state)
    else:
        best_epoch = cfg.epochs
    for m in model.modules():  # back to the plain class: the saved model is an ordinary network
        if type(m) is GlobalBatchNorm:
            m.__class__ = nn.BatchNorm2d
    return TrainResult(model.cpu().eval(), history, best_epoch, cfg)


def _channels_of(c: int) -> tuple[str, ...]:
    return ("u", "v", "strain", "apex")[:c]


def config_key(cfg: TrainConfig, n: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (hyper-parameters and data size; not the device)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("device", "amp")}
    return json.loads(json.dumps({**d, "n": n, "shape": list(shape[1:])}, default=str))
