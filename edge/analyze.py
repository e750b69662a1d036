"""`facesleuth analyze VIDEO... -o DIR`: a recorded video through the product's own graph, in one command,
with what a person looks at afterwards (docs/analyze.md).

One code path: the nodes of configs/video.yaml (capture, face, flow, spot, classify, events), each with
the params that graph gives it (load_graph, with the user's `--set` on top, validated as `facesleuth run`
validates them), run in this process by the in-process runner (edge.runtime.inprocess.run_chain: the same
input synchronisation as a running graph), so the events are the ones `facesleuth run configs/video.yaml`
logs. Three taps read what the nodes already compute: the face node's crops (box, head pose, eyes, mouth,
speech), the flow node's flows (for the annotated video) and the spot node's spotter (a subclass whose
push_features notes the frame record it just made: per-ROI motion, the spotting score, the talking flag).

Per video, in DIR/<video stem>/: events.csv, events.jsonl, events.db (the durable log the events node
wrote), frames.csv, annotated.avi, timeline.png and summary.md. Several videos run in `--jobs` processes.
Every argument and every input file is checked before any work; a bad one is one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EXIT_FAILED, FacesleuthError, UserError

log = logging.getLogger(__name__)

GRAPH = Path(__file__).resolve().parent.parent / "configs" / "video.yaml"
# The params analyze sets itself (a user's --set of one of them is refused): the file, read once and as
# fast as it decodes (on the media clock), the event log in the output folder and endpoints no one else
# can take, so that several jobs never collide.
OWN_PARAMS = ("capture.path", "capture.kind", "capture.pace", "capture.loop", "capture.count",
              "events.db", "events.pub", "events.replay", "events.print", "events.jsonl")
FLOW_MAX = 1.0  # flow magnitude shown at full colour in the annotated video, crop px (as `facesleuth view`)
VIDEO_NAME = "annotated.avi"
OUTPUTS = ("events.csv", "events.jsonl", "events.db", "frames.csv", VIDEO_NAME, "timeline.png", "summary.md")


def _roi_names() -> tuple[str, ...]:
    from edge.perception.geometry import ROIS

    return tuple(ROIS)


def frame_columns() -> list[str]:
    """frames.csv's columns, in order (each documented in docs/analyze.md; a test holds the two equal)."""
    return ["frame", "time_s", "track_id", "box_x", "box_y", "box_w", "box_h", "yaw", "pitch", "roll",
            "eye_open_left", "eye_open_right", "mouth_open", "speech", "talking", "eyes_shut", "head_motion",
            "residual", "flow_ref", *(f"motion_{r}" for r in _roi_names()), "score", "score_roi", "occluded",
            "edge_occlusion", "flag"]


# ------------------------------------------------------------------------------------------ one video


@dataclass
class Analysis:
    """One video's results: the logged events (dicts as the log holds them, plus `video`: their times in
    seconds of the file), the per-frame rows (frames.csv's columns) and what the summary needs."""

    path: Path
    fps: float
    n_frames: int
    events: list[dict[str, Any]]
    frames: list[dict[str, Any]] | None
    k_on: float
    params: list[str]
    wall_s: float
    tracks: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: --set parses it back to the same value


def user_overrides(params: dict[str, Any]) -> list[str]:
    """`{"spot.k_on": 5.0, "flow": {"lag": 2}}` -> ["spot.k_on=5.0", "flow.lag=2"] (the --set form)."""
    out = []
    for key, value in params.items():
        if isinstance(value, dict) and "." not in key:
            out += [_override(f"{key}.{k}", v) for k, v in value.items()]
        else:
            out.append(_override(key, value))
    return out


