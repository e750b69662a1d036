"""`spot`: micro-expression spotting (edge.perception.spot): flows + crops in, intervals out.

The `crops` input gives, per frame and track, the aligned crop (kept in a short ring so that the onset and
apex crops can travel with the interval), head motion, stabilisation residual and ended tracks; the
`flows` input drives the spotter. An interval is emitted as soon as its offset is seen; before that, once
an open event is past its apex, a `provisional` one with its onset and apex crops lets classify prepare
the model input (sent again if the apex moves). Discarded
intervals (head motion, track loss, dropped frames) are logged with their reason and, only with
`emit_discarded`, also emitted with kind "other" and meta `discarded` (for debugging views).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import numpy as np

from edge.perception.spot import FrameInfo, Interval, SpotParams, Spotter
from edge.perception.spot.occlusion import WarpResidual
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node
from edge.runtime.params import node_params, with_set

# SpotParams fields a graph can set on the node (the rest: a params file from `facesleuth calib spot`).
_EXPOSED = ("k_on", "k_off", "k_bump", "micro_max_s", "head_speed_max", "residual_max", "early_close")


def _state(arrays: dict[str, np.ndarray], i: int) -> dict[str, object]:
    """Track i's facial state from a crops message (FrameInfo fields; those the message lacks are left
    out: an older face node, or a plugin's, sends none)."""
    out: dict[str, object] = {}
    if len(arrays.get("eye_open", ())) > i:
        out["eye_open"] = (float(arrays["eye_open"][i][0]), float(arrays["eye_open"][i][1]))
    for key in ("mouth_open", "speech"):
        if len(arrays.get(key, ())) > i:
            out[key] = float(arrays[key][i])
    if len(arrays.get("head_pose", ())) > i:
        out["head_pose"] = tuple(float(v) for v in arrays["head_pose"][i])
    return out


