"""`facesleuth train`: fit the SOA classifier on onset/apex pairs and write one model file.

    facesleuth train --data synth:lab200+webcam30 --n 2000 --out model.pt
    facesleuth train --preset default --out edge/weights/soa_synthetic_3c.pt     # the shipped weights
    torchrun --nproc_per_node 2 -m edge train ...                                 # DistributedDataParallel

Data: `synth:PRESET[+PRESET...]` draws `--n` samples from the synthetic generator (edge.data.synth),
split evenly over the domain presets, each preset with its own seed (so no synthetic person appears in
two domains); or a `.npz` written by `facesleuth synth samples`. Pairs go through THE preprocessing of
the live pipeline (edge.data.preprocess: flow backend + parameters, strain, resize, normalisation),
cached on disk and computed in parallel; the spec is recorded in the model file.

Training: AdamW with the SOA angle vectors in their own group (FaceSleuth's reference code gives them a
larger learning rate than the rest, 5e-3, and weight decay 0.2; decay on a free 2-vector only shrinks its
norm, which speeds the angle up later), cosine schedule with a short warm-up, class-balanced cross
entropy, horizontal-flip augmentation (u negated). Angles start at the ~90 deg prior (the paper's finding
on real data) or at the best of a short coarse sweep (`--angle-sweep`, edge.model.angles). A fixed
schedule: the last epoch is the model (no test data is looked at); `--val-frac` carves a validation set
from the training SUBJECTS and only logs it unless `--select val` picks the best validation epoch.

Determinism and resume: every epoch re-seeds its own shuffling, augmentation and dropout from (seed,
epoch), and a checkpoint after each epoch holds the model, optimiser, schedule and history, so
`--resume` continues exactly as if never interrupted.

Distributed: under torchrun (WORLD_SIZE > 1) each rank takes its slice of every global batch; gradients
are averaged by DistributedDataParallel (gloo on CPU, NCCL on CUDA) and BatchNorm uses the statistics
of the global batch (GlobalBatchNorm below; torch's SyncBatchNorm is GPU-only), so N processes give
the same result as one process on the same data. Mixed precision (fp16 autocast + GradScaler) on CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from edge.data.preprocess import PreprocessSpec, default_cache_dir, precompute
from edge.data.sources import SampleSet, is_real, load_source
from edge.errors import Unavailable, UserError
from edge.runtime.params import add_config_arguments, config_values, knob, with_set

log = logging.getLogger(__name__)

# Named recipes: values for any field of DataConfig or TrainConfig. The shipped default weights are
# "default", nothing else: `facesleuth train --preset default --out F`.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"data": "synth:lab200+hs100+edge60+webcam30", "n": 1600, "arch": "soa", "epochs": 12,
                "batch": 64, "lr": 2e-3, "seed": 0, "size": 64, "flow": "dis"},
}


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

@dataclass
class DataConfig:
    """What `facesleuth train` learns from and how pairs become model inputs (recorded in the model file)."""

    data: str = knob("", "synth:PRESET[+PRESET...] (e.g. synth:lab200+webcam30), a samples .npz, or licensed "
                     "datasets DATASET:ROOT[+DATASET:ROOT...] (casme2, samm, smic, casme3, mmew)")
    n: int = knob(1200, "synthetic samples in all", min=1)
    size: int = knob(64, "model input size", "px", min=16)
    flow: str = knob("dis", "optical flow backend for preprocessing (recorded in the model)")
    channels: tuple[str, ...] = knob(("u", "v", "strain"), "input channels (u,v,strain[,apex])")
    class_set: str = knob("composite", "label set", choices=("composite", "casme2"))
    val_frac: float = knob(0.0, "validation subjects carved from the training subjects", "fraction",
                           min=0.0, max=1.0)


def features(data: SampleSet, spec: PreprocessSpec, cache: str | Path | None, workers: int | None,
             progress: bool = True) -> np.ndarray:
    """Model inputs (N, C, S, S) float32 for a sample set (parallel, cached)."""
    return precompute(data.onset, data.apex, spec, cache_dir=cache, workers=workers, progress=progress)


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


def _dist_init(device: str) -> tuple[int, int]:
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


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Hyper-parameters of `fit` (recorded in the model file). Learning rates per step; angles in degrees."""

    arch: str = knob("soa", "network: soa, cva, coord, none")
    epochs: int = knob(20, "training epochs (a fixed schedule)", min=1)
    batch: int = knob(64, "GLOBAL batch size (split over torchrun processes)", "samples", min=2)
    lr: float = knob(2e-3, "learning rate of all but the angles", "per step", min=0.0)
    weight_decay: float = knob(0.05, "AdamW weight decay of all but the angles", min=0.0)
    angle_lr: float = knob(5e-3, "learning rate of the SOA angle vectors", "per step", min=0.0)
    angle_wd: float = knob(0.2, "weight decay of the SOA angle vectors", min=0.0)
    warmup: int = knob(1, "linear learning-rate warm-up", "epochs", min=0)
    angle_init: float = knob(90.0, "initial SOA angle", "deg")
    angle_sweep: bool = knob(False, "start from the best of a short coarse angle sweep")
    drop: float = knob(0.1, "dropout before the classifier", min=0.0, max=1.0)
    flip: bool = knob(True, "horizontal-flip augmentation (u negated)")
    seed: int = knob(0, "seed of the data, initial weights, shuffling and augmentation")
    device: str = knob("auto", "auto, cpu or cuda")
    amp: bool = knob(True, "mixed precision (fp16 autocast + GradScaler), CUDA only")
    select: str = knob("last", "last epoch (fixed schedule) or best validation UF1", choices=("last", "val"))
    model_kwargs: dict[str, Any] = knob({}, "extra create_model options (stem, widths...)")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    config: TrainConfig


