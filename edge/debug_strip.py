"""The PNG strip of `facesleuth view VIDEO -o OUT.png`: sampled frames and the spotted events, a timeline
and a legend.

Tiles are compose_view() pictures (edge.debug_view) at half size, in frame order, two a row, each with a
caption bar (frame, time; for a frame inside a spotted interval its kind, in the kind's colour, and a
border of that colour). Under them, the timeline of the whole clip: each interval a span in its kind's
colour, each tile a tick; then the legend: what the boxes, texts, bars and colours mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.debug_view import CYAN, GREEN, ROI_GROUPS, WHITE, YELLOW, flow_colour

KIND_COLOURS = {"micro": (60, 170, 255), "macro": (255, 170, 90), "blink": (200, 200, 200)}  # BGR
OTHER_COLOUR = (140, 140, 140)
FONT = cv2.FONT_HERSHEY_SIMPLEX
CAPTION_H = 18
BORDER = 3
GREY = (150, 150, 150)


@dataclass
class Mark:
    """One spotted interval on the strip: frames onset, apex, offset of a track, and its kind."""

    kind: str
    track_id: int
    onset: int
    apex: int
    offset: int
    number: int = 0  # 1, 2, ... in the order spotted


def tile(view: np.ndarray) -> np.ndarray:
    """A compose_view picture at the strip's size (half)."""
    return cv2.resize(view, (view.shape[1] // 2, view.shape[0] // 2), interpolation=cv2.INTER_AREA)


def kind_colour(kind: str) -> tuple[int, int, int]:
    return KIND_COLOURS.get(kind, OTHER_COLOUR)


def mark_tile(tile: np.ndarray, frame: int, fps: float, marks: list[Mark]) -> np.ndarray:
    """`tile` with a caption bar on top (frame, time, the intervals it lies in) and, inside an interval,
    a border in the first one's colour."""
    inside = [m for m in marks if m.onset <= frame <= m.offset]
    out = cv2.copyMakeBorder(tile, CAPTION_H, 0, 0, 0, cv2.BORDER_CONSTANT, value=(30, 30, 30))
    text = f"frame {frame}  {frame / fps:.2f} s"
    cv2.putText(out, text, (6, CAPTION_H - 5), FONT, 0.42, WHITE, 1, cv2.LINE_AA)
    x = 12 + cv2.getTextSize(text, FONT, 0.42, 1)[0][0]
    for m in inside:
        label = f"#{m.number} {m.kind}{' apex' if m.apex == frame else ''} (track {m.track_id})"
        if x + cv2.getTextSize(label, FONT, 0.42, 1)[0][0] > out.shape[1]:  # a small video's tile: the short form
            label = f"#{m.number} {m.kind}{' apex' if m.apex == frame else ''}"
        cv2.putText(out, label, (x, CAPTION_H - 5), FONT, 0.42, kind_colour(m.kind), 1, cv2.LINE_AA)
        x += 10 + cv2.getTextSize(label, FONT, 0.42, 1)[0][0]
    if inside:
        cv2.rectangle(out, (0, CAPTION_H), (out.shape[1] - 1, out.shape[0] - 1), kind_colour(inside[0].kind), BORDER)
    return out


def timeline(width: int, frames: int, fps: float, marks: list[Mark], tiles: list[int]) -> np.ndarray:
    """The whole clip as a bar: each interval a span (numbered), each tile's frame a tick, seconds below."""
    h, left, right, top, bar = 64, 60, 16, 8, 26
    img = np.full((h, width, 3), 20, np.uint8)
    span = max(frames - 1, 1)

    def x(f: float) -> int:
        return int(round(left + f / span * (width - left - right)))

    cv2.putText(img, "events", (6, top + 17), FONT, 0.42, WHITE, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (width - right, top + bar), (45, 45, 45), -1)
    for m in marks:
        cv2.rectangle(img, (x(m.onset), top), (max(x(m.offset), x(m.onset) + 2), top + bar), kind_colour(m.kind), -1)
        cv2.putText(img, str(m.number), (x(m.onset), top + bar - 8), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    for f in tiles:
        cv2.line(img, (x(f), top + bar), (x(f), top + bar + 6), WHITE, 1)
    step = next(s for s in (1, 2, 5, 10, 30, 60, 120, 300, 600) if frames / fps / s <= 12)
    for k in range(int(frames / fps / step) + 1):
        f = k * step * fps
        cv2.line(img, (x(f), top + bar + 6), (x(f), top + bar + 10), GREY, 1)
        cv2.putText(img, f"{k * step} s", (x(f) - 8, h - 6), FONT, 0.38, GREY, 1, cv2.LINE_AA)
    return img


def _wheel(size: int, flow_max: float) -> np.ndarray:
    """The flow colour key: every direction, magnitude 0 at the centre to flow_max at the rim."""
    r = (np.arange(size) - (size - 1) / 2) / ((size - 1) / 2) * flow_max
    u, v = np.meshgrid(r, r)
    wheel = flow_colour(np.dstack([u, v]).astype(np.float32), flow_max)
    wheel[np.hypot(u, v) > flow_max] = 20
    return wheel


LEGEND_ROW = 66  # px: one row of the legend (three lines of text)
LEGEND_COLUMN = 380  # px: the widest legend column (its longest text line and the mark beside it)


def legend(width: int, flow_max: float) -> np.ndarray:
    """What each mark means: the frame's marks and the ROIs (left column), the crop's marks, the flow's
    colour key and the event kinds (right column). The columns sit side by side where the strip is wide
    enough for both, else (a small video's strip) one under the other, so no text runs into another."""
    row = LEGEND_ROW
    side = width >= 2 * LEGEND_COLUMN
    col = width // 2 if side else 0
    img = np.full((4 * row + 60, width, 3), 20, np.uint8)  # cut to what was drawn at the end

    def text(s: str, x: int, y: int, colour: tuple[int, int, int] = WHITE) -> int:
        cv2.putText(img, s, (x, y), FONT, 0.4, colour, 1, cv2.LINE_AA)
        return x + cv2.getTextSize(s, FONT, 0.4, 1)[0][0]

    # the frame
    cv2.rectangle(img, (8, 10), (28, 24), GREEN, 2)
    text("face box, #track; res: stabilisation residual", 36, 21, YELLOW)
    text("(crop px); mot: head motion (frame px/frame)", 36, 37, YELLOW)
    text("head pose (deg), mouth opening, speech (0..1)", 36, 55, CYAN)
    # the ROIs
    y = row + 18
    xx = text("ROIs on the crop:", 8, y) + 10
    for name, colour in ROI_GROUPS.items():
        if xx > (col if side else width) - 70:
            xx, y = 24, y + 20
        cv2.rectangle(img, (xx, y - 10), (xx + 12, y + 1), colour, 1)
        xx = text(name, xx + 17, y) + 12
    # the aligned crop: beside the frame's marks, or under the ROIs
    x, y0 = col, (0 if side else y + 16)
    cv2.circle(img, (x + 10, y0 + 17), 2, GREEN, -1)
    text("landmarks on the aligned crop", x + 22, y0 + 21)
    cv2.rectangle(img, (x + 4, y0 + 26), (x + 8, y0 + 40), GREEN, -1)
    cv2.rectangle(img, (x + 11, y0 + 30), (x + 15, y0 + 40), YELLOW, -1)
    text("eye openness, crop edges (yellow: closing)", x + 22, y0 + 38)
    cv2.rectangle(img, (x + 4, y0 + 50), (x + 16, y0 + 53), CYAN, -1)
    text("speech activity, crop bottom", x + 22, y0 + 55)
    # the flow's colours and the event kinds
    y = y0 + row + 4
    img[y:y + 40, x + 4:x + 44] = _wheel(40, flow_max)
    text("flow: hue = direction,", x + 52, y + 14)
    text(f"brightness = magnitude (full at {flow_max:g} px)", x + 52, y + 30)
    y += 56
    xx = text("intervals:", x + 8, y) + 8
    for kind, colour in KIND_COLOURS.items():
        cv2.rectangle(img, (xx, y - 10), (xx + 14, y + 1), colour, -1)
        xx = text(kind, xx + 18, y) + 12
    y = 2 * row if side else y + 22  # side by side: under the ROIs, left of the event kinds
    text("spotted in-process (labels: classify, in a graph run)", 24, y, GREY)
    return img[:y + 8]


def compose_strip(tiles: list[tuple[int, np.ndarray]], frames: int, fps: float, marks: list[Mark],
                  flow_max: float, cols: int = 2) -> np.ndarray:
    """tiles: (frame index, tile(): a compose_view picture at half size), any order -> the strip (BGR)."""
    tiles = sorted(tiles, key=lambda t: t[0])
    half = [mark_tile(img, f, fps, marks) for f, img in tiles]
    while len(half) % cols:
        half.append(np.zeros_like(half[0]))
    grid = np.vstack([np.hstack(half[i:i + cols]) for i in range(0, len(half), cols)])
    width = grid.shape[1]
    return np.vstack([grid, timeline(width, frames, fps, marks, [f for f, _ in tiles]), legend(width, flow_max)])
