"""Each long video once through the product's face, flow and spot nodes, recorded and cached.

The recording is edge.bench.clips.extract: the node classes of a running graph with the params of
configs/video.yaml (the nodes' defaults: lag 3, flow backend auto, spot defaults), fed the frame folder in
frame-number order at the dataset's frame rate. What the spotter was given is recorded, so every threshold
setting afterwards is a cheap replay (spot_clip) instead of another pass over the frames.

Cache: one file per video under `--cache DIR`, named by a hash of what changes the recording: the frame
folder (resolved path), its frame count and first/last numbers, the face node's params (and the landmarks
`auto` resolved to), the flow backend as resolved here with its params and lag, the spotter's `rigid`,
and RECORDING_VERSION. An entry is written to a temporary name and renamed, so a run killed mid-write
leaves no entry; one that cannot be read back (or whose key differs) is recorded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.bench.clips import Clip
from edge.data.longvideo import LongVideo
from edge.progress import Progress
from edge.spotting_eval.frames import FrameFolder

log = logging.getLogger(__name__)

# Bump when extract() or what is pickled changes meaning: older entries are then recorded again.
RECORDING_VERSION = 1
LAG = 3            # configs/video.yaml's flow node (the nodes' default)
BACKEND = "auto"   # ditto


@dataclass
class Recording:
    """One long video's recorded spotter input and the numbering that maps it back to the dataset."""

    video: LongVideo
    numbers: list[int]      # numbers[k]: the dataset's frame number of pipeline frame k
    clip: Clip
    source: str             # "cache" or "recorded"


def pipeline_key() -> dict[str, Any]:
    """The node params that change a recording (module docstring), as plain JSON values."""
    from edge.perception.face.landmarks import make_landmarker
    from edge.perception.flow import create_flow
    from edge.perception.spot import SpotParams
    from nodes.face import FaceNode

    flow = create_flow(BACKEND)
    face = {k: v for k, v in FaceNode.resolve_params({}).items()}
    # `auto` picks dlib68 where it is installed, else the eye cascade: the landmarks that actually ran
    face["landmarks_used"] = make_landmarker(face["landmarks"], face["landmark_model"] or None).kind
    return {"version": RECORDING_VERSION, "face": face, "flow": {"backend": flow.name, "params": flow.params,
            "lag": LAG}, "rigid": SpotParams().rigid}


def entry_key(video: LongVideo, pipeline: dict[str, Any]) -> dict[str, Any]:
    numbers = list(video.frames)
    return {"folder": str(Path(video.folder).resolve()), "frames": len(numbers), "first": numbers[0],
            "last": numbers[-1], **pipeline}


def entry_path(cache: Path, video: LongVideo, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return cache / video.dataset / f"{video.subject}_{video.video}_{digest}.clip"


def read_entry(path: Path, key: dict[str, Any]) -> tuple[list[int], Clip] | None:
    """A cached recording, or None when there is none, it is damaged, or it was made with another key."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            doc = pickle.load(f)
        if doc["key"] != json.loads(json.dumps(key, default=str)):
            raise ValueError("another key")
        return list(doc["numbers"]), doc["clip"]
    except Exception as e:  # any damage (truncated, not a pickle, another layout): record it again
        log.warning("cache entry %s unusable (%s: %s); recording the video again", path, type(e).__name__, e)
        return None


def write_entry(path: Path, key: dict[str, Any], numbers: list[int], clip: Clip) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"key": json.loads(json.dumps(key, default=str)), "numbers": numbers, "clip": clip}, f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)  # atomic: a half-written entry is never under the entry's name


def record_video(video: LongVideo, progress: Progress | None = None) -> tuple[list[int], Clip, int]:
    """Run one video through the nodes; (numbers, clip, frames decoded)."""
    from edge.bench.clips import extract

    reader = FrameFolder(video)
    clip = extract(reader, LAG, BACKEND, baseline=False, progress=progress)
    return reader.numbers, clip, reader.read


def _worker(job: tuple[LongVideo, str | None, dict[str, Any]]) -> tuple[list[int], Clip, int]:
    """A --jobs process: record one video and write its cache entry (so a killed run keeps what is done)."""
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    video, cache, key = job
    numbers, clip, read = record_video(video)
    if cache:
        write_entry(entry_path(Path(cache), video, key), key, numbers, clip)
    return numbers, clip, read


def record_all(videos: list[LongVideo], cache: Path | None, jobs: int = 1,
               progress: bool = True) -> tuple[list[Recording], int]:
    """Every video's recording, from the cache where it holds one; (recordings in video order, frames
    decoded). `jobs` > 1 records the missing videos in that many processes."""
    pipeline = pipeline_key()
    keys = [entry_key(v, pipeline) for v in videos]
    done: dict[int, Recording] = {}
    for i, (v, key) in enumerate(zip(videos, keys, strict=True)):
        hit = read_entry(entry_path(cache, v, key), key) if cache else None
        if hit is not None:
            done[i] = Recording(v, hit[0], hit[1], "cache")
    todo = [i for i in range(len(videos)) if i not in done]
    read = 0
    log.info("eval spotting: %d video(s) cached, %d to record", len(done), len(todo))
    total = sum(len(videos[i].frames) for i in todo)
    with Progress(total, "eval spotting: face+flow+spot", enabled=progress and bool(todo)) as prog:
        if jobs > 1 and len(todo) > 1:
            # spawn, not fork: this process may hold OpenCV threads, which a forked child inherits dead
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=ctx) as pool:
                futures = {pool.submit(_worker, (videos[i], str(cache) if cache else None, keys[i])): i
                           for i in todo}
                for fut in as_completed(futures):
                    i = futures[fut]
                    numbers, clip, n = fut.result()
                    done[i], read = Recording(videos[i], numbers, clip, "recorded"), read + n
                    prog.update(len(numbers), video=videos[i].key)
        else:
            for i in todo:
                numbers, clip, n = record_video(videos[i], prog)
                if cache:
                    write_entry(entry_path(cache, videos[i], keys[i]), keys[i], numbers, clip)
                done[i], read = Recording(videos[i], numbers, clip, "recorded"), read + n
    return [done[i] for i in range(len(videos))], read
