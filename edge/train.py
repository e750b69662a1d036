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
of the global batch (GlobalBatchNorm in edge.model.fit; torch's SyncBatchNorm is GPU-only), so N processes give
the same result as one process on the same data. Mixed precision (fp16 autocast + GradScaler) on CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.data.preprocess import PreprocessSpec, default_cache_dir, precompute
from edge.data.sources import SampleSet, is_real, load_source
from edge.errors import UserError
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
    from edge.model.variants import model_names

    known = model_names()
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

    d, cfg = resolve_args(args)
    require("train", "train", "matplotlib")  # its angles plot comes after the training, checked here
    if args.resume and not (args.checkpoint or args.out.with_suffix(".ckpt")).is_file():
        raise UserError(f"--resume: no checkpoint {args.checkpoint or args.out.with_suffix('.ckpt')}")
    if args.out.is_dir() or (args.out.parent != Path("") and args.out.parent.is_file()):
        raise UserError(f"--out {args.out}: not a file path")
    # Every argument is checked: only now the training loop, and torch with it.
    import torch
    import torch.distributed as dist

    from edge.model.file import save_model
    from edge.model.fit import barrier, config_key, dist_init, fit, resolve_device
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_world > 1:  # several ranks on one box: share its cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    cfg = dataclasses.replace(cfg, device=str(resolve_device(cfg.device)))
    device = cfg.device
    progress = not args.quiet
    spec = PreprocessSpec(backend=d.flow, size=d.size, channels=d.channels).resolved()
    data = load_source(d.data, n=d.n, seed=cfg.seed, class_set=d.class_set, progress=progress and rank == 0)
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    # One rank computes the features (through the cache); the others then read them from it.
    if rank != 0 and cache is not None:
        dist_init(device)
        barrier()
    x = features(data, spec, cache, args.workers, progress=progress and rank == 0)
    if rank == 0 and cache is not None and world > 1:
        dist_init(device)
        barrier()
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
                             "config": config_key(cfg, len(fit_idx), x.shape), "preset": args.preset,
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


