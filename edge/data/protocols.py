"""Evaluation protocols as fold lists: LOSO, leave-one-dataset-out, MEGC2019 composite, held-out domain.

A fold is (name, train indices, test indices) over a list of samples described by their group keys
(subject, dataset, domain). Subjects are namespaced by dataset ("casme2/sub01"), so two datasets' "s1"
never merge. No model selection may look at a test fold: `validation_split` carves a validation set from
the training subjects only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.errors import UserError


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray  # sample indices, int64
    test: np.ndarray


def subject_key(dataset: str, subject: str) -> str:
    """The namespaced subject id used by every protocol ("<dataset>/<subject>")."""
    return f"{dataset}/{subject}"


def leave_one_group_out(groups: Sequence[str], prefix: str = "") -> list[Fold]:
    """One fold per distinct group (sorted): test = that group, train = every other sample."""
    g = np.asarray(groups, dtype=object)
    if g.size == 0:
        raise UserError("no samples to split")
    uniq = sorted(set(g.tolist()))
    if len(uniq) < 2:
        raise UserError(f"need at least 2 groups to leave one out, got {uniq}")
    idx = np.arange(g.size)
    return [Fold(f"{prefix}{u}", idx[g != u], idx[g == u]) for u in uniq]


def loso(subjects: Sequence[str], datasets: Sequence[str] | None = None) -> list[Fold]:
    """Leave-one-subject-out; subjects are namespaced by dataset when `datasets` is given."""
    keys = subjects if datasets is None else [subject_key(d, s) for d, s in zip(datasets, subjects, strict=True)]
    return leave_one_group_out(keys)


def lodo(datasets: Sequence[str]) -> list[Fold]:
    """Leave-one-dataset-out (cross-dataset): train on all other datasets, test on the held-out one."""
    return leave_one_group_out(datasets, prefix="without ")


def megc2019(subjects: Sequence[str], datasets: Sequence[str], composite: Sequence[str | None]) -> list[Fold]:
    """MEGC2019 composite: SMIC + CASME II + SAMM samples with a 3-class composite label, LOSO over the
    namespaced subjects (68 folds on the full data). Samples of other datasets or without a composite label
    (dropped classes) are in no fold."""
    keep = np.array([d in ("smic", "casme2", "samm") and c is not None for d, c in zip(datasets, composite, strict=True)])
    if not keep.any():
        raise UserError("no SMIC, CASME II or SAMM samples with a composite label")
    idx = np.flatnonzero(keep)
    keys = [subject_key(datasets[i], subjects[i]) for i in idx]
    return [Fold(f.name, idx[f.train], idx[f.test]) for f in leave_one_group_out(keys)]


def held_out_domain(domains: Sequence[str], subjects: Sequence[str], test_domain: str) -> Fold:
    """Train on every other domain, test on `test_domain`; training samples of subjects that also appear
    in the test domain are dropped, so no person is in both sides."""
    d, s = np.asarray(domains, dtype=object), np.asarray(subjects, dtype=object)
    if test_domain not in set(d.tolist()):
        raise UserError(f"domain {test_domain!r} not in the data (have {sorted(set(d.tolist()))})")
    test = np.flatnonzero(d == test_domain)
    test_subjects = set(s[test].tolist())
    train = np.flatnonzero((d != test_domain) & ~np.isin(s, list(test_subjects)))
    if train.size == 0:
        raise UserError(f"holding out {test_domain!r} leaves no training samples of other subjects")
    return Fold(f"held-out {test_domain}", train, test)


def validation_split(train: np.ndarray, subjects: Sequence[str], fraction: float = 0.15,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (fit, validation) by whole subjects drawn from the training set only.

    At least one subject goes to validation and at least one stays for fitting.
    """
    train = np.asarray(train, np.int64)
    subj = np.asarray(subjects, dtype=object)[train]
    uniq = sorted(set(subj.tolist()))
    if len(uniq) < 2:
        raise UserError("a validation split needs at least 2 training subjects")
    rng = np.random.default_rng(seed)
    k = int(np.clip(round(fraction * len(uniq)), 1, len(uniq) - 1))
    val_subjects = set(rng.permutation(uniq)[:k].tolist())
    is_val = np.isin(subj, list(val_subjects))
    return train[~is_val], train[is_val]


def check_disjoint(folds: Sequence[Fold], subjects: Sequence[str]) -> None:
    """Raise ValueError if any fold has a subject on both sides (a leak)."""
    s = np.asarray(subjects, dtype=object)
    for f in folds:
        both = set(s[f.train].tolist()) & set(s[f.test].tolist())
        if both:
            raise ValueError(f"fold {f.name}: subjects in train and test: {sorted(both)[:5]}")
