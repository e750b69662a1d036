"""`facesleuth view`: an annotated video and a PNG strip from a real video file; bad input is one line."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.bench.faceclips import write_clip
from edge.cli import main
from edge.debug_view import flow_colour


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("view") / "one.avi"
    write_clip(path, 20, 1)
    return path


def test_view_writes_annotated_video(clip, tmp_path):
    out = tmp_path / "view.avi"
    assert main(["view", str(clip), "-o", str(out), "--landmarks", "eyes"]) == 0
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and n == 20
    assert frame.shape == (480, 640 + 2 * 128, 3), "frame plus a [crop | flow] panel"
    assert frame[:128, 640:].max() < 20, "frame 0: no confirmed track yet, the panel is empty"
    cap = cv2.VideoCapture(str(out))
    for _ in range(15):
        ok, frame = cap.read()
    cap.release()
    assert frame[:128, 640:768].std() > 10, "a confirmed track shows its aligned crop in the panel"


def test_view_png_strip_marks_the_spotted_event_and_has_a_legend(tmp_path):
    """The strip (through the CLI process) on a synthetic clip with one clear micro-expression: the graph's
    spot node, run in-process, finds it; its apex frame joins the 4 sampled ones, framed in the micro
    colour; the timeline shows its span; the legend is below."""
    from edge.data.synth import SyntheticVideo
    from edge.data.synth import write_clip as write_synthetic
    from edge.debug_strip import CAPTION_H, KIND_COLOURS

    clip, out = tmp_path / "micro.avi", tmp_path / "strip.png"
    write_synthetic(SyntheticVideo("webcam30", seed=7, duration_s=3.0, script=[
        {"t": 2.0, "kind": "micro", "label": "surprise", "amplitude_px": 3.0}]), clip)
    r = subprocess.run([sys.executable, "-m", "edge", "view", str(clip), "-o", str(out), "--strip-frames", "4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(90 frames, 1 tracks, 1 intervals spotted)" in r.stdout, r.stdout
    img = cv2.imread(str(out))
    tile_h, tile_w = 240 + CAPTION_H, (640 + 256) // 2
    assert img.shape[1] == 2 * tile_w and img.shape[0] > 3 * tile_h + 150, "5 tiles in 3 rows, timeline, legend"
    micro = np.array(KIND_COLOURS["micro"])
    framed = [(row, col) for row in range(3) for col in range(2)
              if (img[row * tile_h + CAPTION_H + 1, col * tile_w + tile_w // 2] == micro).all()]
    assert framed and (0, 0) not in framed, "the apex tile (and a sampled one inside the interval) framed"
    timeline = img[3 * tile_h:3 * tile_h + 40]
    assert (timeline == micro).all(axis=2).sum() > 100, "the interval's span on the timeline"
    assert img[3 * tile_h + 64:].max() > 200, "the legend's text"


def test_view_bad_input(clip, tmp_path, capsys):
    assert main(["view", str(tmp_path / "missing.avi"), "-o", str(tmp_path / "x.png")]) == 2
    assert "video file not found" in capsys.readouterr().err
    assert main(["view", str(clip), "-o", str(tmp_path / "x.gif")]) == 2
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    assert main(["view", str(junk), "-o", str(tmp_path / "x.png")]) == 2
    assert main(["view", str(clip), "-o", str(tmp_path / "x.png"), "--flow", "nope"]) == 2


def test_flow_colour_encodes_direction_and_magnitude():
    flow = np.zeros((4, 8, 2), np.float32)
    flow[:, 4:, 0] = 1.0  # right half moves right by 1 px
    c = flow_colour(flow, 1.0)
    assert c[:, :4].max() == 0, "no motion is black"
    assert c[:, 4:].max() == 255 and c[0, 4, 2] == 255, "1 px to the right is full red (hue 0)"


def test_a_small_videos_strip_keeps_its_captions_and_legend_inside_the_picture():
    """A 320x240 video's strip is 576 px wide: the legend's two columns go one under the other, and a
    caption that would run off its tile drops the track, so no text is cut at the right edge."""
    from edge.debug_strip import CAPTION_H, Mark, compose_strip

    tile_h, tile_w = 100, 288
    tiles = [(0, np.zeros((tile_h, tile_w, 3), np.uint8)), (48, np.zeros((tile_h, tile_w, 3), np.uint8))]
    strip = compose_strip(tiles, 90, 30.0, [Mark("micro", 0, 42, 48, 57, 1)], flow_max=1.0)
    assert strip.shape[1] == 2 * tile_w
    caption, legend = strip[:CAPTION_H - 3], strip[tile_h + CAPTION_H + 64:]  # the caption above the border
    assert caption[:, tile_w:].max() > 200 and caption[:, -6:].max() <= 30, "the apex tile's caption, not cut"
    assert legend.shape[0] > 200 and legend[:, -6:].max() <= 20, "the legend stacked, nothing at the edge"
