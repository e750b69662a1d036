"""`facesleuth eval spotting` on fake long-video trees (tests/longvideo_trees.py) whose frames are synthetic
faces with a micro- and a macro-expression at known frames: the real face, flow and spot nodes find them,
the table / JSON / PNGs are written, LOSO thresholds never come from the held-out subject, the recordings
cache is reused (no frame read) and a damaged entry is recorded again, bad input is one line and exit 2."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import pytest

from tests.longvideo_trees import CASME3_MAE_HEADER, casme2_lv_tree, casme3_lv_tree, samm_lv_tree, write_xlsx

FPS = 30.0
DURATION_S = 3.0
FRAMES = int(DURATION_S * FPS)
# CAS(ME)^2: two subjects (LOSO folds with a training subject each); CAS(ME)^3: one (its LOSO fold has no
# training video and falls back to the defaults). Seeds whose synthetic face the haar detector tracks.
CASME2 = {"s15": (1, 15, "negative", "15_0101disgustingteeth", "0101", "disgust1"),
          "s16": (2, 18, "positive", "16_0401girlcrashing", "0401", "anger1")}
CASME3 = {"spNO.1": (16, "disgust")}
STILL = {"head_turns_per_min": 0.0, "blinks_per_min": 0.0, "noise_sigma": 1.0}
# two settings (k_on): the fit has a real choice and the replays stay fast
GRID = ["--grid", "k_on=4.5,6.5", "--grid", "k_off=2.5", "--grid", "return_frac=0.5", "--grid", "k_bump=6.0"]


def _video(seed: int, label: str):
    from edge.data.synth import SyntheticVideo

    script = [{"t": 1.5, "kind": "micro", "amplitude_frame_px": 1.5, "label": label},
              {"t": 2.1, "kind": "macro", "duration_s": 0.7}]
    return SyntheticVideo("edge60", seed=seed, duration_s=DURATION_S, fps=FPS, width=320, height=240,
                          script=script, overrides=STILL, random_events=False)


def _truth(video, kind: str, first: int) -> list[int]:
    (t,) = [t for t in video.truth if t["kind"] == kind]
    return [t["onset"] + first, t["apex"] + first, t["offset"] + first]


def face_trees(root: Path) -> dict[str, Path]:
    """A CAS(ME)^2 tree (frames img001.jpg..: number n is synthetic frame n - 1) and a CAS(ME)^3 part A
    tree (frames 0.jpg.., frame 33 dropped as in the release) of synthetic faces."""
    rows, keys = [], {}
    for folder, (number, seed, label, _, code, stimulus) in CASME2.items():
        keys[f"{folder}/{code}"] = v = _video(seed, label)
        rows += [[number, f"{stimulus}_1", *_truth(v, "micro", 1), "4+9", label, "micro-expression", label],
                 [number, f"{stimulus}_2", *_truth(v, "macro", 1), "12", "positive", "macro-expression", "happy"]]
    casme2_lv_tree(root / "casme2", rows=rows, frames=FRAMES, image=lambda key, n: keys[key].frame(n - 1),
                   folders={s: [c[3]] for s, c in CASME2.items()})
    c3 = {s: _video(seed, emotion) for s, (seed, emotion) in CASME3.items()}
    me = [[s, "a", *_truth(c3[s], "micro", 0), "4+7", "III", emotion] for s, (_, emotion) in CASME3.items()]
    casme3_lv_tree(root / "casme3", me_rows=me, frames=FRAMES, videos={s: ("a",) for s in CASME3},
                   image=lambda key, n: c3[key.split("/")[0]].frame(n))
    write_xlsx(root / "casme3" / "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx",
               {"Sheet1": [CASME3_MAE_HEADER, *[[s, "a", *_truth(c3[s], "macro", 0), "happy"] for s in CASME3]]})
    return {"casme2_lv": root / "casme2", "casme3_lv": root / "casme3"}


def _argv(trees: dict[str, Path], out: Path, *extra: str) -> list[str]:
    argv = ["eval", "spotting"]
    for name, root in trees.items():
        argv += ["--dataset", name, "--root", str(root)]
    return argv + ["--cache", str(out / "cache"), "--out", str(out / "report"), "--quiet", *GRID, *extra]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The trees and one run over them (recording every video into a fresh cache)."""
    import io
    from contextlib import redirect_stdout

    from edge.cli import main

    root = tmp_path_factory.mktemp("lv")
    trees = face_trees(root)
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = main(_argv(trees, root, "--lodo", "--json", str(root / "r1.json")))
    assert code == 0
    return trees, root, json.loads((root / "r1.json").read_text()), stdout.getvalue()


