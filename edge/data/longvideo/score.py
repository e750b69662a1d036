"""Spotting scores on long videos: the MEGC rule (per video, pooled per dataset and over datasets) and STRS.

MEGC rule (MEGC2019-2022 spotting; reference §4):
- A spotted interval and a ground-truth interval are compared on inclusive frame ranges,
  IoU = |A ∩ B| / |A ∪ B|; the pair can be a true positive when IoU >= 0.5.
- A spotted interval is scored against ground truth of its own kind: micro against micro, macro against
  macro (the challenge takes the two as separate submissions). "overall" sums the two kinds' counts.
- Matching is one-to-one, greedy, best IoU first (`edge.data.metrics.match_pairs`): each ground truth is
  matched at most once and each spotted interval counts once, so one long spotted interval over two
  expressions is one TP and one FN, and two spotted halves of one expression are one TP and one FP.
  Both lists are sorted by onset first; equal IoUs then go to the later spotted interval and the later
  ground truth (the order match_pairs sorts in), which only decides which label STRS sees.
- TP, FP and FN are pooled over all videos (an unannotated video adds only FPs), then
  precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN), per kind and overall,
  per dataset and pooled over datasets.

The public MEGC STRS scorer lets one spotted interval count for several ground truths and reports mean
precision under the name UAR; this module does neither.

STRS (spot-then-recognise, MEGC2023+): spotting F1 x the macro-F1 (UF1, over the composite classes) of
the labels predicted for the spotted true positives, against their ground-truth composite labels. True
positives whose ground truth has no composite label (others) are left out of the recognition term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edge.data.emotions import COMPOSITE_CLASSES
from edge.data.longvideo.common import KINDS, Interval, LongVideo
from edge.data.metrics import f1, iou, match_pairs, scores

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Spotted:
    """One interval a spotter reported in a long video: inclusive frames, its kind, its peak score."""

    onset: int
    offset: int
    kind: str                 # "micro" or "macro"
    score: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.offset < self.onset:
            raise ValueError(f"offset {self.offset} before onset {self.onset}")


@dataclass
class Counts:
    """TP / FP / FN and what follows from them. Precision and recall are nan when undefined."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        return self

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when there was nothing to find and nothing was spotted."""
        return f1(self.tp, self.fp, self.fn)

    def as_dict(self) -> dict:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 6)

        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": num(self.precision),
                "recall": num(self.recall), "f1": num(self.f1)}


@dataclass(frozen=True)
class Match:
    """A true positive: the ground truth and the spotted interval the MEGC rule paired."""

    truth: Interval
    spotted: Spotted
    iou: float


@dataclass
class VideoScore:
    """One video's counts per kind and its true positives."""

    key: str
    dataset: str
    counts: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in KINDS})
    matches: list[Match] = field(default_factory=list)

    @property
    def overall(self) -> Counts:
        total = Counts()
        for c in self.counts.values():
            total += c
        return total


def score_video(video: LongVideo, spotted: Sequence[Spotted], threshold: float = IOU_THRESHOLD) -> VideoScore:
    """The MEGC rule on one video: per kind, one-to-one greedy matching at IoU >= `threshold`."""
    out = VideoScore(video.key, video.dataset)
    for kind in KINDS:
        truth = sorted((iv for iv in video.intervals if iv.kind == kind), key=lambda iv: (iv.onset, iv.offset))
        got = sorted((s for s in spotted if s.kind == kind), key=lambda s: (s.onset, s.offset))
        pairs = match_pairs([(s.onset, s.offset) for s in got], [iv.frames for iv in truth], threshold)
        out.counts[kind] = Counts(len(pairs), len(got) - len(pairs), len(truth) - len(pairs))
        out.matches += [Match(truth[j], got[i], iou((got[i].onset, got[i].offset), truth[j].frames))
                        for i, j in sorted(pairs, key=lambda p: p[1])]
    return out


POOLED = "pooled"


def pool(videos: Iterable[VideoScore]) -> dict[str, dict[str, Counts]]:
    """{dataset or "pooled": {"micro" | "macro" | "overall": Counts}}, counts summed over videos."""
    out: dict[str, dict[str, Counts]] = {}
    for v in videos:
        for name in (v.dataset, POOLED):
            row = out.setdefault(name, {k: Counts() for k in (*KINDS, "overall")})
            for kind in KINDS:
                row[kind] += v.counts[kind]
                row["overall"] += v.counts[kind]
    if POOLED not in out:
        out[POOLED] = {k: Counts() for k in (*KINDS, "overall")}
    return out


def table_rows(pooled: dict[str, dict[str, Counts]]) -> list[dict]:
    """One row per (dataset, kind) for `edge.table.format_table`; "pooled" last."""
    names = [n for n in pooled if n != POOLED] + [POOLED]
    rows = []
    for name in names:
        for kind, c in pooled[name].items():
            rows.append({"dataset": name, "kind": kind, "TP": c.tp, "FP": c.fp, "FN": c.fn,
                         "precision": c.precision, "recall": c.recall, "F1": c.f1})
    return rows


@dataclass(frozen=True)
class STRS:
    strs: float            # spot_f1 x recognition_uf1 (nan when no true positive carries a composite label)
    spot_f1: float
    recognition_uf1: float
    n: int                 # true positives in the recognition term


def strs(spot_f1: float, matches: Sequence[Match], predicted: Sequence[str],
         classes: Sequence[str] = COMPOSITE_CLASSES) -> STRS:
    """Spot-then-recognise score: `spot_f1` x UF1 of `predicted[i]` (the label the classifier gave the
    spotted interval of `matches[i]`) against `matches[i].truth.composite`, over `classes`.

    Matches whose ground truth has no label in `classes` (others, uncoded) are left out. A predicted label
    outside `classes` is a ValueError: the classifier answers in the composite classes.
    """
    if len(matches) != len(predicted):
        raise ValueError(f"{len(matches)} matches but {len(predicted)} predicted labels")
    index = {c: i for i, c in enumerate(classes)}
    bad = sorted({p for p in predicted if p not in index})
    if bad:
        raise ValueError(f"predicted label(s) {', '.join(map(str, bad))} not in {', '.join(classes)}")
    kept = [(index[m.truth.composite], index[p]) for m, p in zip(matches, predicted, strict=True)
            if m.truth.composite in index]
    if not kept:
        return STRS(math.nan, spot_f1, math.nan, 0)
    uf1 = scores([t for t, _ in kept], [p for _, p in kept], len(classes))["uf1"]
    return STRS(spot_f1 * uf1, spot_f1, uf1, len(kept))