def _check_own(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in OWN_PARAMS:
            raise UserError(f"{key} is set by analyze (the video, its output folder); leave it out")


def load_nodes(video: str | Path, db: Path, overrides: list[str]):
    """configs/video.yaml with `overrides` (--set form) and analyze's own params: the Graph."""
    from edge.runtime.graph import load_graph

    if not GRAPH.is_file():
        raise UserError(f"graph file not found: {GRAPH} (analyze runs configs/video.yaml from the source tree)")
    _check_own(overrides)
    tag = uuid.uuid4().hex[:12]
    own = {"capture.path": str(Path(video).resolve()), "capture.kind": "file", "capture.pace": False,
           "capture.loop": False, "events.db": str(db.resolve()), "events.pub": f"inproc://analyze-pub-{tag}",
           "events.replay": f"inproc://analyze-replay-{tag}", "events.print": False}
    graph = load_graph(GRAPH, overrides + [_override(k, v) for k, v in own.items()])
    for link in graph.links:  # run_chain routes by port name: the graph must be that chain
        if link.src_port != link.dst_port:
            raise UserError(f"{GRAPH}: link {link} joins ports of different names; analyze runs it as a chain")
    return graph


def check_video(path: str | Path) -> None:
    """UserError unless `path` is a file OpenCV decodes a first frame of (cheap: before any work)."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise UserError(f"video file not found: {p}")
    cap = cv2.VideoCapture(str(p))
    try:
        ok = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    if not ok:
        raise UserError(f"cannot read video {p} (not a video OpenCV can decode)")


class _Faces:
    """A crops message as compose_view (edge.debug_view) reads a FaceTracker's output."""

    def __init__(self, msg) -> None:
        import numpy as np

        a = msg.arrays
        self.crops, self.track_ids, self.boxes = a["crops"], a["track_ids"], a["boxes"]
        self.residual, self.points, self.eye_open = a["residual"], a["points"], a["eye_open"]
        self.head_pose, self.mouth_open, self.speech = a["head_pose"], a["mouth_open"], a["speech"]
        motion = list(msg.meta.get("head_motion", []))
        self.head_motion = np.asarray(motion + [0.0] * (len(self.track_ids) - len(motion)), float)


def _num(v: Any, digits: int = 4) -> float | None:
    """A finite float rounded for the CSV, else None (an empty cell)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


class _Recorder:
    """The taps: per-frame rows from the face node's crops and the spotter's frame records, and, for the
    annotated video, each frame's crops and flows."""

    def __init__(self, fps: float, want_rows: bool) -> None:
        self.fps, self.want_rows = fps, want_rows
        self.rows: list[dict[str, Any]] = []
        self.recent: dict[tuple[int, int], dict[str, Any]] = {}  # (frame, track) -> its row, a few frames
        self.crops = None  # the last crops message and flows message (this frame's, once it is processed)
        self.flows = None
        self.tracks: set[int] = set()

    def on_crops(self, port: str, msg) -> None:
        self.crops = msg
        a = msg.arrays
        ids = [int(t) for t in a["track_ids"]]
        self.tracks.update(ids)
        if not self.want_rows:
            return
        motion = list(msg.meta.get("head_motion", [])) + [None] * len(ids)
        for i, tid in enumerate(ids):
            x, y, w, h = (float(v) for v in a["boxes"][i])
            yaw, pitch, roll = (_num(v, 2) for v in a["head_pose"][i])
            row = dict.fromkeys(frame_columns())
            row.update(frame=msg.frame, time_s=round(msg.frame / self.fps, 4), track_id=tid, box_x=round(x, 1),
                       box_y=round(y, 1), box_w=round(w, 1), box_h=round(h, 1), yaw=yaw, pitch=pitch, roll=roll,
                       eye_open_left=_num(a["eye_open"][i][0], 3), eye_open_right=_num(a["eye_open"][i][1], 3),
                       mouth_open=_num(a["mouth_open"][i], 3), speech=_num(a["speech"][i], 3),
                       head_motion=_num(motion[i], 3), residual=_num(a["residual"][i], 3))
            self.rows.append(row)
            self.recent[(msg.frame, tid)] = row
        if len(self.recent) > 4096:  # the spotter takes a frame's record within its lag: keep the last ones
            for key in sorted(self.recent)[:2048]:
                del self.recent[key]

    def on_flows(self, port: str, msg) -> None:
        self.flows = msg

    def on_record(self, frame: int, track_id: int, ref: int, feats, roi_of, rec) -> None:
        """The spotter's record of (frame, track): per-ROI motion, the score, the context's flags."""
        import numpy as np

        from edge.perception.spot.features import PAIRS

        row = self.recent.get((frame, track_id))
        if row is None:
            return
        names = _roi_names()
        mag = np.hypot(feats[:, 0], feats[:, 1])
        row["flow_ref"] = int(ref)
        for r, name in enumerate(names):
            sel = mag[roi_of == r]
            row[f"motion_{name}"] = _num(sel.max(), 4) if sel.size else None
        best = rec.best()
        if rec.scores is not None and best.size:
            c = int(np.argmax(best))
            row["score"] = _num(best[c], 3)
            r = int(roi_of[c])
            row["score_roi"] = names[r] if r >= 0 else list(PAIRS)[-1 - r]
        ctx = rec.context
        if ctx is not None:
            row["talking"] = int(bool(ctx.talking))
            row["eyes_shut"] = int(bool(ctx.shut))
            row["occluded"] = " ".join(ctx.occluded)
            row["edge_occlusion"] = _num(ctx.edge, 2)
        row["flag"] = rec.flag


def _spot_class(base: type, recorder: _Recorder) -> type:
    """The graph's spot node class with a spotter that tells `recorder` of each frame record it makes."""
    from edge.perception.spot import Spotter

    class FrameSpotter(Spotter):
        def push_features(self, frame, t_mono_ns, t_wall_ns, track_id, ref_frame, feats, rigid, roi_of):
            out = super().push_features(frame, t_mono_ns, t_wall_ns, track_id, ref_frame, feats, rigid, roi_of)
            t = self.tracks.get(int(track_id))
            if t is not None and t.history.frames and t.history.frames[-1].frame == frame:
                recorder.on_record(frame, int(track_id), ref_frame, feats, roi_of, t.history.frames[-1])
            return out

    class AnalyzeSpot(base):  # type: ignore[misc, valid-type]
        def make_spotter(self) -> Spotter:
            return FrameSpotter(self.params_used)

    return AnalyzeSpot


_END = object()


def _source(capture, stop: threading.Event) -> Iterator[tuple[str, Any]]:
    """The capture node's own run_source, in a thread, as (port, message) pairs for run_chain."""
    q: queue.Queue = queue.Queue(maxsize=4)
    failed: list[BaseException] = []

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def run() -> None:
        try:
            capture.run_source()
        except BaseException as e:  # handed to the consumer, which raises it
            failed.append(e)
        finally:
            put(_END)

    capture._emit = lambda port, msg: put((port, msg))
    thread = threading.Thread(target=run, name="capture", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
    if failed:
        raise failed[0]


def analyze_file(video: str | Path, out_dir: Path | None, overrides: list[str], want_frames: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Run `video` through configs/video.yaml's nodes in this process; with `out_dir`, write every output
    there. `progress(frames_done, total)` is called per frame. Raises UserError on bad params or input."""
    import tempfile

    import cv2
    import numpy as np

    from edge.debug_view import compose_view
    from edge.runtime.inprocess import run_chain

    video = Path(video)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="facesleuth-analyze-") as tmp:
        db = (out_dir / "events.db") if out_dir is not None else Path(tmp) / "events.db"
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            db.unlink(missing_ok=True)  # --force: a fresh log, not the last run's events after this run's
        graph = load_nodes(video, db, overrides)
        specs = list(graph.nodes.values())
        capture_spec, chain_specs = specs[0], specs[1:]
        stop = threading.Event()
        capture = capture_spec.cls(capture_spec.name, capture_spec.params, lambda port, msg: None,
                                   stopping=stop.is_set)
        capture.setup()
        fps, total = float(capture.src.fps), int(getattr(capture.src, "declared", 0) or 0)
        rec = _Recorder(fps, want_frames or out_dir is not None)
        nodes = []
        for spec in chain_specs:
            cls, emit = spec.cls, (lambda port, msg: None)
            if spec.type == "face":
                emit = rec.on_crops
            elif spec.type == "flow":
                emit = rec.on_flows
            elif spec.type == "spot":
                cls = _spot_class(spec.cls, rec)
            nodes.append(cls(spec.name, spec.params, emit))
        writer, part = None, Path(tmp) / "annotated.avi"
        done = 0
        try:
            for n in nodes:
                n.setup()
            spot = next(n for n in nodes if n.type_name == "spot")

            def frames() -> Iterator[tuple[str, Any]]:
                nonlocal writer, done
                for port, msg in _source(capture, stop):
                    rec.crops = rec.flows = None
                    image = msg.arrays["image"]
                    yield port, msg  # run_chain has taken this frame through every node when we resume
                    done += 1
                    if out_dir is not None and rec.crops is not None:
                        flows = {}
                        if rec.flows is not None:
                            size = rec.crops.arrays["crops"].shape[1] if len(rec.crops.arrays["crops"]) else 0
                            for uv, tid in zip(rec.flows.arrays["flows"], rec.flows.arrays["track_ids"], strict=True):
                                f = np.ascontiguousarray(uv.transpose(1, 2, 0))
                                flows[int(tid)] = f if f.shape[0] == size else cv2.resize(f, (size, size))
                        view = compose_view(image, _Faces(rec.crops), flows, FLOW_MAX, msg.frame)
                        if writer is None:
                            writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                                     (view.shape[1], view.shape[0]))
                            if not writer.isOpened():
                                raise FacesleuthError(f"cannot write a video in {tmp} (no MJPG encoder)")
                        writer.write(view)
                    if progress is not None:
                        progress(done, total)

            stored = run_chain(nodes, frames())
        finally:
            stop.set()
            if writer is not None:
                writer.release()
            for n in reversed(nodes):
                n.teardown()
            capture.teardown()
        if done == 0:
            raise UserError(f"no frame could be read from {video}")
        events = [dict(m.meta) for port, m in stored if port == "stored"]
        for ev in events:
            ev["video"] = {"fps": fps, **{f"{p}_s": round(int(ev[p]["frame"]) / fps, 4)
                                          for p in ("onset", "apex", "offset")}}
        result = Analysis(video, fps, done, events, rec.rows if want_frames else None,
                          float(spot.params_used.k_on), overrides, 0.0, len(rec.tracks))
        if out_dir is not None:
            from edge.analyze_outputs import write_outputs

            write_outputs(result, out_dir, part if writer is not None else None, rec.rows)
        result.wall_s = time.monotonic() - t0
        if out_dir is not None:
            from edge.analyze_outputs import write_summary

            write_summary(result, out_dir)
    return result


# ------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (anything OpenCV decodes)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="output folder: one sub-folder per video, named by its stem")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="videos analysed at once, one process each")
    parser.add_argument("--force", action="store_true", help="overwrite a video's existing non-empty output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="override a param of configs/video.yaml, as `facesleuth run --set` (repeatable)")


def plan(videos: list[str], output: str | Path, overrides: list[str], force: bool, jobs: int) -> list[tuple[Path, Path]]:
    """Check everything before any work: (video, its output folder) pairs, or UserError (one line)."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    for v in videos:
        check_video(v)
    stems: dict[str, str] = {}
    for v in videos:
        stem = Path(v).stem
        if stem in stems:
            raise UserError(f"{v} and {stems[stem]} would share the output folder {out / stem}: rename one")
        stems[stem] = v
    with_dirs = [(Path(v), out / Path(v).stem) for v in videos]
    for _, d in with_dirs:
        if d.exists() and (not d.is_dir() or any(d.iterdir())) and not force:
            raise UserError(f"output {d} exists and is not empty (--force overwrites it)")
    # The params, validated as `facesleuth run` validates them (no node is set up yet).
    load_nodes(with_dirs[0][0], with_dirs[0][1] / "events.db", overrides)
    return with_dirs


_progress_queue: Any = None


def _init_worker(q: Any, verbose: bool) -> None:
    global _progress_queue
    _progress_queue = q
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s", datefmt="%H:%M:%S")


def _worker(index: int, video: str, out_dir: str, overrides: list[str]) -> dict[str, Any]:
    """One video in a job process: its summary line's numbers; progress goes to the parent's queue."""
    last = [0]

    def report(done: int, total: int) -> None:
        if done - last[0] >= 10:
            _progress_queue.put((index, done - last[0], total))
            last[0] = done

    r = analyze_file(video, Path(out_dir), overrides, want_frames=False, progress=report)
    _progress_queue.put((index, r.n_frames - last[0], r.n_frames))
    return {"frames": r.n_frames, "events": len(r.events), "wall_s": r.wall_s}


def _line(video: Path, out_dir: Path, frames: int, events: int, wall_s: float) -> str:
    return (f"{video.name}: {frames} frames in {wall_s:.1f} s ({frames / max(wall_s, 1e-9):.1f} fps), "
            f"{events} event(s) -> {out_dir}")


def main(args: argparse.Namespace) -> int:
    from edge.progress import Progress

    todo = plan(args.videos, args.output, args.overrides, args.force, args.jobs)
    totals = [_declared(v) for v, _ in todo]
    set_total = sum(totals) or None
    failed = 0
    t0 = time.monotonic()
    if args.jobs == 1 or len(todo) == 1:
        before = 0
        for i, ((video, out_dir), total) in enumerate(zip(todo, totals, strict=True)):
            bars: list[Progress] = []  # made at the first frame: the nodes' set-up is not in its rate

            def tick(done: int, _total: int, bars: list[Progress] = bars, before: int = before, i: int = i,
                     video: Path = video, total: int = total) -> None:
                if not bars:
                    bars.append(Progress(total or None, f"[{i + 1}/{len(todo)}] {video.name}"))
                info: dict[str, object] = {}
                if set_total and len(todo) > 1:
                    k, elapsed = before + done, time.monotonic() - t0
                    info = {"set": f"{100 * k / set_total:.0f}%",
                            "set_eta": f"{(set_total - k) * elapsed / max(k, 1):.0f}s"}
                bars[0].update(1, **info)

            try:
                r = analyze_file(video, out_dir, args.overrides, progress=tick)
            except FacesleuthError as e:
                failed += 1
                print(f"facesleuth analyze: {video}: error: {e}", flush=True)
                continue
            finally:
                for bar in bars:
                    bar.close()
            before += r.n_frames
            print(_line(video, out_dir, r.n_frames, len(r.events), r.wall_s), flush=True)
    else:
        failed = _run_jobs(todo, totals, set_total, args)
    n = len(todo)
    print(f"analyzed {n - failed} of {n} video(s) in {time.monotonic() - t0:.1f} s -> {args.output}", flush=True)
    return EXIT_FAILED if failed else 0


def _declared(video: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


def _run_jobs(todo: list[tuple[Path, Path]], totals: list[int], set_total: int | None,
              args: argparse.Namespace) -> int:
    """The videos in `--jobs` processes (spawned: each sets up its own nodes, torch and sockets); one
    progress line over the set. Returns how many failed."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from edge.progress import Progress

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    failed = 0
    done_files = 0
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                             initargs=(q, bool(getattr(args, "verbose", False)))) as pool, \
            Progress(set_total, f"analyze {len(todo)} videos, {args.jobs} jobs") as bar:
        futures = {pool.submit(_worker, i, str(v), str(d), list(args.overrides)): i
                   for i, (v, d) in enumerate(todo)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while True:
                try:
                    _, n, _ = q.get_nowait()
                except queue.Empty:
                    break
                bar.update(n, files=f"{done_files}/{len(todo)}")
            for fut in finished:
                i = futures[fut]
                video, out_dir = todo[i]
                done_files += 1
                try:
                    s = fut.result()
                except FacesleuthError as e:
                    failed += 1
                    print(f"facesleuth analyze: {video}: error: {e}", flush=True)
                    continue
                print(_line(video, out_dir, s["frames"], s["events"], s["wall_s"]), flush=True)
            if finished:
                bar.update(0, files=f"{done_files}/{len(todo)}")
    return failed