def test_finds_the_scripted_intervals_through_the_nodes_and_writes_table_json_pngs(first_run):
    trees, root, doc, stdout = first_run
    assert doc["recorded"] == 3 and doc["from_cache"] == 0 and doc["frames_read"] == 2 * FRAMES + FRAMES - 1
    for v in doc["videos"]:
        # the micro-expression is spotted under the MEGC rule: a spotted micro interval with IoU >= 0.5
        (micro,) = [t for t in v["truth"] if t[0] == "micro"]
        got = [s for s in v["spotted"]["defaults"] if s[0] == "micro"]
        ious = [(min(micro[2], b) - max(micro[1], a) + 1) / (max(micro[2], b) - min(micro[1], a) + 1)
                for _, a, b, _ in got]
        assert ious and max(ious) >= 0.5, (v["key"], v["truth"], v["spotted"]["defaults"])
        assert v["counts"]["defaults"]["tp"] >= 1
        png = cv2.imread(v["png"])
        assert png is not None and png.shape[0] > 200 and png.shape[1] > 800
    pooled = doc["scores"]["defaults"]["pooled"]
    assert pooled["micro"]["tp"] == 3 and pooled["micro"]["fn"] == 0
    assert {"defaults", "loso", "lodo"} == set(doc["scores"]) and {"casme2_lv", "casme3_lv", "pooled"} == set(
        doc["scores"]["loso"])
    table = (root / "report" / "summary.txt").read_text()
    for mode in ("defaults", "loso", "lodo"):
        assert [line for line in table.splitlines() if line.split()[:3] == [mode, "pooled", "overall"]]
    assert table.strip() in stdout and "precision" in table and "casme3_lv" in table
    scores, notes = table.split("\n\n")
    assert len(scores.splitlines()) == 2 + 3 * 3 * 3  # header, rule, (mode x dataset-or-pooled x kind)
    assert notes.strip() == "loso casme3_lv/spNO.1: no training video: scored with the defaults"


def test_loso_thresholds_are_fitted_without_the_held_out_subject(first_run, monkeypatch):
    """Per fold, the recordings the fit step summed (choose_on's training set), by frame folder: never the
    held-out subject's, always the other subjects of its dataset; a lone subject falls back to defaults."""
    from edge.data.longvideo import load
    from edge.spotting_eval import thresholds
    from edge.spotting_eval.record import record_all

    trees, root, doc, _ = first_run
    videos = [v for name, r in trees.items() for v in load(name, r)]
    recordings, read = record_all(videos, root / "cache", progress=False)
    assert read == 0
    opened: list[set[str]] = []
    real = thresholds.choose_on

    def spy(rep, train):
        opened.append({str(recordings[i].video.folder) for i in train})
        return real(rep, train)

    monkeypatch.setattr(thresholds, "choose_on", spy)
    rep = thresholds.replay_all(recordings, thresholds.SpotParams(), {"k_on": (4.5, 6.5), "k_off": (2.5,),
                                "return_frac": (0.5,), "k_bump": (6.0,)}, progress=False)
    folds = thresholds.fit_folds(rep, recordings, "loso")
    fitted = [f for f in folds if f.setting is not None]
    assert [f.name for f in fitted] == ["casme2_lv/s15", "casme2_lv/s16"] and len(opened) == 2
    for fold, folders in zip(fitted, opened, strict=True):
        held = {str(recordings[i].video.folder) for i in fold.test}
        others = {str(r.video.folder) for r in recordings
                  if r.video.dataset == "casme2_lv" and r.video.subject_key != fold.name}
        assert folders == others and not folders & held
    (lone,) = [f for f in folds if f.setting is None]
    assert lone.name == "casme3_lv/spNO.1" and "defaults" in lone.fallback
    # the report says the same for every fold it scored
    for fold in doc["folds"]["loso"]:
        subject = fold["held_out"]
        assert not [f for f in fold["fit_folders"] if f"/{subject.split('/')[1]}" in f]
    for fold in doc["folds"]["lodo"]:
        assert fold["fit_folders"] and not [f for f in fold["fit_folders"]
                                            if str(trees[fold["held_out"]]) in f]


