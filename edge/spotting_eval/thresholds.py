"""Spotting thresholds that never see their test video, and the replays they are chosen from.

Every recording is replayed (edge.bench.clips.spot_clip) once with the shipped params (`defaults`) and
once per setting of the calibration grid (calib.spot: GRID, or `--grid`). A setting's calibration score
on a set of clips is its micro TP / FP / FN summed over those clips, exactly what calib.spot.fit computes
by replaying them: so each fold sums per-clip counts instead of replaying the grid again (a fold of a
22-subject dataset would otherwise replay 21/22 of the data once per setting, 22 times over), and keeps
the setting calib.spot.choose keeps.

- `loso`: for each subject, the setting chosen on the other subjects of its dataset, applied to its videos;
- `lodo`: for each dataset, the setting chosen on the other datasets' videos, applied to its videos.
A fold with no training video (a dataset of one subject) has no fitted thresholds: its videos are scored
with the defaults and the fold says so (`fallback`).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edge.bench.clips import Clip, Ended, Noted, Pushed
from edge.data.longvideo.score import Spotted
from edge.data.metrics import match
from edge.perception.spot import Interval, SpotParams, Spotter
from edge.progress import Progress
from edge.spotting_eval.frames import to_number
from edge.spotting_eval.record import Recording

log = logging.getLogger(__name__)

SPOTTED_KINDS = ("micro", "macro")  # blinks are no expression; discarded intervals are not published


def replay(clip: Clip, params: SpotParams) -> tuple[list[Interval], np.ndarray]:
    """spot_clip with the per-frame spotting score beside it: (intervals, score[k]) where score[k] is the
    best channel score (noise units) of any track at pipeline frame k, nan where none was scored."""
    sp = Spotter(params)
    out: list[Interval] = []
    trace = np.full(max(clip.n_frames, 1), np.nan)
    for call in clip.calls:
        if isinstance(call, Noted):
            sp.note_frame(call.frame, call.track_id, call.info)
        elif isinstance(call, Pushed):
            out += sp.push_features(call.frame, call.t_mono_ns, call.t_wall_ns, call.track_id, call.ref_frame,
                                    call.feats, call.rigid, clip.roi_of)
            frames = sp.tracks[call.track_id].frames
            if frames and frames[-1].frame == call.frame and frames[-1].scores is not None:
                s = frames[-1].scores
                if np.isfinite(s).any() and 0 <= call.frame < len(trace):
                    trace[call.frame] = np.fmax(trace[call.frame], float(np.nanmax(s)))
        elif isinstance(call, Ended):
            out += sp.end_track(call.track_id, call.reason)
    out += sp.finish()
    return out, trace


@dataclass(frozen=True)
class Found(Spotted):
    """A spotted interval with the pipeline frames the classifier reads (STRS): its onset and apex."""

    onset_index: int = 0
    apex_index: int = 0


def spotted(rec: Recording, intervals: Sequence[Interval]) -> list[Spotted]:
    """What the pipeline publishes as expressions (kept micro / macro intervals), in dataset frames."""
    return [Found(to_number(rec.numbers, iv.onset), to_number(rec.numbers, iv.offset), iv.kind, float(iv.score),
                  iv.onset, iv.apex)
            for iv in intervals if iv.kind in SPOTTED_KINDS and not iv.discarded]


def micro_counts(clip: Clip, intervals: Sequence[Interval]) -> tuple[int, int, int]:
    """(TP, FP, FN) of micro intervals on one clip, as calib.spot scores a setting (edge.bench.spotting.score)."""
    truth = [(t["onset"], t["offset"]) for t in clip.truth if t["kind"] == "micro"]
    got = [(p.onset, p.offset) for p in intervals if p.kind == "micro" and not p.discarded]
    return match(got, truth)


@dataclass
class Replays:
    """The replays of every recording: with the defaults (and the score trace), and per grid setting."""

    defaults: SpotParams
    settings: list[dict]                       # the grid's settings (calib.spot.grid_settings)
    params: list[SpotParams]                   # defaults with each setting applied
    default_spots: list[list[Spotted]]         # [recording]
    traces: list[np.ndarray]                   # [recording]
    grid_spots: list[list[list[Spotted]]]      # [recording][setting]
    counts: np.ndarray                         # (recordings, settings, 3): micro TP, FP, FN
    minutes: np.ndarray                        # (recordings,)


_RECORDINGS: list[Recording] = []  # a replay worker's copy (set once per process by _init)


def _init(recordings: list[Recording]) -> None:
    _RECORDINGS[:] = recordings


def _replay_grid(job: tuple[int, list[SpotParams]]) -> tuple[list[list[Spotted]], list[tuple[int, int, int]]]:
    i, params = job
    rec = _RECORDINGS[i]
    spots, counts = [], []
    for p in params:
        from edge.bench.clips import spot_clip

        ivs = spot_clip(rec.clip, p)
        spots.append(spotted(rec, ivs))
        counts.append(micro_counts(rec.clip, ivs))
    return spots, counts


def replay_all(recordings: list[Recording], defaults: SpotParams, grid: dict[str, tuple], jobs: int = 1,
               progress: bool = True) -> Replays:
    """Replay every recording with `defaults` and with every setting of `grid` (in `jobs` processes)."""
    from calib.spot import grid_settings

    settings = grid_settings(grid, defaults)
    params = [dataclasses.replace(defaults, **v) for v in settings]
    default_spots, traces = [], []
    for rec in recordings:
        ivs, trace = replay(rec.clip, defaults)
        default_spots.append(spotted(rec, ivs))
        traces.append(trace)
    jobs_list = [(i, params) for i in range(len(recordings))]
    results: list = []
    with Progress(len(recordings), f"eval spotting: {len(params)} threshold settings", enabled=progress) as prog:
        workers = min(jobs, len(recordings))
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(recordings,)) as pool:
                for r in pool.map(_replay_grid, jobs_list):
                    results.append(r)
                    prog.update(1)
        else:
            _init(recordings)
            for job in jobs_list:
                results.append(_replay_grid(job))
                prog.update(1)
    counts = np.array([c for _, c in results], dtype=np.int64).reshape(len(recordings), len(params), 3)
    minutes = np.array([r.clip.n_frames / r.clip.fps / 60 for r in recordings])
    return Replays(defaults, settings, params, default_spots, traces, [s for s, _ in results], counts, minutes)


def choose_on(rep: Replays, train: Sequence[int]) -> tuple[int, dict]:
    """The setting calib.spot.fit would keep on the recordings `train`: (index, its fit score)."""
    from calib.spot import choose
    from edge.data.metrics import f1

    sums = rep.counts[list(train)].sum(0)  # (settings, 3)
    minutes = float(rep.minutes[list(train)].sum())
    scores = [{"tp": int(a), "fp": int(b), "fn": int(c), "f1": f1(int(a), int(b), int(c)),
               "fp_per_min": int(b) / minutes if minutes else 0.0} for a, b, c in sums]
    best = choose(rep.params, scores)
    return best, scores[best]


@dataclass
class Fold:
    """One held-out group (a subject for loso, a dataset for lodo) and the thresholds it was scored with."""

    name: str
    test: list[int]                    # recording indices scored
    train: list[int]                   # recording indices the thresholds were chosen on
    setting: dict | None               # the chosen grid values (None: fallback to the defaults)
    fit: dict = field(default_factory=dict)
    fallback: str = ""


def folds_by(recordings: list[Recording], group: Callable[[Recording], str],
             pool_of: Callable[[Recording], str]) -> list[tuple[str, list[int], list[int]]]:
    """(name, test, train) per value of `group`; train = the recordings of the same `pool_of` value
    outside the group (loso: the dataset's other subjects; lodo: pool_of constant, the other datasets)."""
    names = sorted({group(r) for r in recordings})
    out = []
    for name in names:
        test = [i for i, r in enumerate(recordings) if group(r) == name]
        pools = {pool_of(recordings[i]) for i in test}
        train = [i for i, r in enumerate(recordings) if group(r) != name and pool_of(r) in pools]
        out.append((name, test, train))
    return out


def fit_folds(rep: Replays, recordings: list[Recording], kind: str) -> list[Fold]:
    """The loso or lodo folds, each with its chosen setting."""
    if kind == "loso":
        groups = folds_by(recordings, lambda r: r.video.subject_key, lambda r: r.video.dataset)
    elif kind == "lodo":
        groups = folds_by(recordings, lambda r: r.video.dataset, lambda r: "all")
    else:
        raise ValueError(kind)
    out = []
    for name, test, train in groups:
        if not train:
            out.append(Fold(name, test, train, None, fallback="no training video: scored with the defaults"))
            continue
        best, fit = choose_on(rep, train)
        out.append(Fold(name, test, train, rep.settings[best], fit))
    return out


def spots_of(rep: Replays, folds: list[Fold]) -> list[list[Spotted]]:
    """Each recording's spotted intervals under its fold's thresholds."""
    out: list[list[Spotted] | None] = [None] * len(rep.default_spots)
    for fold in folds:
        j = rep.settings.index(fold.setting) if fold.setting is not None else None
        for i in fold.test:
            out[i] = rep.default_spots[i] if j is None else rep.grid_spots[i][j]
    assert all(s is not None for s in out), "a recording in no fold"
    return out  # type: ignore[return-value]
