"""Recognition metrics over pooled predictions (all LOSO folds concatenated, then scored once).

UF1 = (1/C) sum_c 2 TP_c / (2 TP_c + FP_c + FN_c) and UAR = (1/C) sum_c TP_c / N_c (MEGC2019; STSTNet).
C counts the classes of the task. A class that never occurs in the pooled ground truth (N_c = 0) and is
never predicted has no defined F1 or recall; it is left out of the means (so C = classes with N_c > 0 or
predictions). A class that is predicted but absent from the truth scores F1 = 0 and no recall term. Pooling
makes a class missing from one fold harmless: per-fold averaging would be undefined there.
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
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    recall = np.where(n_true > 0, tp / np.maximum(n_true, 1), np.nan)
    n = int(cm.sum())
    return {
        "uf1": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"),
        "uar": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "f1": f1.tolist(), "recall": recall.tolist(), "support": n_true.tolist(), "n": n,
        "confusion": cm.tolist(),
    }


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
