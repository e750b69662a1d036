"""The per-video PNG: where the spotter fired and where it missed.

Top: the spotting score over the video (the best channel score of the face at each frame, noise units,
with the defaults), the k_on and k_bump lines, and the ground truth as shaded bands behind it. Below, one
lane per row: the ground truth, then the intervals spotted under each threshold mode. Micro-expressions
are red, macro-expressions blue; a spotted interval that the MEGC rule matched is filled, a false one is
only outlined; each lane's label counts its TP / FP / FN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.data.longvideo import LongVideo
from edge.data.longvideo.score import Spotted, score_video
from edge.perception.spot import SpotParams

COLOURS = {"micro": "#d62728", "macro": "#1f77b4"}


def plot_video(path: Path, video: LongVideo, numbers: list[int], trace: np.ndarray, params: SpotParams,
               modes: dict[str, list[Spotted]]) -> Path:
    """Write the PNG for one video; `modes` maps a label (defaults, loso, ...) to its spotted intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    x = np.asarray(numbers[: len(trace)], float)
    lanes = ["ground truth", *modes]
    fig, (ax, lane_ax) = plt.subplots(2, 1, figsize=(12, 2.6 + 0.45 * len(lanes)), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 0.5 + 0.35 * len(lanes)]})
    for iv in video.intervals:
        ax.axvspan(iv.onset, iv.offset + 1, color=COLOURS[iv.kind], alpha=0.15, lw=0)
    ax.plot(x, trace[: len(x)], color="#333333", lw=0.8, label="spotting score (defaults)")
    ax.axhline(params.k_on, color="#ff7f0e", lw=0.8, ls="--", label=f"k_on {params.k_on:g}")
    ax.axhline(params.k_bump, color="#2ca02c", lw=0.8, ls=":", label=f"k_bump {params.k_bump:g}")
    ax.set_ylabel("score (noise units)")
    finite = trace[np.isfinite(trace)]
    ax.set_ylim(0, max(params.k_on, params.k_bump, float(finite.max()) if finite.size else 0.0) * 1.1 + 0.5)
    if not finite.size:
        ax.text(0.5, 0.5, "no face tracked: nothing scored", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(f"{video.key}: {len(numbers)} frames at {video.fps:g} fps, "
                 f"{sum(iv.kind == 'micro' for iv in video.intervals)} micro / "
                 f"{sum(iv.kind == 'macro' for iv in video.intervals)} macro annotated", fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + [Patch(color=COLOURS[k], alpha=0.5, label=k) for k in COLOURS]
    ax.legend(handles=handles, loc="upper right", fontsize=7, ncol=5)

    labels = []
    for row, name in enumerate(lanes):
        y = len(lanes) - 1 - row
        if name == "ground truth":
            for iv in video.intervals:
                lane_ax.add_patch(Rectangle((iv.onset, y + 0.15), iv.offset - iv.onset + 1, 0.7,
                                            color=COLOURS[iv.kind], alpha=0.8))
            labels.append(name)
            continue
        s = score_video(video, modes[name])
        hit = {(m.spotted.onset, m.spotted.offset, m.spotted.kind) for m in s.matches}
        for sp in modes[name]:
            tp = (sp.onset, sp.offset, sp.kind) in hit
            lane_ax.add_patch(Rectangle((sp.onset, y + 0.15), sp.offset - sp.onset + 1, 0.7, lw=1.2,
                                        edgecolor=COLOURS[sp.kind], facecolor=COLOURS[sp.kind] if tp else "none",
                                        alpha=0.9))
        c = s.overall
        labels.append(f"{name}: TP {c.tp} FP {c.fp} FN {c.fn}")
    lane_ax.set_yticks([len(lanes) - 1 - i + 0.5 for i in range(len(lanes))], labels, fontsize=8)
    lane_ax.set_ylim(0, len(lanes))
    lane_ax.set_xlim(numbers[0], numbers[-1] + 1)
    lane_ax.set_xlabel("frame (dataset numbering); spotted: filled = matched (IoU >= 0.5), outlined = false; "
                       "score gaps: no face or no quiet history yet")
    # fixed margins, not tight_layout: it costs more than the drawing on a video with many intervals
    fig.subplots_adjust(left=0.17, right=0.98, top=0.92, bottom=0.14, hspace=0.12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
