"""STRS (spot-then-recognise): the classifier's labels for the spotted true positives (`--strs`).

Each true positive is labelled as the classify node labels an interval (nodes.classify.interval_scores:
the onset crop and the apex crop with those next to it, through the model file's recorded preprocessing).
The recording keeps no crops (a long video's crops would be gigabytes), so the face node is run again on
the interval's frames from disk, from LEAD_S before its onset (the tracker needs a few detections before
it outputs a face) to the frame after its apex.

Which classifier (`--strs [MODEL|loso]`):
- alone: the shipped weights. They were trained on synthetic faces only, so no subject of any dataset was
  seen in training and the leave-one-subject-out condition holds trivially;
- MODEL: that model file, as it is (a model trained on these datasets makes the recognition term
  optimistic; the report names the model);
- `loso`: MEGC's protocol. Per held-out subject, a classifier trained from scratch (edge.model.fit, the
  shipped recipe `facesleuth train --preset default` with the shipped model's preprocessing) on the
  labelled ground-truth intervals of the other subjects of the same dataset, each as the classify node
  reads it (onset crop -> apex crop and its neighbours, the face node run on the frames again), labels
  that subject's true positives. Each fold's model file is kept in OUT/strs_models/, and the report lists
  the subjects each fold trained on. A subject whose dataset has no labelled interval of another subject
  (or only one) is labelled by the shipped weights, and the report says so.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.data.emotions import COMPOSITE_CLASSES
from edge.data.longvideo.score import Match, VideoScore, pool, strs
from edge.errors import UserError
from edge.progress import Progress
from edge.runtime.inprocess import run_chain
from edge.runtime.messages import Message
from edge.spotting_eval.record import Recording

LEAD_S = 0.5
LOSO = "loso"  # --strs loso: one classifier per held-out subject


def open_labeller(model: str | None) -> tuple[Any, Any, str]:
    """(predictor, preprocessing spec, model path); UserError unless it answers in the composite classes."""
    from edge.bench.spotting import open_classifier
    from edge.data.preprocess import PreprocessSpec
    from nodes.classify import DEFAULT_MODEL

    path = str(model or DEFAULT_MODEL)
    if not Path(path).is_file():
        raise UserError(f"--strs {path}: no such model file")
    predictor = open_classifier(path)
    bad = [c for c in predictor.classes if c not in COMPOSITE_CLASSES]
    if bad:
        raise UserError(f"--strs {path}: its classes {list(predictor.classes)} are not the composite "
                        f"{', '.join(COMPOSITE_CLASSES)}")
    meta = predictor.meta
    return predictor, PreprocessSpec.from_meta(meta.get("meta", meta)), path


def face_crops(rec: Recording, first: int, last: int) -> dict[int, np.ndarray]:
    """The face node's aligned crops of pipeline frames first..last (its first track), read from disk."""
    from nodes.face import FaceNode

    folder = rec.video.frames
    paths = list(folder.values())
    crops: dict[int, np.ndarray] = {}

    def tap(port: str, msg: Message) -> None:
        if len(msg.arrays.get("track_ids", ())):
            crops[msg.frame] = msg.arrays["crops"][0].copy()

    def frames():
        meta = {"fps": rec.video.fps, "clock": "media"}
        for k in range(max(first, 0), min(last, len(paths) - 1) + 1):
            image = cv2.imread(str(paths[k]), cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"{paths[k]}: not a readable image")
            t = int(round(k / rec.video.fps * 1e9))
            yield "frames", Message("frame", frame=k, t_mono_ns=t, t_wall_ns=t, meta=meta, arrays={"image": image})

    face = FaceNode("face", FaceNode.resolve_params({}), tap)
    face.setup()
    try:
        run_chain([face], frames())
    finally:
        face.teardown()
    return crops


def _nearest(crops: dict[int, np.ndarray], frame: int) -> np.ndarray:
    return crops[min(crops, key=lambda k: abs(k - frame))]


def interval_crops(rec: Recording, onset: int, apex: int) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """(onset crop, [apex crop, the crops next to it]) of pipeline frames onset..apex, as the classify
    node receives an interval; None when the face node finds no face there."""
    crops = face_crops(rec, onset - int(round(LEAD_S * rec.video.fps)), apex + 1)
    if not crops:
        return None
    return _nearest(crops, onset), [_nearest(crops, apex)] + [crops[f] for f in (apex - 1, apex + 1) if f in crops]


def _index(rec: Recording, number: int) -> int:
    """The pipeline frame of dataset frame `number` (the next one where that frame is missing)."""
    return min(bisect.bisect_left(rec.numbers, number), len(rec.numbers) - 1)


@dataclass
class Fold:
    """One held-out subject of `--strs loso`: what its classifier learnt from."""

    held_out: str                  # dataset/subject
    trained_on: list[str]          # dataset/subject of the training intervals
    intervals: int                 # labelled ground-truth intervals trained on
    model: str | None              # its model file (None: the shipped weights labelled this subject)
    fallback: str = ""


def _training_set(recordings: list[Recording], progress: bool) -> list[tuple[int, str, np.ndarray]]:
    """(recording, composite label, crops) of every ground-truth interval with a composite label whose
    frames show a face; the face node runs once per interval."""
    todo = [(i, iv) for i, r in enumerate(recordings) for iv in r.video.intervals
            if iv.composite in COMPOSITE_CLASSES]
    out = []
    with Progress(len(todo), "eval spotting: STRS training crops", enabled=progress and bool(todo)) as prog:
        for i, iv in todo:
            rec = recordings[i]
            got = interval_crops(rec, _index(rec, iv.onset), _index(rec, iv.apex))
            if got is not None:
                out.append((i, str(iv.composite), got))
            prog.update(1)
    return out


