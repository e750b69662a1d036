"""`facesleuth eval`: train-and-test under a protocol, or test a trained model, and report.

    facesleuth eval --protocol domain --data synth:lab200+hs100+edge60+webcam30 --test-domain webcam30 \\
        --arch none,cva,coord,soa --seeds 0,1,2 --out runs/ablation          # the ablation (docs/ablation.md)
    facesleuth eval --protocol loso --data casme2:/data/CASME2 --out runs/casme2
    facesleuth eval --protocol megc2019 --data smic:/d/SMIC+casme2:/d/CASME2+samm:/d/SAMM --out runs/megc
    facesleuth eval --model edge/weights/soa_synthetic_3c.pt --data synth:webcam30 --seed 7 --out runs/w

Protocols (edge.data.protocols): `domain` (train on every other domain, test on `--test-domain`, no
person on both sides), `loso` (one fold per subject, namespaced by dataset), `lodo` (leave one dataset
out; for synthetic data the domains play the datasets), `megc2019` (3-class composite, LOSO over the
SMIC + CASME II + SAMM subjects). Every fold is checked to share no subject between train and test.
No model selection on a test fold: the training schedule is fixed (last epoch), or `--val-frac` carves a
validation set from the fold's TRAINING subjects (`--select val` then picks its best epoch).

Scores are UF1, UAR and accuracy over the pooled predictions of all folds (edge.data.metrics), per
architecture and seed, then mean +- std over seeds. Written to `--out`: report.json (everything),
folds.tsv (one row per architecture, seed and fold), summary.md (the table), confusion_<arch>.png
(pooled over folds and seeds) and angles.png (SOA angle trajectories of every run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge.data.preprocess import PreprocessSpec, default_cache_dir
from edge.data.sources import SampleSet, load_source
from edge.errors import UserError
from edge.runtime.params import add_config_arguments, config_values, with_set
from edge.train import DataConfig, TrainConfig, features, plot_history

log = logging.getLogger(__name__)

PROTOCOLS = ("domain", "loso", "lodo", "megc2019")
# Every training hyper-parameter has its `facesleuth train` flag here too, but arch and seed: comma lists
# of those (--arch, --seeds) are the runs; --seed is the data seed.
EVAL_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("arch", "seed"))


def make_folds(protocol: str, data: SampleSet, test_domain: str | None = None) -> list[Any]:
    """The folds of a protocol over a sample set (domain = dataset name for real data)."""
    from edge.data import protocols as P

    if protocol == "domain":
        if not test_domain:
            raise UserError("--protocol domain needs --test-domain (e.g. webcam30)")
        folds = [P.held_out_domain(data.domains, data.subjects, test_domain)]
    elif protocol == "loso":
        folds = P.loso(data.subjects, data.domains)
    elif protocol == "lodo":
        folds = P.lodo(data.domains)
    elif protocol == "megc2019":
        folds = P.megc2019(data.subjects, data.domains, [data.classes[i] for i in data.labels])
    else:
        raise UserError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    keys = [f"{d}/{s}" for d, s in zip(data.domains, data.subjects, strict=True)]
    try:
        P.check_disjoint(folds, keys)
    except ValueError as e:  # a protocol bug must never produce a number
        raise UserError(f"leak: {e}") from None
    return folds


def _mean_std(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def run_protocol(data: SampleSet, x: np.ndarray, folds: list[Any], archs: list[str], seeds: list[int],
                 base: TrainConfig, val_frac: float = 0.0, progress: bool = True) -> dict[str, Any]:
    """Train and test every (architecture, seed, fold); pooled scores per (architecture, seed)."""
    from edge.data.metrics import scores
    from edge.data.protocols import validation_split
    from edge.progress import Progress

    k = len(data.classes)
    runs, rows, histories = [], [], {}
    from edge.model.fit import fit, predict  # torch: imported once the arguments are checked

    # The outer bar: fold k/N over every (architecture, seed, fold); fit() nests its epochs and batches in it.
    with Progress(len(archs) * len(seeds) * len(folds), "eval: folds", enabled=progress) as folds_bar:
        for arch in archs:
            for seed in seeds:
                y_true, y_pred = [], []
                for fold in folds:
                    if val_frac > 0:
                        fit_idx, val_idx = validation_split(fold.train, data.subjects, val_frac, seed=seed)
                    else:
                        fit_idx, val_idx = fold.train, fold.train[:0]
                    cfg = TrainConfig(**{**base.__dict__, "arch": arch, "seed": seed})
                    log.info("%s seed %d fold %s: %d train (%d val) / %d test", arch, seed, fold.name,
                             len(fit_idx), len(val_idx), len(fold.test))
                    res = fit(x[fit_idx], data.labels[fit_idx], data.classes, cfg,
                              x_val=x[val_idx] if len(val_idx) else None,
                              y_val=data.labels[val_idx] if len(val_idx) else None, progress=progress)
                    pred = predict(res.model, x[fold.test]).argmax(1)
                    s = scores(data.labels[fold.test], pred, k)
                    rows.append({"arch": arch, "seed": seed, "fold": fold.name, "n_train": int(len(fit_idx)),
                                 "n_val": int(len(val_idx)), "n_test": int(len(fold.test)),
                                 "train_subjects": len({data.subjects[i] for i in fit_idx}),
                                 "test_subjects": sorted({data.subjects[i] for i in fold.test}),
                                 "uf1": s["uf1"], "uar": s["uar"], "accuracy": s["accuracy"],
                                 "epoch": res.best_epoch, "angles": res.model.angles()})
                    histories[f"{arch} s{seed} {fold.name}"] = res.history
                    folds_bar.update(1, fold=f"{arch} s{seed} {fold.name}", uf1=s["uf1"])
                    y_true.append(data.labels[fold.test])
                    y_pred.append(pred)
                pooled = scores(np.concatenate(y_true), np.concatenate(y_pred), k)
                runs.append({"arch": arch, "seed": seed, **pooled})
                log.info("%s seed %d: pooled UF1 %.3f UAR %.3f acc %.3f", arch, seed, pooled["uf1"], pooled["uar"],
                         pooled["accuracy"])
    summary = []
    for arch in archs:
        rs = [r for r in runs if r["arch"] == arch]
        angles = [row["angles"] for row in rows if row["arch"] == arch and row["angles"]]
        entry = {"arch": arch, "seeds": len(rs)}
        for m in ("uf1", "uar", "accuracy"):
            entry[m], entry[m + "_std"] = _mean_std([r[m] for r in rs])
        entry["angles_mean"] = np.mean(angles, 0).round(2).tolist() if angles else []
        entry["angles_std"] = np.std(angles, 0).round(2).tolist() if angles else []
        entry["confusion"] = np.sum([r["confusion"] for r in rs], 0).tolist()
        summary.append(entry)
    return {"runs": runs, "folds": rows, "summary": summary, "histories": histories}


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| attention | seeds | UF1 (mean ± std) | UAR (mean ± std) | accuracy | learned angles (deg, stage 1-4) |",
             "|---|---|---|---|---|---|"]
    for e in summary:
        ang = ", ".join(f"{m:.1f}±{s:.1f}" for m, s in zip(e["angles_mean"], e["angles_std"], strict=True)) or "-"
        lines.append(f"| {e['arch']} | {e['seeds']} | {e['uf1']:.3f} ± {e['uf1_std']:.3f} | "
                     f"{e['uar']:.3f} ± {e['uar_std']:.3f} | {e['accuracy']:.3f} ± {e['accuracy_std']:.3f} | {ang} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, report: dict[str, Any], classes: list[str]) -> list[Path]:
    """report.json, folds.tsv, summary.md, confusion PNGs and the angle plot."""
    from edge.data.metrics import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "folds.tsv", out / "summary.md"]
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    cols = ["arch", "seed", "fold", "n_train", "n_val", "n_test", "train_subjects", "uf1", "uar", "accuracy", "epoch",
            "angles"]
    with open(out / "folds.tsv", "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in report["folds"]:
            f.write("\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else
                              " ".join(f"{a:.1f}" for a in r[c]) if c == "angles" else str(r[c]) for c in cols) + "\n")
    (out / "summary.md").write_text(summary_markdown(report["summary"]))
    for e in report["summary"]:
        written.append(plot_confusion(np.array(e["confusion"]), classes, out / f"confusion_{e['arch']}.png",
                                      title=f"{e['arch']}: UF1 {e['uf1']:.3f} UAR {e['uar']:.3f} (pooled)"))
    png = plot_history(report.get("histories", {}), out / "angles.png", title="SOA angles per run")
    if png:
        written.append(png)
    return written


def evaluate_model(model_path: Path, data: SampleSet, cache: Path | None, workers: int | None, progress: bool,
                   ) -> dict[str, Any]:
    """Test a trained model file on all of `data`, with the preprocessing its metadata records."""
    from edge.data.metrics import scores
    from edge.model.runtime import open_model

    pred = open_model(model_path)
    spec = PreprocessSpec.from_meta(pred.meta["meta"]) if "meta" in pred.meta else None
    if spec is None:
        raise UserError(f"{model_path} carries no preprocessing metadata; evaluate its model file instead")
    if list(pred.classes) != list(data.classes):
        raise UserError(f"model classes {pred.classes} differ from the data's {data.classes}")
    x = features(data, spec, cache, workers, progress=progress)
    y = pred.predict(x).probs.argmax(1)
    s = scores(data.labels, y, len(data.classes))
    meta = pred.meta["meta"]
    angles = meta.get("angles_deg", [])
    hist = meta.get("training", {}).get("history", [])
    summary = [{"arch": pred.meta.get("name", "model"), "seeds": 1, "uf1": s["uf1"], "uf1_std": 0.0,
                "uar": s["uar"], "uar_std": 0.0, "accuracy": s["accuracy"], "accuracy_std": 0.0,
                "angles_mean": angles, "angles_std": [0.0] * len(angles), "confusion": s["confusion"]}]
    row = {"arch": summary[0]["arch"], "seed": "-", "fold": "all", "n_train": 0, "n_val": 0, "n_test": len(y),
           "train_subjects": 0, "test_subjects": sorted(set(data.subjects)), "uf1": s["uf1"], "uar": s["uar"],
           "accuracy": s["accuracy"], "epoch": "-", "angles": angles}
    return {"model": str(model_path), "model_id": pred.model_id, "runtime": pred.runtime,
            "runs": [{"arch": row["arch"], "seed": None, **s}], "folds": [row], "summary": summary,
            "histories": {pred.model_id: hist} if hist else {}}


def _int_list(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "Spotting on the long-video datasets is its own mode: facesleuth eval spotting --help"
    p.add_argument("--data", required=True, help="synth:PRESET[+PRESET...], a samples .npz, or DATASET:ROOT[+...]")
    p.add_argument("--protocol", choices=PROTOCOLS, help="train-and-test protocol (not with --model)")
    p.add_argument("--model", type=Path, help="test this trained model on all of --data instead of training")
    p.add_argument("--test-domain", help="the held-out domain for --protocol domain")
    p.add_argument("--seed", type=int, default=0, help="data seed (synthetic)")
    p.add_argument("--arch", default="soa", help="comma list of networks: soa, cva, coord, none")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma list of training seeds")
    add_config_arguments(p, TrainConfig, EVAL_TRAIN_FIELDS)
    p.add_argument("--widths", type=_int_list, help="stage widths, comma list (default: the network's, 32,48,96,160)")
    p.add_argument("--stem", type=int, help="stem width (default: the network's, 24)")
    add_config_arguments(p, DataConfig, ("n", "size", "flow", "channels", "class_set", "val_frac"))
    p.add_argument("--out", type=Path, default=Path("eval_out"), help="report directory")
    p.add_argument("--cache", type=Path, help="feature cache directory (default ~/.cache/facesleuth/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--workers", type=int, help="preprocessing processes (default: CPU count; 0 or 1 = in this process)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any data is made or any fold trained."""
    from edge.extras import require
    from edge.train import check_arch

    if args.model is not None and not args.model.is_file():
        raise UserError(f"--model {args.model}: no such file")
    if args.protocol is not None:
        check_arch([a.strip() for a in args.arch.split(",") if a.strip()])
        if not args.seeds:
            raise UserError("--seeds: give at least one seed")
        if args.select == "val" and not (args.val_frac or 0) > 0:
            raise UserError("--select val needs a validation set: give --val-frac (e.g. 0.2)")
        if args.protocol == "domain" and not args.test_domain:
            raise UserError("--protocol domain needs --test-domain (e.g. webcam30)")
    for flag, values in (("--widths", args.widths or []), ("--stem", [args.stem] if args.stem is not None else [])):
        if any(v < 1 for v in values):
            raise UserError(f"{flag}: must be >= 1")
    if args.workers is not None and args.workers < 0:  # 0 or 1: in this process
        raise UserError("--workers: must be >= 0")
    if args.out.is_file():
        raise UserError(f"--out {args.out}: is a file (a report directory is made there)")
    require("eval", "train", "matplotlib")  # its confusion matrices and curves come at the end


