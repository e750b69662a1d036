"""Protocols: every fold keeps each subject on one side only; validation comes from training subjects."""

from __future__ import annotations

import numpy as np
import pytest

from edge.data import protocols
from edge.errors import UserError

DATASETS = ["casme2"] * 6 + ["samm"] * 4 + ["smic"] * 4 + ["mmew"] * 2
SUBJECTS = ["sub01", "sub01", "sub02", "sub02", "sub03", "sub03", "006", "006", "007", "007",
            "s01", "s01", "s02", "s02", "S01", "S01"]
COMPOSITE = ["negative", "positive", None, "surprise", "negative", "negative", "negative", "positive",
             "surprise", None, "negative", "positive", "surprise", "negative", "positive", "negative"]
KEYS = [protocols.subject_key(d, s) for d, s in zip(DATASETS, SUBJECTS, strict=True)]


def _covers_once(folds, n):
    seen = np.concatenate([f.test for f in folds])
    assert sorted(seen.tolist()) == list(range(n))


def test_loso_namespaces_and_never_leaks():
    folds = protocols.loso(SUBJECTS, DATASETS)
    assert len(folds) == 8  # "s01" of SMIC and "S01" of MMEW stay different people
    protocols.check_disjoint(folds, KEYS)
    _covers_once(folds, len(SUBJECTS))
    for f in folds:
        assert len(set(np.asarray(KEYS)[f.test])) == 1
        assert f.train.size + f.test.size == len(SUBJECTS)


def test_check_disjoint_catches_a_leak():
    leak = protocols.Fold("bad", np.array([0, 2]), np.array([1]))  # samples 0 and 1 are both casme2/sub01
    with pytest.raises(ValueError, match="casme2/sub01"):
        protocols.check_disjoint([leak], KEYS)


def test_lodo():
    folds = protocols.lodo(DATASETS)
    assert [f.name for f in folds] == ["without casme2", "without mmew", "without samm", "without smic"]
    protocols.check_disjoint(folds, KEYS)
    for f in folds:
        assert set(np.asarray(DATASETS)[f.test]) & set(np.asarray(DATASETS)[f.train]) == set()


def test_megc2019_composite_only_three_datasets_with_labels():
    folds = protocols.megc2019(SUBJECTS, DATASETS, COMPOSITE)
    used = np.concatenate([f.test for f in folds])
    assert all(DATASETS[i] in ("casme2", "samm", "smic") and COMPOSITE[i] for i in used)
    assert len(used) == sum(1 for d, c in zip(DATASETS, COMPOSITE, strict=True)
                            if d != "mmew" and c is not None)
    assert len(folds) == 7
    protocols.check_disjoint(folds, KEYS)
    for f in folds:
        assert set(f.train.tolist()) <= set(used.tolist())


def test_held_out_domain_drops_shared_subjects():
    domains = ["lab200", "lab200", "lab200", "webcam30", "webcam30"]
    subjects = ["a", "b", "c", "c", "d"]
    f = protocols.held_out_domain(domains, subjects, "webcam30")
    assert f.test.tolist() == [3, 4] and f.train.tolist() == [0, 1]
    protocols.check_disjoint([f], subjects)
    with pytest.raises(UserError):
        protocols.held_out_domain(domains, subjects, "mobile")


def test_validation_split_from_training_subjects_only():
    for f in protocols.loso(SUBJECTS, DATASETS):
        fit, val = protocols.validation_split(f.train, KEYS, 0.25, seed=1)
        keys = np.asarray(KEYS)
        assert set(keys[val]).isdisjoint(keys[fit]) and set(keys[val]).isdisjoint(keys[f.test])
        assert sorted(np.concatenate([fit, val]).tolist()) == sorted(f.train.tolist())
        assert val.size > 0 and fit.size > 0
    with pytest.raises(UserError):
        protocols.validation_split(np.array([0, 1]), KEYS)


def test_too_few_groups():
    with pytest.raises(UserError):
        protocols.loso(["x", "x"])


def test_held_out_synthetic_domain_has_its_own_people():
    from edge.data import synth

    _, _, lab = synth.make_samples(6, "lab200", seed=0, subjects=3)
    _, _, web = synth.make_samples(6, "webcam30", seed=0, subjects=3)
    meta = lab + web
    f = protocols.held_out_domain([m["domain"] for m in meta], [m["subject"] for m in meta], "webcam30")
    assert f.train.tolist() == list(range(6)) and f.test.tolist() == list(range(6, 12))
