"""`facesleuth view VIDEO -o OUT`: see what the nodes see.

Runs the face library (edge.perception.face) and the flow library (edge.perception.flow) in-process on a video file and writes
either an annotated video (OUT ends in .avi or .mp4) or a PNG strip of sampled frames (OUT ends in .png).
Each frame shows the face boxes with track id, stabilisation residual (crop px) and head motion
(frame px/frame) and its facial state (edge.perception.face.state: head pose in degrees, mouth opening,
speech activity), and on the right, per track, its aligned crop, with bars for the eyes' openness (left
and right edges, full height = the usual open level) and speech (bottom), next to the flow against the
crop `lag` frames back as colour (hue = direction, brightness = magnitude, full at `--flow-max` px), and
the ROIs (edge.perception.geometry) on the crop, one colour per mirrored pair.

The PNG strip (edge.debug_strip) also runs the graph's spot node in-process (InProcessSpot) and marks what
it spots: each interval's apex frame joins the sampled frames, a frame inside an interval is captioned and
framed in the kind's colour, a timeline of the clip shows every interval, and a legend says what each
mark and colour means. Labels (surprise, ...) need the classifier: they are in a graph run's events.
"""

from __future__ import annotations

import argparse
import logging
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError
from edge.perception.geometry import ROIS, roi_boxes
from edge.perception.spot.features import PAIRS
from edge.progress import Progress
from edge.runtime.messages import Message

log = logging.getLogger(__name__)

PANEL_ROWS = 3  # tracks shown beside the frame
MAX_EVENT_TILES = 8  # the strip shows the apex frame of the first this many spotted intervals
RECENT_S = 6.0  # strip tiles kept this long (an interval is spotted after its offset, up to ~4 s past its apex)
GREEN, YELLOW, WHITE, CYAN = (80, 220, 80), (0, 220, 255), (255, 255, 255), (255, 220, 0)
# One colour per ROI (edge.perception.geometry.ROIS order, BGR), mirrored pairs alike: the boxes drawn on
# the aligned crop and the live view's ROI-motion plot (edge.live) use these same colours.
ROI_COLOURS: dict[str, tuple[int, int, int]] = dict(zip(ROIS, (
    (255, 160, 60), (255, 160, 60), (60, 200, 255), (60, 200, 255), (200, 120, 255), (200, 120, 255),
    (90, 90, 255), (90, 90, 255), (180, 255, 120)), strict=True))


def roi_group(roi: str) -> str:
    """An ROI's mirrored pair (edge.perception.spot.features.PAIRS: brows, eyes, ...), else the ROI itself."""
    return next((pair for pair, members in PAIRS.items() if roi in members), roi)


# The ROIs by pair, in ROI order (brows, eyes, nose, mouth, chin), with their colour: the legends' names.
ROI_GROUPS: dict[str, tuple[int, int, int]] = {}
for _roi, _colour in ROI_COLOURS.items():
    ROI_GROUPS.setdefault(roi_group(_roi), _colour)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="input video file")
    parser.add_argument("-o", "--output", required=True, help="output .avi / .mp4 (video) or .png (strip)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    parser.add_argument("--strip-frames", type=int, default=8, help="frames sampled into a .png strip")
    parser.add_argument("--flow", default="dis", help="flow backend (edge.perception.flow; default dis)")
    parser.add_argument("--lag", type=int, default=3, help="flow against the crop this many frames back")
    parser.add_argument("--flow-max", type=float, default=1.0, help="flow magnitude shown at full colour, px")
    parser.add_argument("--detector", default="haar", help="face detector: haar, yunet, dlib")
    parser.add_argument("--model", default=None, help="detector model file (yunet)")
    parser.add_argument("--landmarks", default="auto", help="auto, eyes or dlib68")
    parser.add_argument("--detect-every", type=int, default=5, help="detector period, frames")


def flow_colour(flow: np.ndarray, max_px: float = 1.0) -> np.ndarray:
    """(H, W, 2) flow px -> (H, W, 3) BGR uint8: hue = direction, value = magnitude / max_px (clipped)."""
    mag, ang = cv2.cartToPolar(np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1]))
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (ang * 90 / np.pi).astype(np.uint8)  # OpenCV hue is 0..180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max(max_px, 1e-6) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def state_text(faces, i: int) -> str:
    """One line of face i's state: head pose degrees (pose source), mouth opening, speech activity."""
    yaw, pitch, roll = faces.head_pose[i]
    pose = f"roll {roll:.0f}" if np.isnan(yaw) else f"yaw {yaw:.0f} pitch {pitch:.0f} roll {roll:.0f}"
    return f"{pose} mouth {faces.mouth_open[i]:.2f} speech {faces.speech[i]:.2f}"


MIN_TEXT_SCALE = 0.33  # under this the state line is split in two rather than shrunk: smaller is unreadable


def fit_text(text: str, x: int, width: int, scale: float) -> tuple[int, float]:
    """(x, scale) that keep `text` (FONT_HERSHEY_SIMPLEX, thickness 1) inside a frame `width` px wide:
    moved left first, then smaller (a small clip's face box is narrower than the state line)."""
    tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    if tw > width - 4:
        scale *= (width - 4) / tw
        tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    return max(0, min(x, width - tw - 2)), scale