def main(args: argparse.Namespace) -> int:
    if (args.model is None) == (args.protocol is None):
        raise UserError("give either --protocol (train and test) or --model (test a trained model)")
    _check_args(args)
    progress = not args.quiet
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    d = with_set(DataConfig(), config_values(args, DataConfig))
    data = load_source(d.data, n=d.n, seed=args.seed, class_set=d.class_set, progress=progress)
    if args.model is not None:
        report = evaluate_model(args.model, data, cache, args.workers, progress)
    else:
        archs, seeds = [a.strip() for a in args.arch.split(",") if a.strip()], args.seeds
        folds = make_folds(args.protocol, data, args.test_domain)
        spec = PreprocessSpec(backend=d.flow, size=d.size, channels=d.channels).resolved()
        x = features(data, spec, cache, args.workers, progress=progress)
        kw: dict[str, Any] = {}
        if args.widths:
            kw["widths"] = tuple(args.widths)
        if args.stem:
            kw["stem"] = args.stem
        base = with_set(TrainConfig(), {**config_values(args, TrainConfig, EVAL_TRAIN_FIELDS), "model_kwargs": kw})
        report = run_protocol(data, x, folds, archs, seeds, base, d.val_frac, progress)
        report.update({"protocol": args.protocol, "test_domain": args.test_domain, "preprocessing": spec.to_meta(),
                       "train_config": {k: v for k, v in base.__dict__.items() if k not in ("arch", "seed")},
                       "leak_check": "no subject in both train and test of any fold"})
    report.update({"data": args.data, "n": len(data), "classes": data.classes, "data_seed": args.seed,
                   "subjects": len(set(data.subjects)), "domains": sorted(set(data.domains))})
    written = write_outputs(args.out, report, data.classes)
    print(summary_markdown(report["summary"]), end="")
    print(f"report: {written[0]} (+ {len(written) - 1} files in {args.out})")
    return 0