@register_node("spot")
class SpotNode(Node):
    """Spot micro/macro expressions and blinks on ROI motion curves; emit intervals with onset/apex crops."""

    # A frame's head motion must be noted before its flows are pushed, and its ended tracks closed after
    # them: the framework merges the two inputs into that order (edge.runtime.sync).
    input_sync = "frame_order"
    input_order = ("crops", "flows", "ended")
    inputs = {"flows": Port("flows", "flow against the frame `lag` back, per track"),
              "crops": Port("crops", "aligned crops, head motion, residual, ended tracks")}
    outputs = {"intervals": Port("intervals", "one message per interval (kinds micro, macro, blink)")}
    params = {
        "params_file": Param(str, "", "JSON from `facesleuth calib spot` (its values replace the defaults)"),
        **node_params(SpotParams, _EXPOSED, unset=True),
        "crop_history_s": Param(float, 6.0, "seconds of crops kept per track for onset/apex crops", min=0.5),
        "emit_discarded": Param(bool, False, "also emit discarded intervals (kind 'other', meta discarded)"),
        "checkpoint_every": Param(int, 12, "save the spotting state every this many inputs, so that a restarted "
                                  "process goes on where this one was (0: never; upstream queues must exceed it)",
                                  min=0),
    }

    @classmethod
    def checkpoint_every(cls, params: dict) -> int:
        # Seconds of noise statistics and the open intervals: no short window of flows rebuilds them, so a
        # restart mid-stream would change or lose the events near it (edge.runtime.checkpoint).
        return int(params["checkpoint_every"])

    def save_state(self) -> dict:
        return {"spotters": self.spotters, "crops": self.crops, "provisional_sent": self.provisional_sent,
                "residuals": self.residuals}

    def load_state(self, state: dict) -> None:
        # One assignment: a state missing a key changes nothing (the runner then starts from scratch)
        self.spotters, self.crops, self.provisional_sent, self.residuals = (
            state["spotters"], state["crops"], state["provisional_sent"], state["residuals"])

    def setup(self) -> None:
        base = SpotParams.load(self.p.params_file) if self.p.params_file else SpotParams()
        # Values set in the graph win over the file, even one equal to the default; unset ones keep the
        # file's (or the defaults).
        sp = with_set(base, {k: getattr(self.p, k) for k in _EXPOSED})
        sp.check()
        self.params_used = sp
        self.spotters: dict[str, Spotter] = {}
        # (stream, track) -> ring of (frame, crop, box); per stream, the last crops message seen
        self.crops: dict[tuple[str, int], deque[tuple[int, np.ndarray, list[float]]]] = {}
        self.provisional_sent: dict[tuple[str, int], tuple[int, int]] = {}  # (stream, track) -> (onset, apex)
        self.residuals: dict[tuple[str, int], WarpResidual] = {}  # per-ROI occlusion (from the flow)
        self.log.info("spot params %s", sp)

    def make_spotter(self) -> Spotter:
        """A new stream's spotter (the spotting bench's subclass records what it is given: edge.bench.clips)."""
        return Spotter(self.params_used)

    def _spotter(self, stream: str) -> Spotter:
        if stream not in self.spotters:
            self.spotters[stream] = self.make_spotter()
        return self.spotters[stream]

    def sync_stages(self, port: str, msg: Message) -> list[str]:
        """A crops message that ends tracks comes back at stage "ended", after that frame's flows."""
        return ["crops", "ended"] if port == "crops" and msg.meta.get("ended") else [port]

    def process(self, port: str, msg: Message) -> None:
        if port == "crops":
            self._keep_crops(msg)
            self._note_frame(msg)
        elif port == "flows":
            self._flows(msg)
        else:  # "ended": the tracks this crops message ended
            self._end_tracks(msg)

    def _keep_crops(self, msg: Message) -> None:
        sp = self._spotter(msg.stream)
        a = msg.arrays
        for i, tid in enumerate(int(t) for t in a["track_ids"]):
            ring = self.crops.get((msg.stream, tid))
            if ring is None:
                ring = self.crops[(msg.stream, tid)] = deque()
            ring.append((msg.frame, np.array(a["crops"][i]), [float(v) for v in a["boxes"][i]]))
            while ring and (msg.frame - ring[0][0]) > self._keep(sp, tid):
                ring.popleft()

    def _note_frame(self, msg: Message) -> None:
        sp = self._spotter(msg.stream)
        a = msg.arrays
        n = len(a["track_ids"])
        motion = list(msg.meta.get("head_motion", [])) + [0.0] * n
        for i in range(n):
            sp.note_frame(msg.frame, int(a["track_ids"][i]),
                          FrameInfo.from_transform(motion[i], a["residual"][i], a["transforms"][i], landmarks=str(msg.meta.get("landmarks", "")), **_state(a, i)))

    def _end_tracks(self, msg: Message) -> None:
        sp = self._spotter(msg.stream)
        for tid in msg.meta.get("ended", []):
            for iv in sp.end_track(int(tid), "track lost"):
                self._send(msg, iv)
            self.crops.pop((msg.stream, int(tid)), None)
            self.provisional_sent.pop((msg.stream, int(tid)), None)
            self.residuals.pop((msg.stream, int(tid)), None)

    def _keep(self, sp: Spotter, tid: int) -> float:
        return self.p.crop_history_s * self._fps(sp, tid)

    @staticmethod
    def _fps(sp: Spotter, tid: int) -> float:
        t = sp.tracks.get(tid)
        return t.fps() if t is not None else 30.0

    def _flows(self, msg: Message) -> None:
        sp = self._spotter(msg.stream)
        a = msg.arrays
        for flow, tid, ref in zip(a["flows"], a["track_ids"], a["ref_frames"], strict=True):
            self._occlusion(msg, sp, int(tid), int(ref), flow)
            for iv in sp.push(msg.frame, msg.t_mono_ns, msg.t_wall_ns, int(tid), int(ref), flow):
                self._send(msg, iv)
            self._provisional(msg, sp, int(tid))

    def _occlusion(self, msg: Message, sp: Spotter, tid: int, ref: int, flow: np.ndarray) -> None:
        """Add the per-ROI occlusion scores (edge.perception.spot.occlusion) of this flow to the frame's
        face-node info: they need the flow and both crops, which only meet here."""
        info = sp.info.get((msg.frame, tid))
        ring = self.crops.get((msg.stream, tid))
        if info is None or not ring or ring[-1][0] != msg.frame:
            return
        ref_crop = next((c for f, c, _ in ring if f == ref), None)
        if ref_crop is None:
            return
        key = (msg.stream, tid)
        if key not in self.residuals:
            self.residuals[key] = WarpResidual(ring[-1][1].shape[0], self._fps(sp, tid))
        rois, edges = self.residuals[key].update(ref_crop, ring[-1][1], flow)
        sp.note_frame(msg.frame, tid, dataclasses.replace(
            info, occlusion=tuple(round(float(v), 2) for v in rois),
            edge_occlusion=round(float(edges.max()), 2) if edges.size else None))

    def _provisional(self, msg: Message, sp: Spotter, tid: int) -> None:
        """Send an open event's onset and apex crops once it is past its apex (again if they move), kind
        `provisional`: classify prepares the model input from them before the interval closes."""
        t = sp.tracks.get(tid)
        pv = t.provisional() if t is not None else None
        if pv is None or self.provisional_sent.get((msg.stream, tid)) == pv:
            return
        crops = self._interval_crops(msg.stream, tid, *pv)
        if crops is not None:
            self.provisional_sent[(msg.stream, tid)] = pv
            self.emit("intervals", msg.derive("intervals", {"track_id": tid, "kind": "provisional", "onset": pv[0],
                                                            "apex": pv[1]}, crops[0]))

    def _interval_crops(self, stream: str, tid: int, onset_frame: int, apex_frame: int
                        ) -> tuple[dict[str, np.ndarray], list[float]] | None:
        """The crops an interval carries (onset, apex and the frames next to the apex) and the face box at
        the apex; None if they are not kept."""
        onset, _ = self._crop_at(stream, tid, onset_frame)
        apex, box = self._crop_at(stream, tid, apex_frame)
        if onset is None or apex is None:
            return None
        arrays = {"onset": onset, "apex": apex}
        # The frames next to the apex too: the apex frame is uncertain by one, and one onset->apex flow of
        # sub-pixel motion under noise can tip the classifier (classify averages over them).
        near = [c for f, c, _ in self.crops.get((stream, tid), ()) if abs(f - apex_frame) == 1]
        if near:
            arrays["apex_near"] = np.stack(near)
        return arrays, box

    def _crop_at(self, stream: str, tid: int, frame: int) -> tuple[np.ndarray | None, list[float]]:
        """The kept crop of (stream, tid) nearest to `frame` (and its box)."""
        ring = self.crops.get((stream, tid))
        if not ring:
            return None, []
        f, crop, box = min(ring, key=lambda r: abs(r[0] - frame))
        return crop, box

    def _send(self, msg: Message, iv: Interval) -> None:
        if iv.discarded and not self.p.emit_discarded:
            return
        crops = self._interval_crops(msg.stream, iv.track_id, iv.onset, iv.apex)
        if crops is None:
            self.log.warning("track %d: no crops kept for interval %d-%d; not emitted", iv.track_id,
                             iv.onset, iv.offset)
            return
        arrays, box = crops
        meta = {"track_id": iv.track_id, "kind": "other" if iv.discarded else iv.kind,
                "onset": iv.onset, "apex": iv.apex, "offset": iv.offset,
                "t_onset_ns": iv.t_onset_ns, "t_apex_ns": iv.t_apex_ns, "t_offset_ns": iv.t_offset_ns,
                "wall_onset_ns": iv.wall_onset_ns, "wall_apex_ns": iv.wall_apex_ns,
                "wall_offset_ns": iv.wall_offset_ns, "duration_s": round(iv.duration_s, 4),
                "score": round(iv.score, 2), "intensity": round(iv.intensity, 3), "rois": iv.rois, "box": box,
                "context": iv.context,
                # for the event's latency breakdown: capture time of the frame that closed the interval,
                # and when it left here
                "t_close_ns": msg.t_mono_ns, "t_sent_ns": time.monotonic_ns()}
        if iv.discarded:
            meta["discarded"] = iv.discarded
        out = msg.derive("intervals", meta, arrays)
        self.emit("intervals", out)

    def end_of_stream(self) -> None:
        """Close events still open at the end of the stream (they are emitted as they stand)."""
        for stream, sp in self.spotters.items():
            last = Message("intervals", stream)
            for iv in sp.finish():
                last.frame, last.t_mono_ns, last.t_wall_ns = iv.offset, iv.t_offset_ns, iv.wall_offset_ns
                self._send(last, iv)
