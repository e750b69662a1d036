"""Recognition metrics over pooled predictions (all LOSO folds concatenated, then scored once).

UF1 = (1/C) sum_c 2 TP_c / (2 TP_c + FP_c + FN_c) and UAR = (1/C) sum_c TP_c / N_c (MEGC2019; STSTNet).
C counts the classes of the task. A class that never occurs in the pooled ground truth (N_c = 0) and is
never predicted has no defined F1 or recall; it is left out of the means (so C = classes with N_c > 0 or
predictions). A class that is predicted but absent from the truth scores F1 = 0 and no recall term. Pooling
makes a class missing from one fold harmless: per-fold averaging would be undefined there.

Spotting (MEGC rule): a spotted interval is a true positive if its IoU with a ground-truth interval,
counting inclusive frame ranges, is >= 0.5 (one-to-one, best IoU first); F1 = 2TP / (2TP + FP + FN).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in shape")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict:
    """{"uf1", "uar", "accuracy", "f1": per-class (nan if undefined), "recall": per-class, "support", "n"}."""
    cm = confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    n_true, n_pred = cm.sum(1), cm.sum(0)
    denom = n_true + n_pred  # = 2TP + FP + FN
    per_class_f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    recall = np.where(n_true > 0, tp / np.maximum(n_true, 1), np.nan)
    n = int(cm.sum())
    return {
        "uf1": float(np.nanmean(per_class_f1)) if np.isfinite(per_class_f1).any() else float("nan"),
        "uar": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "f1": per_class_f1.tolist(), "recall": recall.tolist(), "support": n_true.tolist(), "n": n,
        "confusion": cm.tolist(),
    }


# ------------------------------------------------------------------------------------------- spotting

def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame ranges (onset, offset)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def match_pairs(pred: list[tuple[int, int]], truth: list[tuple[int, int]], thr: float = 0.5,
                ) -> list[tuple[int, int]]:
    """MEGC rule: greedy one-to-one matching by IoU >= thr, best IoU first. Returns (pred i, truth j) pairs."""
    pairs = sorted(((iou(p, t), i, j) for i, p in enumerate(pred) for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, out = set(), set(), []
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            out.append((i, j))
    return out


def match(pred: list[tuple[int, int]], truth: list[tuple[int, int]], thr: float = 0.5,
          ) -> tuple[int, int, int]:
    """MEGC rule: greedy one-to-one matching by IoU >= thr. Returns (TP, FP, FN)."""
    tp = len(match_pairs(pred, truth, thr))
    return tp, len(pred) - tp, len(truth) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2TP / (2TP + FP + FN); 1.0 when there was nothing to find and nothing was found."""
    d = 2 * tp + fp + fn
    return 2 * tp / d if d else 1.0


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Save a row-normalised confusion matrix (counts annotated) as PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(class_names), 1.0 + 0.8 * len(class_names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion (pooled)")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (PNG, 100 dpi, parent folders made) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
