"""STRS (spot-then-recognise): the classifier's labels for the spotted true positives (`--strs`).

Each true positive is labelled as the classify node labels an interval (nodes.classify.interval_scores:
the onset crop and the apex crop with those next to it, through the model file's recorded preprocessing).
The recording keeps no crops (a long video's crops would be gigabytes), so the face node is run again on
the interval's frames from disk, from LEAD_S before its onset (the tracker needs a few detections before
it outputs a face) to the frame after its apex.

The classifier is the shipped weights unless `--strs MODEL` names another. The shipped weights were
trained on synthetic faces only, so no subject of any dataset was seen in training and the
leave-one-subject-out condition holds trivially. A model trained on these datasets would need one model
per held-out subject (facesleuth eval --protocol loso trains those but keeps no model file), which is not
wired here: with such a MODEL the recognition term is optimistic, and the report says which model it used.
"""

from __future__ import annotations

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


def label_matches(recordings: list[Recording], scored: dict[str, list[VideoScore]],
                  labeller: tuple[Any, Any, str], progress: bool = True) -> dict[str, Any]:
    """Per mode: STRS per dataset and pooled (spotting F1 overall x UF1 of the true positives' labels);
    `labeller` is open_labeller's answer."""
    from nodes.classify import interval_scores

    predictor, spec, path = labeller
    wanted: dict[tuple[int, int, int], None] = {}
    for vs in scored.values():
        for i, v in enumerate(vs):
            for m in v.matches:
                if m.truth.composite is not None:
                    wanted[i, m.spotted.onset_index, m.spotted.apex_index] = None  # type: ignore[attr-defined]
    labels: dict[tuple[int, int, int], str | None] = {}
    with Progress(len(wanted), "eval spotting: STRS labels", enabled=progress and bool(wanted)) as prog:
        for i, onset, apex in wanted:
            rec = recordings[i]
            crops = face_crops(rec, onset - int(round(LEAD_S * rec.video.fps)), apex + 1)
            if not crops:  # no face at the interval's frames (the tracker lost it): no label, counted wrong
                labels[i, onset, apex] = None
            else:
                apexes = [_nearest(crops, apex)] + [crops[f] for f in (apex - 1, apex + 1) if f in crops]
                probs = interval_scores(predictor, spec, [(_nearest(crops, onset), apexes)])[0]
                labels[i, onset, apex] = str(predictor.classes[int(np.argmax(probs))])
            prog.update(1)
    out: dict[str, Any] = {"model": path, "modes": {}}
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