def loso_labellers(recordings: list[Recording], subjects: list[str], shipped: tuple[Any, Any, str],
                   out_dir: Path, progress: bool = True) -> tuple[dict[str, tuple[Any, Any, str]], list[Fold]]:
    """Per held-out subject key (dataset/subject) in `subjects`, its labeller (predictor, spec, model path)
    trained on the other subjects of its dataset (module docstring), and the folds' record."""
    from edge.bench.spotting import open_classifier
    from edge.model.file import save_model
    from edge.model.fit import fit
    from edge.train import PRESETS, TrainConfig
    from nodes.classify import interval_inputs

    spec = shipped[1]
    recipe = {k: v for k, v in PRESETS["default"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    cfg = dataclasses.replace(TrainConfig(), **recipe)
    samples = _training_set(recordings, progress)
    labellers: dict[str, tuple[Any, Any, str]] = {}
    folds: list[Fold] = []
    for held_out in subjects:
        dataset = held_out.split("/")[0]
        train = [(recordings[i].video.subject_key, label, crops) for i, label, crops in samples
                 if recordings[i].video.dataset == dataset and recordings[i].video.subject_key != held_out]
        seen = sorted({s for s, _, _ in train})
        if len(train) < 2:
            labellers[held_out] = shipped
            folds.append(Fold(held_out, seen, len(train), None,
                              f"{len(train)} labelled interval(s) of other subjects: labelled by the shipped weights"))
            continue
        xs = [interval_inputs(spec, onset, apexes) for _, _, (onset, apexes) in train]
        x = np.concatenate(xs).astype(np.float32)
        y = np.concatenate([np.full(len(xi), COMPOSITE_CLASSES.index(label), np.int64)
                            for xi, (_, label, _) in zip(xs, train, strict=True)])
        res = fit(x, y, COMPOSITE_CLASSES, cfg, progress=False)
        path = out_dir / "strs_models" / (held_out.replace("/", "_") + ".pt")
        save_model(res.model, path, name=cfg.arch, meta={
            **spec.to_meta(), "classes": list(COMPOSITE_CLASSES),
            "training": {"strs_loso_held_out": held_out, "subjects": seen, "intervals": len(train),
                         "samples": int(len(x)), "config": dataclasses.asdict(cfg), "real_data": True}})
        predictor = open_classifier(str(path))
        labellers[held_out] = (predictor, spec, str(path))
        folds.append(Fold(held_out, seen, len(train), str(path)))
    return labellers, folds


def label_matches(recordings: list[Recording], scored: dict[str, list[VideoScore]],
                  labeller: tuple[Any, Any, str], progress: bool = True, loso: bool = False,
                  out_dir: Path | None = None) -> dict[str, Any]:
    """Per mode: STRS per dataset and pooled (spotting F1 overall x UF1 of the true positives' labels);
    `labeller` is open_labeller's answer (with `loso`: the shipped weights, for subjects with nothing to
    train on; the fold models go to `out_dir`)."""
    from nodes.classify import interval_scores

    wanted: dict[tuple[int, int, int], None] = {}
    for vs in scored.values():
        for i, v in enumerate(vs):
            for m in v.matches:
                if m.truth.composite is not None:
                    wanted[i, m.spotted.onset_index, m.spotted.apex_index] = None  # type: ignore[attr-defined]
    labellers: dict[str, tuple[Any, Any, str]] = {}
    folds: list[Fold] = []
    if loso:
        subjects = sorted({recordings[i].video.subject_key for i, _, _ in wanted})
        labellers, folds = loso_labellers(recordings, subjects, labeller, out_dir or Path("."), progress)
    labels: dict[tuple[int, int, int], str | None] = {}
    with Progress(len(wanted), "eval spotting: STRS labels", enabled=progress and bool(wanted)) as prog:
        for i, onset, apex in wanted:
            rec = recordings[i]
            predictor, spec, _ = labellers.get(rec.video.subject_key, labeller)
            got = interval_crops(rec, onset, apex)
            if got is None:  # no face at the interval's frames (the tracker lost it): no label, counted wrong
                labels[i, onset, apex] = None
            else:
                probs = interval_scores(predictor, spec, [got])[0]
                labels[i, onset, apex] = str(predictor.classes[int(np.argmax(probs))])
            prog.update(1)
    out: dict[str, Any] = {"model": LOSO if loso else labeller[2], "modes": {}}
    if loso:
        out["folds"] = [dataclasses.asdict(f) for f in folds]
    for mode, vs in scored.items():
        pooled = pool(vs)
        per: dict[str, Any] = {}
        for name in [n for n in pooled if n != "pooled"] + ["pooled"]:
            matches: list[Match] = []
            predicted: list[str] = []
            for i, v in enumerate(vs):
                if name not in (v.dataset, "pooled"):
                    continue
                for m in v.matches:
                    if m.truth.composite is None:
                        continue
                    got = labels[i, m.spotted.onset_index, m.spotted.apex_index]  # type: ignore[attr-defined]
                    # an unlabelled true positive counts as wrong: any class but the truth's
                    matches.append(m)
                    predicted.append(got or next(c for c in COMPOSITE_CLASSES if c != m.truth.composite))
            s = strs(pooled[name]["overall"].f1, matches, predicted)
            per[name] = {"strs": _num(s.strs), "spot_f1": _num(s.spot_f1), "recognition_uf1": _num(s.recognition_uf1),
                         "n": s.n}
        out["modes"][mode] = per
    out["labels"] = [{"video": recordings[i].video.key, "onset_index": o, "apex_index": a, "label": lab}
                     for (i, o, a), lab in labels.items()]
    return out


def _num(v: float) -> float | None:
    return None if v != v else round(v, 6)