def test_second_run_reads_no_frame_and_scores_the_same(first_run, tmp_path, monkeypatch, capsys):
    from edge.cli import main
    from edge.spotting_eval import frames

    trees, root, doc, _ = first_run

    def no_frames(*a, **k):
        raise AssertionError("a frame was read on a cached run")

    monkeypatch.setattr(frames.cv2, "imread", no_frames)
    out = tmp_path / "again"
    argv = _argv(trees, root, "--lodo", "--no-png", "--json", str(tmp_path / "r2.json"))
    argv[argv.index("--out") + 1] = str(out / "report")
    assert main(argv) == 0
    again = json.loads((tmp_path / "r2.json").read_text())
    assert again["frames_read"] == 0 and again["from_cache"] == 3 and again["recorded"] == 0
    assert again["scores"] == doc["scores"]
    assert "3 videos (3 from the cache, 0 frames recorded)" in capsys.readouterr().out
    # `--json` alone, as on every command (edge/jsonout.py): the report on stdout and nothing else
    argv[argv.index("--json"):argv.index("--json") + 2] = ["--json"]
    assert main(argv) == 0
    std = capsys.readouterr()
    assert json.loads(std.out)["scores"] == doc["scores"] and "3 videos (3 from the cache" in std.err


def test_strs_labels_the_spotted_true_positives_with_the_shipped_weights(first_run, tmp_path, capsys):
    """--strs: the true positives' onset and apex crops (face node again, from the frames) through the
    classify node's code path; the scripted micro-expression's label comes back."""
    from edge.cli import main

    trees, root, _, _ = first_run
    argv = ["eval", "spotting", "--dataset", "casme3_lv", "--root", str(trees["casme3_lv"]), "--cache",
            str(root / "cache"), "--out", str(tmp_path / "o"), "--json", str(tmp_path / "s.json"), "--no-png",
            "--quiet", "--strs", *GRID]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "s.json").read_text())["strs"]
    assert doc["model"].endswith("soa_synthetic_3c.pt")
    (micro,) = [lab for lab in doc["labels"] if lab["onset_index"] < 60]
    assert micro["label"] == "negative"  # scripted disgust: composite negative
    pooled = doc["modes"]["defaults"]["pooled"]
    assert pooled["n"] == 2 and pooled["spot_f1"] == 1.0
    assert pooled["strs"] == pytest.approx(pooled["spot_f1"] * pooled["recognition_uf1"])
    assert "recognition_uf1" in capsys.readouterr().out


def test_a_damaged_cache_entry_is_recorded_again(tmp_path):
    """Grey frames (no face: cheap); a truncated entry and a stray half-written temp file."""
    from edge.data.longvideo import load
    from edge.spotting_eval.record import record_all

    folders = {"s15": ["15_0101disgustingteeth"], "s16": ["16_0401girlcrashing"]}
    videos = load("casme2_lv", casme2_lv_tree(tmp_path / "c2", frames=12, folders=folders))
    cache = tmp_path / "cache"
    first, read = record_all(videos, cache, progress=False)
    assert read == 24 and [r.source for r in first] == ["recorded"] * 2
    entries = [next((cache / "casme2_lv").glob(f"{v.subject}_*.clip")) for v in videos]
    assert len(list((cache / "casme2_lv").iterdir())) == 2  # no temp file left behind
    entries[1].write_bytes(entries[1].read_bytes()[:40])
    (cache / "casme2_lv" / f".{entries[0].name}.999.tmp").write_bytes(b"half")
    again, read = record_all(videos, cache, progress=False)
    assert read == 12 and [r.source for r in again] == ["cache", "recorded"]
    assert again[1].clip.n_frames == 12 and again[1].numbers == list(range(1, 13))
    assert pickle.loads(entries[1].read_bytes())["clip"].n_frames == 12  # rewritten whole


def test_frame_folders_are_read_in_frame_number_order_at_the_dataset_rate(tmp_path):
    from edge.data.longvideo import load
    from edge.spotting_eval.frames import FrameFolder, to_index

    (samm,) = [v for v in load("samm_lv", samm_lv_tree(tmp_path / "samm", frames=30)) if v.video == "007_2"]
    reader = FrameFolder(samm)
    assert reader.fps == 200.0 and reader.numbers == list(range(1, 31)) and len(list(reader)) == 30
    (c3,) = [v for v in load("casme3_lv", casme3_lv_tree(tmp_path / "c3", frames=40)) if v.key.endswith("spNO.2/b")]
    reader = FrameFolder(c3)
    assert reader.numbers[32:35] == [32, 34, 35]  # frame 33 dropped: pipeline frame 33 is frame 34
    assert to_index(reader.numbers, 30, 36) == (30, 35) and to_index(reader.numbers, 33, 33) == (33, 33)
    assert [t["onset"] for t in reader.truth] == [20]


def test_the_recording_uses_the_video_graphs_node_params():
    """configs/video.yaml's face, flow and spot params are what eval spotting records with."""
    from edge.runtime.graph import load_graph
    from edge.spotting_eval.record import BACKEND, LAG
    from nodes.face import FaceNode
    from nodes.spot import SpotNode

    nodes = load_graph(Path(__file__).parents[1] / "configs" / "video.yaml").nodes
    assert FaceNode.resolve_params(dict(nodes["face"].params)) == FaceNode.resolve_params({})
    assert (nodes["flow"].params["lag"], nodes["flow"].params["backend"]) == (LAG, BACKEND)
    assert SpotNode.resolve_params(dict(nodes["spot"].params)) == SpotNode.resolve_params({})


