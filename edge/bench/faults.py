"""`facesleuth bench faults`: seeded fault injection into the batch job, reported like Jepsen reports.

A short generated video runs through the whole pipeline (configs/video.yaml: capture -> face -> flow ->
spot -> classify -> events, every node a real process) once undisturbed, for the reference event log;
then each seed draws one fault and injects it into its own run of the same file:

    kill9        SIGKILL the node at a seeded moment of its life
    stopkill     SIGSTOP it at that moment, wait a seeded pause (its socket buffers fill), SIGKILL it
    diskfull     the events node's files may not grow (RLIMIT_FSIZE of its process, set from outside with
                 prlimit(2)) for a seeded time: every SQLite write fails as on a full disk, then room again
    readonly     the log file is made read-only (chmod; as root, whom modes do not stop, the immutable
                 flag) and the events node killed, so its restart finds the log read-only; writable again
                 a seeded pause after the new process first found it so
    eos-restart  SIGKILL the node once its upstream has ended (the restarted process must learn of the end)

Invariant of every run: it ends by itself with exit 0 within the timeout (else it hung), and its log
holds exactly the reference run's events, compared by (stream, track, onset, apex, offset, kind, label)
as a multiset (no event lost, none duplicated), with seq 1..n (no gap). A face-node restart numbers its
tracks from restarts * 2**24 (track ids unique within a run), so tracks are compared within a life:
track mod 2**24.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.runtime.params import bounded

VIDEO_GRAPH = Path(__file__).resolve().parents[2] / "configs" / "video.yaml"
NODES = ("face", "flow", "spot", "classify", "events")
UPSTREAM = {"face": ("capture",), "flow": ("face",), "spot": ("face", "flow"), "classify": ("spot",),
            "events": ("classify",)}
KINDS: dict[str, tuple[str, ...]] = {  # fault kind -> the nodes it is injected into
    "kill9": NODES, "stopkill": NODES, "diskfull": ("events",), "readonly": ("events",), "eos-restart": NODES}
CELLS = [(kind, node) for kind, nodes in KINDS.items() for node in nodes]
TRACK_LIFE = 2**24  # nodes/face.py: each life of the face node numbers its tracks from restarts * 2**24
DEFAULT_FAULTS = 20  # about 15 s a run on two shared cores: minutes, not hours (docs/faults.md)
CLIP_S, CLIP_W, CLIP_H, CLIP_SEED = 6.0, 320, 240, 3  # three micro-expressions, all spotted
WRITE_RETRY_S = 30.0  # the events node's write_retry_s here: longer than any injected disk-full time


@dataclass(frozen=True)
class Job:
    """A batch job to inject into: a graph whose event sink is the node `events`, the params every run
    sets besides the sink's, each fault target's upstream nodes (eos-restart waits for their end), and
    environment for the runner (e.g. a node plugin's path)."""

    graph: Path
    sets: dict[str, Any]
    upstream: dict[str, tuple[str, ...]]
    env: dict[str, str] = field(default_factory=dict)


def video_job(clip: Path) -> Job:
    """configs/video.yaml on `clip`: the whole pipeline, every node its own process."""
    return Job(VIDEO_GRAPH, {"capture.path": clip}, UPSTREAM)


@dataclass(frozen=True)
class Fault:
    """One seeded fault: `at` is the moment as a fraction of the victim's life in the reference run,
    `pause_s` the stop's, the full disk's or the read-only log's duration."""

    seed: int
    kind: str
    node: str
    at: float
    pause_s: float

    def describe(self) -> str:
        how = {"kill9": "", "stopkill": f", stopped {self.pause_s:.2f} s",
               "diskfull": f", full {self.pause_s:.2f} s", "readonly": f", read-only {self.pause_s:.2f} s",
               "eos-restart": ""}[self.kind]
        when = "after its upstream ended" if self.kind == "eos-restart" else f"at {100 * self.at:.0f}% of its life"
        return f"seed {self.seed}: {self.kind} {self.node} {when}{how}"


def draw(seed: int) -> Fault:
    """The fault of `seed` (the same on every machine: Python's Mersenne Twister)."""
    rng = random.Random(seed)
    kind = rng.choice(list(KINDS))  # kinds evenly (the disk faults have one node, the kills five)
    node = rng.choice(KINDS[kind])
    at = rng.uniform(0.05, 0.9)
    pause = {"stopkill": rng.uniform(0.2, 1.5), "diskfull": rng.uniform(0.5, 4.0),
             "readonly": rng.uniform(0.5, 3.0)}.get(kind, rng.uniform(0.0, 0.1))
    return Fault(seed, kind, node, round(at, 4), round(pause, 3))


def event_key(e: dict[str, Any]) -> tuple:
    """What a run of the same file reproduces exactly (timestamps, latencies and seq do not)."""
    def frame(point: Any) -> Any:
        return point.get("frame") if isinstance(point, dict) else point

    track = e.get("track_id")
    return (e.get("stream"), track % TRACK_LIFE if isinstance(track, int) else track, frame(e.get("onset")),
            frame(e.get("apex")), frame(e.get("offset")), e.get("kind"), e.get("label"))


def make_clip(path: Path) -> Path:
    """The bench's clip: CLIP_S s of a 320x240 face with a micro-expression every 1.5 s (deterministic)."""
    from edge.data.synth import SyntheticVideo, write_clip

    labels = ("positive", "negative", "surprise")
    script, t = [], 1.5  # the spotter needs a second of history
    while t < CLIP_S - 1.0:
        script.append({"t": t, "kind": "micro", "amplitude_frame_px": 1.5, "label": labels[len(script) % 3]})
        t += 1.5
    video = SyntheticVideo("edge60", seed=CLIP_SEED, duration_s=CLIP_S, fps=30.0, width=CLIP_W, height=CLIP_H,
                           script=script, overrides={"head_turns_per_min": 0.0, "blinks_per_min": 0.0},
                           random_events=False)
    write_clip(video, path)
    return path


# ------------------------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    seed: int | None
    kind: str
    node: str
    injected: bool = False
    note: str = ""
    rc: int | None = None
    hung: bool = False
    wall_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    lifetimes: dict[str, float] = field(default_factory=dict)  # node -> s from the sources' start to its exit
    lost: int = 0
    duplicated: int = 0
    gaps: int = 0
    log_tail: str = field(default="", repr=False)

    @property
    def survived(self) -> bool:
        return not self.hung and self.rc == 0 and not (self.lost or self.duplicated or self.gaps)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("events", "log_tail", "lifetimes"):
            d.pop(k)
        return {**d, "survived": self.survived, "stored": len(self.events)}


class _Graph:
    """`facesleuth run` of the job in its own folder (its runs directory too); the supervisor's lines kept
    with the time they arrived (read from a pipe: a node under a file-size limit must still log)."""

    def __init__(self, job: Job, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "events.db"
        ipc = Path(tempfile.mkdtemp(prefix="fsf-", dir="/tmp"))  # ipc paths are limited to 107 bytes
        self.ipc = ipc
        sets = {**job.sets, "events.db": self.db, "events.pub": f"ipc://{ipc}/pub",
                "events.replay": f"ipc://{ipc}/replay", "events.print": "false",
                "events.write_retry_s": WRITE_RETRY_S}
        cmd = [sys.executable, "-m", "edge", "run", str(job.graph)]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        # The runs directory in the short folder as well: its control.ipc has the same length limit.
        env = {**os.environ, **job.env, "TMPDIR": str(ipc), "PYTHONUNBUFFERED": "1"}
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", start_new_session=True)
        self.t_start = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.t_sources: float | None = None
        self.exits: dict[str, float] = {}

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def seen(self, text: str) -> float | None:
        """When a line containing `text` arrived (the first such), or None."""
        with self._lock:
            return next((t for t, s in self.lines if text in s), None)

    def text(self) -> str:
        with self._lock:
            return "\n".join(s for _, s in self.lines)

    def node_pids(self) -> dict[str, int]:
        import psutil

        pids = {}
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return {}
        for c in children:
            try:
                cmd = c.cmdline()
                if "edge.runtime.noderun" in cmd and c.status() != psutil.STATUS_ZOMBIE:
                    pids[Path(cmd[-1]).stem] = c.pid
            except psutil.Error:
                continue
        return pids

    def wait_for(self, cond: Callable[[], Any], deadline: float, step: float = 0.01) -> Any:
        """cond()'s first truthy value before `deadline` (monotonic) or the run's end; else None."""
        while time.monotonic() < deadline and self.proc.poll() is None:
            value = cond()
            if value:
                return value
            time.sleep(step)
        return cond()

    def lifetimes(self) -> dict[str, float]:
        """Per node: s from the sources' start to its first exit line (the reference run's lives)."""
        t0 = self.seen("starting sources")
        out: dict[str, float] = {}
        with self._lock:
            lines = list(self.lines)
        for t, line in lines:
            m = _EXITED.search(line)
            if t0 is not None and m and m[1] not in out:
                out[m[1]] = t - t0
        return out

    def finish(self, timeout: float) -> tuple[int | None, bool]:
        """(exit code, hung): waits for the run to end; past `timeout` it is stopped and counted as hung."""
        remaining = max(0.0, self.t_start + timeout - time.monotonic())
        try:
            return self.proc.wait(remaining), False
        except subprocess.TimeoutExpired:
            self.kill()
            return None, True
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        """The supervisor's group, then any node left (each node has its own session)."""
        pids = self.node_pids()
        for sig in (signal.SIGCONT, signal.SIGKILL):
            for pid in [self.proc.pid, *pids.values()]:
                try:
                    os.killpg(pid, sig) if pid == self.proc.pid else os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        self.proc.wait(10)

    def close(self) -> None:
        shutil.rmtree(self.ipc, ignore_errors=True)


_EXITED = re.compile(r"\] (\S+) \(pid \d+\) exited with code")


def _stored(db: Path) -> list[dict[str, Any]]:
    from edge.events.log import EventLog

    if not db.is_file():
        return []
    try:
        with EventLog(db, readonly=True) as log:
            return list(log.query())
    except UserError:
        return []


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


class _ReadOnly:
    """The log file made read-only for everyone, root included (whom file modes do not stop: for root the
    file's immutable flag, where the file system has one), and writable again on `restore()`."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.mode = db.stat().st_mode
        self.how = ""

    def apply(self) -> str:
        if os.geteuid() == 0:
            r = subprocess.run(["chattr", "+i", str(self.db)], capture_output=True, text=True) \
                if shutil.which("chattr") else None
            if r is None or r.returncode != 0:
                return "root, and no immutable flag here (chattr): the log cannot be made read-only"
            self.how = "chattr"
        else:
            os.chmod(self.db, 0o444)
            self.how = "chmod"
        return ""

    def restore(self) -> None:
        if self.how == "chattr":
            subprocess.run(["chattr", "-i", str(self.db)], capture_output=True)
        elif self.how == "chmod":
            os.chmod(self.db, self.mode)
        self.how = ""


def _inject(g: _Graph, job: Job, fault: Fault, life_s: float, deadline: float) -> tuple[bool, str]:
    """Inject `fault` into the running graph; (injected, note)."""
    t0 = g.wait_for(lambda: g.seen("starting sources"), deadline)
    if t0 is None:
        return False, "the graph never started its sources"
    if fault.kind == "eos-restart":
        ends = [f"] {up}: end of stream" for up in job.upstream[fault.node]]
        if not g.wait_for(lambda: all(g.seen(e) for e in ends), deadline, 0.002):
            return False, "upstream never ended"
        time.sleep(fault.pause_s)
    else:
        time.sleep(max(0.0, t0 + fault.at * life_s - time.monotonic()))
    pid = g.node_pids().get(fault.node)
    if pid is None:
        return False, f"{fault.node} had ended already"
    if fault.kind == "kill9" or fault.kind == "eos-restart":
        return _signal(pid, signal.SIGKILL), ""
    if fault.kind == "stopkill":
        if not _signal(pid, signal.SIGSTOP):
            return False, f"{fault.node} had ended already"
        time.sleep(fault.pause_s)
        return _signal(pid, signal.SIGKILL), ""
    if fault.kind == "diskfull":
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        try:
            # No file of the process may grow past 1 byte: every write the log makes fails (EFBIG), as on a
            # full disk. Python ignores SIGXFSZ, so the process lives on and sees the errors.
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        except (ProcessLookupError, PermissionError) as e:
            return False, f"prlimit: {e}"
        time.sleep(fault.pause_s)
        try:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        except ProcessLookupError:
            pass
        return True, "writes failed" if "write failed" in g.text() else "no write while full"
    if fault.kind == "readonly":
        ro = _ReadOnly(g.db)
        why = ro.apply()
        if why:
            return False, why
        try:
            _signal(pid, signal.SIGKILL)
            # Read-only from the restarted process's first look (its start-up time varies) for pause_s.
            found = g.wait_for(lambda: g.seen("is read-only"), min(deadline, time.monotonic() + 30.0))
            time.sleep(fault.pause_s)
        finally:
            ro.restore()
        return True, "" if found else "the restarted node never found it read-only"
    raise ValueError(f"unknown fault kind {fault.kind!r}")


def run_once(job: Job, folder: Path, fault: Fault | None, reference: RunResult | None,
             timeout: float) -> RunResult:
    """One run of `job` in `folder` (a fresh one), with `fault` injected (None: the reference run), judged
    against `reference`'s events."""
    folder.mkdir(parents=True, exist_ok=True)
    res = RunResult(fault.seed if fault else None, fault.kind if fault else "none", fault.node if fault else "-")
    t0 = time.monotonic()
    g = _Graph(job, folder)
    try:
        if fault is not None:
            assert reference is not None
            life = reference.lifetimes.get(fault.node, 5.0)
            res.injected, res.note = _inject(g, job, fault, life, g.t_start + timeout)
        res.rc, res.hung = g.finish(timeout)
    finally:
        if g.proc.poll() is None:
            g.kill()
        g.close()
    res.wall_s = time.monotonic() - t0
    res.lifetimes = g.lifetimes()
    text = g.text()
    (folder / "run.log").write_text(text + "\n")  # the runner's and the nodes' lines (kept with --keep)
    res.log_tail = text[-6000:]
    res.events = _stored(g.db)
    seqs = [e.get("seq") for e in res.events]
    res.gaps = sum(1 for i, s in enumerate(seqs, 1) if s != i)
    if reference is not None:
        got, want = Counter(map(event_key, res.events)), Counter(map(event_key, reference.events))
        res.lost = sum((want - got).values())
        res.duplicated = sum((got - want).values())
    return res


# ------------------------------------------------------------------------------------------- the bench


def table(results: Iterable[RunResult]) -> list[dict[str, Any]]:
    """Fault kind x node: runs, injected, survived, lost / duplicated events, hung runs, failed seeds."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        c = cells.setdefault((r.kind, r.node), {"fault": r.kind, "node": r.node, "runs": 0, "injected": 0,
                                                "survived": 0, "lost": 0, "duplicated": 0, "hung": 0,
                                                "exit!=0": 0, "failed seeds": []})
        c["runs"] += 1
        c["injected"] += r.injected
        c["survived"] += r.survived
        c["lost"] += r.lost
        c["duplicated"] += r.duplicated
        c["hung"] += r.hung
        c["exit!=0"] += not r.hung and r.rc != 0
        if not r.survived:
            c["failed seeds"].append(r.seed)
    order = {cell: i for i, cell in enumerate(CELLS)}
    rows = sorted(cells.values(), key=lambda c: order.get((c["fault"], c["node"]), -1))
    for c in rows:
        c["failed seeds"] = ",".join(map(str, c["failed seeds"])) or "-"
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", type=bounded(int, 1), default=DEFAULT_FAULTS, metavar="N",
                        help="seeded faults, one run each (seeds S..S+N-1)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="first seed")
    parser.add_argument("--only", type=int, action="append", metavar="SEED",
                        help="run just this seed's fault (repeatable; --faults and --seed are then ignored)")
    parser.add_argument("--timeout", type=bounded(float, 0.0), default=0.0, metavar="S",
                        help="a run past S seconds has hung (0: 4x the reference run, at least 60 s)")
    parser.add_argument("--keep", metavar="DIR", help="keep every run's folder (log, events.db, output) in DIR")


def main(args: argparse.Namespace) -> int:
    if args.faults < 1:
        raise UserError(f"--faults must be >= 1 (got {args.faults})")
    if args.seed < 0 or any(s < 0 for s in args.only or []):
        raise UserError("seeds are >= 0")
    if args.timeout < 0:
        raise UserError(f"--timeout must be >= 0 (got {args.timeout:g})")
    if args.keep and Path(args.keep).exists() and not Path(args.keep).is_dir():
        raise UserError(f"--keep {args.keep}: not a directory")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: no such directory {Path(args.json).resolve().parent}")
    from edge.progress import Progress

    seeds = list(args.only) if args.only else list(range(args.seed, args.seed + args.faults))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fs-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        job = video_job(make_clip(work / "clip.avi"))
        ref = run_once(job, work / "reference", None, None, timeout=args.timeout or 300.0)
        if ref.hung or ref.rc != 0 or not ref.events or ref.gaps:
            raise UserError(f"the undisturbed reference run failed (exit {ref.rc}, {len(ref.events)} events, "
                            f"hung {ref.hung}):\n{ref.log_tail[-2000:]}")
        timeout = args.timeout or max(60.0, 4 * ref.wall_s)
        print(f"reference run: {len(ref.events)} events in {ref.wall_s:.1f} s; {len(seeds)} faults, "
              f"a run past {timeout:.0f} s has hung", file=sys.stderr, flush=True)
        results: list[RunResult] = []
        with Progress(len(seeds), "faults") as progress:
            for seed in seeds:
                fault = draw(seed)
                r = run_once(job, work / f"seed-{seed}", fault, ref, timeout)
                results.append(r)
                if not r.survived:
                    print(f"FAILED {fault.describe()}: exit {r.rc}, hung {r.hung}, lost {r.lost}, "
                          f"duplicated {r.duplicated}, gaps {r.gaps}; {r.note}\n{r.log_tail[-1500:]}",
                          file=sys.stderr, flush=True)
                if not args.keep:
                    shutil.rmtree(work / f"seed-{seed}", ignore_errors=True)
                progress.update(1, survived=sum(x.survived for x in results), last=f"{r.wall_s:.1f}s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    from edge.bench.report import emit

    rows = table(results)
    failed = [r for r in results if not r.survived]
    walls = sorted(r.wall_s for r in results)
    emit("fault injection into the batch job (configs/video.yaml, one fault a run)", rows, args.json,
         extra={"faults": len(results), "injected": sum(r.injected for r in results),
                "survived": len(results) - len(failed),
                "events lost": sum(r.lost for r in results), "events duplicated": sum(r.duplicated for r in results),
                "hung": sum(r.hung for r in results),
                "reference": f"{len(ref.events)} events, {ref.wall_s:.1f} s",
                "run wall s (median, max)": f"{walls[len(walls) // 2]:.1f}, {walls[-1]:.1f}",
                "re-run a failure": "facesleuth bench faults --only SEED" if failed else "-"},
         json_extra={"runs": [{**r.row(), "fault": asdict(draw(r.seed)) if r.seed is not None else None}
                              for r in results],
                     "reference_events": [list(event_key(e)) for e in ref.events]})
    return 1 if failed else 0

