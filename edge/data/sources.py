"""Sample sets for training and evaluation: synthetic domain presets, sample files, licensed datasets.

    load_source("synth:lab200+webcam30", n=1200, seed=0)     # split evenly over the presets
    load_source("samples.npz")                              # written by `facesleuth synth samples`
    load_source("casme2:/data/CASME2+samm:/data/SAMM")       # edge.data.datasets, aligned by load_real
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SampleSet:
    """Onset/apex pairs with labels. onset, apex: (N, S, S) uint8; labels: (N,) int64 into `classes`."""

    onset: np.ndarray
    apex: np.ndarray
    labels: np.ndarray
    classes: list[str]
    subjects: list[str]
    domains: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int] | np.ndarray) -> SampleSet:
        idx = np.asarray(idx, np.int64)
        return SampleSet(self.onset[idx], self.apex[idx], self.labels[idx], self.classes,
                         [self.subjects[i] for i in idx], [self.domains[i] for i in idx])


def preset_seed(seed: int, k: int) -> int:
    """The generator seed of the k-th domain preset of a `synth:` source: distinct people per domain."""
    return seed * 1000 + 101 * k


def load_real(source: str, class_set: str = "composite", progress: bool = True) -> SampleSet:
    """Samples of licensed datasets, `DATASET:ROOT[+DATASET:ROOT...]` (edge.data.datasets), as aligned
    onset/apex crops (edge.data.preprocess.align_pair). Samples whose label is outside the class set are
    left out; a sample whose frames cannot be read or hold no face is skipped with a warning."""
    import cv2

    from edge.data.datasets import DATASETS, load
    from edge.data.emotions import CLASS_SETS
    from edge.data.preprocess import align_pair
    from edge.perception.face.detect import make_detector
    from edge.perception.face.landmarks import make_landmarker
    from edge.progress import track

    classes = list(CLASS_SETS[class_set])
    samples = []
    for part in source.split("+"):
        name, _, root = part.partition(":")
        if name not in DATASETS or not root:
            raise UserError(f"bad data source {part!r}: use DATASET:ROOT with DATASET one of {', '.join(DATASETS)}")
        samples += load(name, root)
    detector, landmarker = make_detector("haar"), make_landmarker("auto")
    onset, apex, labels, subjects, domains, skipped = [], [], [], [], [], 0
    for s in track(samples, "align dataset frames", enabled=progress):
        label = s.composite if class_set == "composite" else s.emotion
        if label not in classes:
            continue
        frames = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in (s.onset_path, s.apex_path)]
        try:
            if any(f is None for f in frames):
                raise UserError("unreadable frame")
            o, a = align_pair(frames[0], frames[1], detector, landmarker)
        except UserError as e:
            log.warning("skipping %s/%s %s: %s", s.dataset, s.subject, s.clip, e)
            skipped += 1
            continue
        onset.append(o)
        apex.append(a)
        labels.append(classes.index(label))
        subjects.append(s.subject)
        domains.append(s.dataset)
    if not labels:
        raise UserError(f"{source}: no usable samples with {class_set} labels")
    log.info("%d samples from %s (%d skipped)", len(labels), source, skipped)
    return SampleSet(np.stack(onset), np.stack(apex), np.array(labels, np.int64), classes, subjects, domains)


def load_source(source: str, n: int = 1200, seed: int = 0, class_set: str = "composite",
                progress: bool = True) -> SampleSet:
    """Samples from `synth:PRESET[+PRESET...]` (n in all, split over the presets), a samples .npz, or
    licensed datasets `DATASET:ROOT[+DATASET:ROOT...]` (load_real)."""
    from edge.data import emotions, synth

    if is_real(source):
        return load_real(source, class_set, progress)
    if source.startswith("synth:"):
        presets = [p for p in source[len("synth:"):].split("+") if p]
        if not presets:
            raise UserError(f"{source!r}: name at least one domain preset, e.g. synth:lab200")
        if n < len(presets):
            raise UserError(f"--n {n} is smaller than the number of presets ({len(presets)})")
        parts = []
        for k, p in enumerate(presets):
            m = n // len(presets) + (1 if k < n % len(presets) else 0)
            parts.append(synth.make_samples(m, p, seed=preset_seed(seed, k), class_set=class_set, progress=progress))
        onset = np.concatenate([p[0] for p in parts])
        apex = np.concatenate([p[1] for p in parts])
        meta = [m for p in parts for m in p[2]]
    else:
        path = Path(source)
        if path.suffix != ".npz":
            raise UserError(f"unknown data source {source!r}: use synth:PRESET[+PRESET] or a samples .npz")
        onset, apex, meta = synth.load_samples(path)
        if not meta:
            raise UserError(f"{path} holds no samples")
        class_set = meta[0].get("class_set", class_set)
    classes = list(emotions.CLASS_SETS[class_set])
    labels = np.array([classes.index(m["label"]) for m in meta], np.int64)
    return SampleSet(onset, apex, labels, classes, [str(m["subject"]) for m in meta],
                     [str(m.get("domain", "")) for m in meta])


def is_real(source: str) -> bool:
    """True for licensed datasets (DATASET:ROOT); synth: sources and sample .npz files are synthetic."""
    from edge.data.datasets import DATASETS

    return source.split(":", 1)[0] in DATASETS