def test_the_cache_key_names_the_landmarks_auto_picked(monkeypatch):
    """`landmarks: auto` runs dlib68 where it is installed and the eye cascade elsewhere: recordings made
    with one are not reused for the other."""
    import edge.perception.face.landmarks as landmarks
    from edge.spotting_eval.record import pipeline_key

    here = pipeline_key()
    assert here["face"]["landmarks"] == "auto" and here["face"]["landmarks_used"] in ("dlib68", "eyes")
    monkeypatch.setattr(landmarks, "make_landmarker", lambda kind, path=None: landmarks.HaarEyes())
    elsewhere = pipeline_key()
    assert elsewhere["face"]["landmarks_used"] == "eyes"
    assert (elsewhere == here) == (here["face"]["landmarks_used"] == "eyes")


@pytest.mark.parametrize("case, text", [
    ("unknown", "unknown long-video dataset 'casme9_lv'; known: casme2_lv, samm_lv, casme3_lv"),
    ("no root", "dataset folder {tmp}/nowhere not found"),
    ("no sheet", "CAS(ME)^2 code sheet"),
    ("lodo one", "--lodo needs two or more datasets"),
    ("pairs", "2 --dataset but 1 --root"),
    ("jobs", "--jobs: must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(case, text, tmp_path, capsys):
    from edge.cli import main

    tree = casme2_lv_tree(tmp_path / "c2", frames=3)
    argv = {"unknown": ["--dataset", "casme9_lv", "--root", str(tree)],
            "no root": ["--dataset", "casme2_lv", "--root", str(tmp_path / "nowhere")],
            "no sheet": ["--dataset", "casme2_lv", "--root", str(tree)],
            "lodo one": ["--dataset", "casme2_lv", "--root", str(tree), "--lodo"],
            "pairs": ["--dataset", "casme2_lv", "--dataset", "samm_lv", "--root", str(tree)],
            "jobs": ["--dataset", "casme2_lv", "--root", str(tree), "--jobs", "0"]}[case]
    if case == "no sheet":
        (tree / "CAS(ME)^2code_final.xlsx").unlink()
    out = tmp_path / "out"
    assert main(["eval", "spotting", *argv, "--out", str(out), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("facesleuth eval spotting: error: ")
    assert text.format(tmp=tmp_path) in err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_strs_loso_labels_each_subject_with_a_classifier_trained_on_the_others(first_run, tmp_path, capsys):
    """--strs loso (MEGC's protocol): per held-out subject a classifier trained from scratch on the other
    subjects' labelled intervals of its dataset; a subject with no one else to learn from (the CAS(ME)^3
    tree has one) is labelled by the shipped weights, and the report says so."""
    from edge.cli import main
    from edge.model.file import read_record

    trees, root, _, _ = first_run
    argv = [*_argv(trees, root, "--strs", "loso", "--no-png", "--json", str(tmp_path / "s.json"))]
    argv[argv.index("--out") + 1] = str(tmp_path / "o")
    assert main(argv) == 0
    doc = json.loads((tmp_path / "s.json").read_text())["strs"]
    assert doc["model"] == "loso"
    folds = {f["held_out"]: f for f in doc["folds"]}
    assert set(folds) == {"casme2_lv/s15", "casme2_lv/s16", "casme3_lv/spNO.1"}
    for held_out, other in (("casme2_lv/s15", "casme2_lv/s16"), ("casme2_lv/s16", "casme2_lv/s15")):
        fold = folds[held_out]
        assert fold["trained_on"] == [other] and fold["intervals"] == 2 and not fold["fallback"]
        training = read_record(fold["model"])["meta"]["training"]  # the file says what it learnt from
        assert training["strs_loso_held_out"] == held_out and training["subjects"] == [other]
    assert folds["casme3_lv/spNO.1"]["model"] is None and "shipped weights" in folds["casme3_lv/spNO.1"]["fallback"]
    pooled = doc["modes"]["defaults"]["pooled"]
    assert pooled["n"] >= 3 and pooled["strs"] == pytest.approx(pooled["spot_f1"] * pooled["recognition_uf1"])
    assert all(lab["label"] in ("negative", "positive", "surprise") for lab in doc["labels"])
    out = capsys.readouterr().out
    assert "strs casme3_lv/spNO.1: 0 labelled interval(s) of other subjects" in out
