"""The Python API: `edge.analyze_video` (a recorded video through configs/video.yaml's nodes, in this
process) and `edge.subscribe` (a running graph's live events, gaps repaired through replay). Events come
as plain frozen dataclasses, so a Python user needs neither msgpack nor ZeroMQ (docs/analyze.md).

    import edge
    result = edge.analyze_video("clip.mp4", **{"spot.k_on": 5.0})
    for ev in result.events:
        print(ev.label, ev.confidence, ev.onset_s, ev.offset_s)
    for ev in edge.subscribe():        # the events node's default endpoints
        print(ev.seq, ev.label)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import UserError

PANDAS_MISSING = "to_pandas() needs pandas, which is not installed: pip install pandas"


def _float(v: Any, default: float = float("nan")) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


@dataclass(frozen=True)
class Event:
    """One mer.event (docs/contracts.md has every field; `fields` holds them all, as logged).

    Times `onset_s`, `apex_s`, `offset_s`: from analyze_video, seconds from the video's first frame; from
    subscribe, the capture time as Unix seconds (the event log's columns)."""

    seq: int
    stream: str
    track_id: int
    kind: str                      # micro | macro | blink | other
    label: str
    confidence: float
    onset_frame: int
    apex_frame: int
    offset_frame: int
    onset_s: float
    apex_s: float
    offset_s: float
    duration_s: float
    intensity: float               # peak ROI displacement, crop px
    scores: dict[str, float] = field(default_factory=dict)
    rois: tuple[str, ...] = ()
    box: tuple[float, ...] = ()    # face box at the apex: x, y, w, h, frame px
    context: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    fields: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, ev: dict[str, Any]) -> Event:
        """An event as the log, the PUB stream or analyze's events.jsonl hold it."""
        points = {p: ev.get(p) if isinstance(ev.get(p), dict) else {} for p in ("onset", "apex", "offset")}
        video = ev.get("video") if isinstance(ev.get("video"), dict) else None
        if video is not None:  # analyze: seconds of the file
            secs = {p: _float(video.get(f"{p}_s")) for p in points}
        else:
            secs = {p: _float(points[p].get("t_wall_ns")) / 1e9 for p in points}
        model = ev.get("model")
        return cls(
            seq=int(ev.get("seq", -1)), stream=str(ev.get("stream", "")), track_id=int(ev.get("track_id", -1)),
            kind=str(ev.get("kind", "")), label=str(ev.get("label", "")), confidence=_float(ev.get("confidence")),
            onset_frame=int(points["onset"].get("frame", -1)), apex_frame=int(points["apex"].get("frame", -1)),
            offset_frame=int(points["offset"].get("frame", -1)),
            onset_s=secs["onset"], apex_s=secs["apex"], offset_s=secs["offset"],
            duration_s=_float(ev.get("duration_s")), intensity=_float(ev.get("intensity")),
            scores={str(k): float(v) for k, v in (ev.get("scores") or {}).items()},
            rois=tuple(str(r) for r in ev.get("rois") or ()), box=tuple(float(v) for v in ev.get("box") or ()),
            context=dict(ev.get("context") or {}),
            model=str(model.get("id", "")) if isinstance(model, dict) else str(model or ""),
            fields=dict(ev),
        )


def _require_pandas():
    if importlib.util.find_spec("pandas") is None:
        raise UserError(PANDAS_MISSING)
    import pandas

    return pandas


@dataclass(frozen=True)
class Result:
    """analyze_video's answer: the events, the per-frame rows (frames.csv's columns, docs/analyze.md; None
    with frames=False) and the video's rate and length."""

    path: Path
    fps: float
    n_frames: int
    events: list[Event]
    frames: list[dict[str, Any]] | None

    def to_pandas(self, table: str = "events"):
        """A pandas DataFrame of the events (events.csv's columns) or, with table="frames", of the frames."""
        pandas = _require_pandas()
        if table == "frames":
            if self.frames is None:
                raise UserError("no per-frame rows: call analyze_video(..., frames=True)")
            from edge.analyze import frame_columns

            return pandas.DataFrame(self.frames, columns=frame_columns())
        if table != "events":
            raise UserError(f"table must be 'events' or 'frames', got {table!r}")
        import io

        from edge.events.export import write_csv

        text = io.StringIO()
        write_csv([e.fields for e in self.events], text)
        text.seek(0)
        return pandas.read_csv(text)


def analyze_video(path: str | Path, *, frames: bool = True, out: str | Path | None = None,
                  progress: bool = False, **params: Any) -> Result:
    """Run a video file through configs/video.yaml's nodes in this process.

    `params`: the graph's params as `facesleuth run --set` takes them, validated the same way, either
    dotted (`**{"spot.k_on": 5.0}`) or one dict per node (`spot={"k_on": 5.0}`). `frames`: also return the
    per-frame rows. `out`: also write analyze's outputs (events.csv, frames.csv, the annotated video, ...)
    to this folder. Raises edge.errors.UserError for a bad path, video or param."""
    from edge.analyze import analyze_file, check_video, user_overrides

    check_video(path)
    bar = None

    def tick(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from edge.progress import Progress

            bar = Progress(total or None, Path(path).name)
        bar.update(1)

    try:
        r = analyze_file(path, Path(out) if out is not None else None, user_overrides(params), want_frames=frames,
                         progress=tick if progress else None)
    finally:
        if bar is not None:
            bar.close()
    return Result(Path(path), r.fps, r.n_frames, [Event.from_dict(e) for e in r.events], r.frames)


def subscribe(endpoint: str | None = None, since: int | None = None, *, replay: str | None = None,
              keys: str | Path | None = None, timeout_s: float | None = None) -> Iterator[Event]:
    """A running graph's events, each exactly once and in order: a gap in the live stream (a dropped or
    late subscription) is filled from the replay endpoint; `since=N` first replays every event after seq N.

    `endpoint`/`replay`: the events node's `pub`/`replay` (default: that node's defaults); `keys`: a CURVE
    key folder for a non-loopback endpoint. Ends after `timeout_s` with no event (None: never)."""
    from edge.runtime.transport import EventClient, context
    from nodes.events import EventsSink

    endpoint = endpoint or EventsSink.params["pub"].default
    replay = replay or EventsSink.params["replay"].default
    curve = None
    if keys:
        from edge.runtime.keys import load_curve

        curve = load_curve(keys)
    ctx = context()
    # Connected now, not at the first next(): what is published from here on reaches the subscription.
    client = EventClient(ctx, endpoint, replay, since=since, curve=curve)

    def events() -> Iterator[Event]:
        try:
            for ev in client.events(timeout_s=timeout_s):
                yield Event.from_dict(ev)
        finally:
            client.close()
            ctx.term()

    return events()