def _device(name: str) -> torch.device:
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
    device = _device(cfg.device)
    rank, world = _dist_init(str(device))
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
        if state.get("config") != _cfg_key(cfg, n, x.shape):
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
                        "config": _cfg_key(cfg, n, x.shape), "epoch": epoch, "history": history,
                        "model": {kk: v.detach().cpu() for kk, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                        "best_epoch": best_epoch, "best_uf1": best_uf1, "best_model": best_state})
                _barrier()
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


def _cfg_key(cfg: TrainConfig, n: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (hyper-parameters and data size; not the device)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("device", "amp")}
    return json.loads(json.dumps({**d, "n": n, "shape": list(shape[1:])}, default=str))


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------

def plot_history(histories: dict[str, list[dict[str, Any]]], path: str | Path, title: str = "") -> Path | None:
    """PNG of SOA angle trajectories (deg per stage vs epoch) and the training loss, one line set per run."""
    if not any(h and h[0].get("angles") is not None for h in histories.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    lo, hi = 90.0, 90.0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, (name, hist) in enumerate(histories.items()):
        ep = [h["epoch"] for h in hist]
        ang = np.array([h["angles"] for h in hist], dtype=np.float64)
        if ang.size:
            lo, hi = min(lo, float(ang.min())), max(hi, float(ang.max()))
        for s in range(ang.shape[1] if ang.ndim == 2 else 0):
            ax_a.plot(ep, ang[:, s], color=colours[s % len(colours)], alpha=0.8,
                      label=f"stage {s + 1}" if r == 0 else None)
        ax_l.plot(ep, [h["loss"] for h in hist], label=name if len(histories) > 1 else "train loss")
    ax_a.axhline(90, color="grey", lw=0.8, ls="--")
    ax_a.set(xlabel="epoch", ylabel="SOA angle (deg, 90 = vertical)", title="learned angles",
             ylim=(max(0.0, lo - 10), min(180.0, hi + 10)))  # the drift, not the whole half-turn
    ax_l.set(xlabel="epoch", ylabel="loss", title="training loss")
    for ax in (ax_a, ax_l):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    from edge.data.metrics import save_figure

    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (flags given as well override it); "
                   "'default' reproduces the shipped weights")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    add_config_arguments(p, DataConfig)
    add_config_arguments(p, TrainConfig)
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default OUT with .ckpt)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--cache", type=Path, help="feature cache directory (default ~/.cache/facesleuth/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--workers", type=non_negative_int,
                   help="preprocessing processes (default: CPU count; 0 or 1 = in this process)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def resolve_args(args: argparse.Namespace) -> tuple[DataConfig, TrainConfig]:
    """Field defaults, under the preset's values, under the flags given."""
    preset = PRESETS[args.preset] if args.preset else {}
    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(preset) - data_fields - train_fields
    if unknown:
        raise UserError(f"preset {args.preset!r} sets unknown field(s) {sorted(unknown)}")
    data = with_set(with_set(DataConfig(), {k: v for k, v in preset.items() if k in data_fields}),
                    config_values(args, DataConfig))
    cfg = with_set(with_set(TrainConfig(), {k: v for k, v in preset.items() if k in train_fields}),
                   config_values(args, TrainConfig))
    if not data.data:
        raise UserError("train: give --data (synth:PRESET or a samples .npz) or --preset")
    check_arch(cfg.arch)
    if cfg.select == "val" and data.val_frac <= 0:
        raise UserError("--select val needs a validation set: give --val-frac (e.g. 0.2)")
    return data, cfg


def check_arch(names: str | list[str], flag: str = "--arch") -> None:
    """UserError unless every network name is registered (checked before any data is made)."""
    from edge.model import list_models

    known = list_models()
    bad = [a for a in ([names] if isinstance(names, str) else names) if a not in known]
    if bad or not names:
        raise UserError(f"{flag}: unknown network {', '.join(bad) or '(none given)'} (known: {', '.join(known)})")


def _int_at_least(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"{v} is not >= {least}")
    return v


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def main(args: argparse.Namespace) -> int:
    from edge.data.protocols import validation_split
    from edge.extras import require
    from edge.model.file import save_model

    d, cfg = resolve_args(args)
    require("train", "train", "matplotlib")  # its angles plot comes after the training, checked here
    if args.resume and not (args.checkpoint or args.out.with_suffix(".ckpt")).is_file():
        raise UserError(f"--resume: no checkpoint {args.checkpoint or args.out.with_suffix('.ckpt')}")
    if args.out.is_dir() or (args.out.parent != Path("") and args.out.parent.is_file()):
        raise UserError(f"--out {args.out}: not a file path")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > 1:  # several ranks on one box: share its cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    cfg = dataclasses.replace(cfg, device=str(_device(cfg.device)))
    device = cfg.device
    progress = not args.quiet
    spec = PreprocessSpec(backend=d.flow, size=d.size, channels=d.channels).resolved()
    data = load_source(d.data, n=d.n, seed=cfg.seed, class_set=d.class_set, progress=progress and rank == 0)
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    # One rank computes the features (through the cache); the others then read them from it.
    if rank != 0 and cache is not None:
        _dist_init(device)
        _barrier()
    x = features(data, spec, cache, args.workers, progress=progress and rank == 0)
    if rank == 0 and cache is not None and world > 1:
        _dist_init(device)
        _barrier()
    idx = np.arange(len(data))
    fit_idx, val_idx = (validation_split(idx, data.subjects, d.val_frac, seed=cfg.seed)
                        if d.val_frac > 0 else (idx, idx[:0]))
    out: Path = args.out
    ckpt = args.checkpoint or out.with_suffix(".ckpt")
    res = fit(x[fit_idx], data.labels[fit_idx], data.classes, cfg,
              x_val=x[val_idx] if len(val_idx) else None, y_val=data.labels[val_idx] if len(val_idx) else None,
              checkpoint=ckpt, resume=args.resume, progress=progress)
    if rank == 0:
        last = res.history[-1]
        meta = {**spec.to_meta(), "classes": data.classes,
                "training": {"data": d.data, "n": len(data), "n_fit": int(len(fit_idx)), "n_val": int(len(val_idx)),
                             "domains": sorted(set(data.domains)), "subjects": len(set(data.subjects)),
                             "real_data": is_real(d.data),
                             "config": _cfg_key(cfg, len(fit_idx), x.shape), "preset": args.preset,
                             "selected_epoch": res.best_epoch, "world_size": world,
                             "angles_history": [h["angles"] for h in res.history],
                             "history": res.history},
                "metrics": {"train_loss": last["loss"], "train_acc": last["acc"], **(
                    {"val": last["val"]} if "val" in last else {})}}
        model_id = save_model(res.model, out, meta=meta, name=cfg.arch)
        png = plot_history({cfg.arch: res.history}, out.with_suffix(".angles.png"),
                           title=f"{model_id} ({d.data})")
        print(f"model {model_id} -> {out}" + (f" (angles plot {png})" if png else ""))
        print("angles (deg): " + (" ".join(f"{a:.1f}" for a in res.model.angles()) or "none"))
        ckpt.unlink(missing_ok=True)  # finished: the checkpoint only serves an interrupted run
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