def draw_state_bars(crop: np.ndarray, eye_open: np.ndarray, speech: float) -> None:
    """Bars on a (S, S, 3) crop: the eyes' openness up its left and right edges (full height at 1.2, the
    usual level at 5/6 of it) and speech activity along its bottom, in place."""
    s = crop.shape[0]
    for x, v in ((0, eye_open[0]), (s - 5, eye_open[1])):
        top = s - int(round(np.clip(v / 1.2, 0, 1) * (s - 8)))
        cv2.rectangle(crop, (x, top), (x + 4, s - 6), YELLOW if v < 0.6 else GREEN, -1)
    width = int(round(np.clip(speech, 0, 1) * s))
    if width:
        cv2.rectangle(crop, (0, s - 4), (width - 1, s - 1), CYAN, -1)


def draw_rois(crop: np.ndarray) -> None:
    """The ROIs (edge.perception.geometry) as thin boxes on a (S, S, 3) aligned crop, in place."""
    for name, (x0, y0, x1, y1) in roi_boxes(crop.shape[0]).items():
        cv2.rectangle(crop, (x0, y0), (x1 - 1, y1 - 1), ROI_COLOURS[name], 1)


def compose_view(frame: np.ndarray, faces, flows: dict[int, np.ndarray], flow_max: float,
                 frame_index: int) -> np.ndarray:
    """The annotated frame (BGR) with a panel of [crop | flow colour] rows, one per track, on the right."""
    img = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    h = img.shape[0]
    s = faces.crops.shape[1]
    panel = np.zeros((max(h, PANEL_ROWS * s), 2 * s, 3), np.uint8)
    for i, tid in enumerate(faces.track_ids.tolist()):
        x, y, w, bh = faces.boxes[i]
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + bh)), GREEN, 2)
        label = f"#{tid} res {faces.residual[i]:.2f} mot {faces.head_motion[i]:.1f}"
        lx, ls = fit_text(label, int(x), img.shape[1], 0.45)
        cv2.putText(img, label, (lx, max(12, int(y) - 6)), cv2.FONT_HERSHEY_SIMPLEX, ls, YELLOW, 1)
        state = state_text(faces, i)
        lines = [state] if fit_text(state, 0, img.shape[1], 0.4)[1] >= MIN_TEXT_SCALE else \
            state.replace(" mouth", "\nmouth").split("\n")  # a small frame: pose, then the mouth
        for j, line in enumerate(lines):
            sx, ss = fit_text(line, int(x), img.shape[1], 0.4)
            cv2.putText(img, line, (sx, min(h - 24 + 12 * j, int(y + bh) + 14 + 12 * j)), cv2.FONT_HERSHEY_SIMPLEX,
                        ss, CYAN, 1)
        if i >= PANEL_ROWS:
            continue
        crop = cv2.cvtColor(faces.crops[i], cv2.COLOR_GRAY2BGR)
        draw_rois(crop)
        for px, py in faces.points[i]:
            cv2.circle(crop, (int(round(px)), int(round(py))), 1, GREEN, -1)
        draw_state_bars(crop, faces.eye_open[i], float(faces.speech[i]))
        panel[i * s:(i + 1) * s, :s] = crop
        if tid in flows:
            panel[i * s:(i + 1) * s, s:] = flow_colour(flows[tid], flow_max)
        cv2.putText(panel, f"#{tid}", (4, i * s + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, YELLOW, 1)
    cv2.putText(img, f"frame {frame_index}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, WHITE, 1)
    if panel.shape[0] > h:
        img = cv2.copyMakeBorder(img, 0, panel.shape[0] - h, 0, 0, cv2.BORDER_CONSTANT)
    return np.hstack([img, panel])


def _writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise UserError(f"cannot write video {path}")
    return writer


class InProcessSpot:
    """The graph's own spot node (nodes/spot.py) in this process, fed what the face and flow nodes would
    send it (their message layout, the same input order), so the strip marks what a graph run spots."""

    def __init__(self, fps: float, lag: int) -> None:
        from edge.runtime.node import get_node_class
        from edge.runtime.sync import InputSync

        self.fps, self.lag = fps, lag
        self.node = get_node_class("spot").for_test("spot")
        self.node.setup()
        self.sync = InputSync(self.node)

    def _feed(self, port: str, msg: Message) -> None:
        from edge.runtime.sync import deliver

        for stage, batch in self.sync.add(port, [msg]):
            deliver(self.node, stage, batch)

    def _take(self) -> list[Message]:
        """The intervals spotted since the last call (not the provisional ones, which classify uses)."""
        out = [m for _, m in self.node.emitted if m.meta.get("kind") != "provisional"]
        self.node.emitted.clear()
        return out

    def frame(self, k: int, faces, flows: dict[int, np.ndarray], refs: dict[int, int], tracker) -> list[Message]:
        """Frame k's faces and flows ((H, W, 2) per track, against frame refs[track]) -> intervals closed."""
        t = int(1e9 + k / self.fps * 1e9)  # file time, as capture's media clock
        crops = Message("crops", "view", frame=k, t_mono_ns=t, t_wall_ns=t, meta={
            "crop_size": tracker.size, "landmarks": tracker.landmarks, "ended": list(faces.ended),
            "head_motion": list(faces.head_motion), "pose_source": tracker.pose_source, "clock": "media"},
            arrays=faces.arrays())
        size = faces.crops.shape[1]
        ids = list(flows)
        uv = np.stack([flows[i].transpose(2, 0, 1) for i in ids]) if ids else np.zeros((0, 2, size, size))
        self._feed("crops", crops)
        self._feed("flows", crops.derive("flows", {"lag": self.lag, "scale": 1.0, "crop_size": size}, {
            "flows": np.ascontiguousarray(uv, np.float32), "track_ids": np.asarray(ids, np.int32),
            "ref_frames": np.asarray([refs[i] for i in ids], np.int64)}))
        return self._take()

    def finish(self) -> list[Message]:
        """End of the clip: what the inputs held back, then the intervals still open."""
        from edge.runtime.sync import deliver

        for stage, batch in self.sync.flush():
            deliver(self.node, stage, batch)
        self.node.end_of_stream()
        return self._take()


def main(args: argparse.Namespace) -> int:
    from edge.debug_strip import Mark, compose_strip, tile
    from edge.perception.face import FaceTracker
    from edge.perception.flow import LagBuffer, create_flow

    out = Path(args.output)
    if out.suffix.lower() not in (".avi", ".mp4", ".png"):
        raise UserError(f"output must end in .avi, .mp4 or .png, got {out.name!r}")
    if not Path(args.video).is_file():
        raise UserError(f"video file not found: {args.video}")
    cap = cv2.VideoCapture(str(args.video))
    if not cap.isOpened():
        raise UserError(f"cannot open video {args.video} (not a video file, or no codec for it)")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if args.max_frames > 0:
        total = min(total or args.max_frames, args.max_frames)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    tracker = FaceTracker(detector=args.detector, landmarks=args.landmarks, detect_every=args.detect_every,
                          model=args.model or "")
    tracker.fps = fps  # times the facial state's filters, as the face node does
    flow, lags = create_flow(args.flow), LagBuffer(args.lag)
    strip = out.suffix.lower() == ".png"
    sample = set(np.linspace(0, (total or 1) - 1, args.strip_frames).round().astype(int).tolist()) if strip else set()
    spot = InProcessSpot(fps, args.lag) if strip else None
    recent: deque[tuple[int, np.ndarray]] = deque(maxlen=int(fps * RECENT_S))  # strip tiles of the last frames
    marks: list[Mark] = []
    writer, tiles, k, seen = None, {}, 0, set()

    def note(intervals: list[Message]) -> None:
        """Mark each spotted interval; its apex frame joins the strip (the first MAX_EVENT_TILES)."""
        for iv in intervals:
            m = iv.meta
            marks.append(Mark(str(m["kind"]), int(m["track_id"]), int(m["onset"]), int(m["apex"]), int(m["offset"]),
                              len(marks) + 1))
            apex = next((t for f, t in recent if f == int(m["apex"])), None)
            if apex is not None and len(marks) <= MAX_EVENT_TILES:
                tiles[int(m["apex"])] = apex

    try:
        with Progress(total, "view") as progress:
            while not (args.max_frames > 0 and k >= args.max_frames):
                ok, frame = cap.read()
                if not ok:
                    break
                faces = tracker.update(frame)
                seen.update(faces.track_ids.tolist())
                flows, refs = {}, {}
                for tid, crop in zip(faces.track_ids.tolist(), faces.crops, strict=True):
                    ref = lags.push(tid, k, crop)
                    if ref is not None:
                        flows[tid], refs[tid] = flow.calc(ref[1], crop), ref[0]
                for tid in faces.ended:
                    lags.end(tid)
                view = compose_view(frame, faces, flows, args.flow_max, k)
                if strip:
                    recent.append((k, tile(view)))
                    if k in sample:
                        tiles[k] = recent[-1][1]
                    note(spot.frame(k, faces, flows, refs, tracker))
                else:
                    if writer is None:
                        writer = _writer(out, fps, (view.shape[1], view.shape[0]))
                    writer.write(view)
                k += 1
                progress.update(1)
        if spot is not None:
            note(spot.finish())
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if k == 0:
        raise UserError(f"no frame could be read from {args.video}")
    if strip:
        if not tiles:
            tiles[k - 1] = tile(view)
        if not cv2.imwrite(str(out), compose_strip(list(tiles.items()), k, fps, marks, args.flow_max)):
            raise UserError(f"cannot write {out}")
        print(f"wrote {out} ({k} frames, {len(seen)} tracks, {len(marks)} intervals spotted)")
        return 0
    print(f"wrote {out} ({k} frames, {len(seen)} tracks)")
    return 0
