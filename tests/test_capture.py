"""edge.perception.capture: real video files and frame folders written with OpenCV; a missing camera retried."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import Unavailable, UserError
from edge.perception import capture as C

W, H, N, FPS = 96, 64, 30, 25.0


def _frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = (20, 40, 60)
    cv2.rectangle(img, (2 + 2 * i, 10), (12 + 2 * i, 30), (255, 255, 255), -1)
    return img


def _index_of(img: np.ndarray) -> int:
    """Which frame this is: the bright square's left edge (robust to MJPG compression)."""
    cols = np.nonzero(img[20, :, 0] > 128)[0]
    return int(round((cols[0] - 2) / 2))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "clip.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert wr.isOpened()
    for i in range(N):
        wr.write(_frame(i))
    wr.release()
    return path


def test_video_file_streams_all_frames_in_order(video):
    src = C.open_source("auto", str(video))
    assert src.kind == "file" and src.fps == pytest.approx(FPS)
    got = list(src)
    assert [c.index for c in got] == list(range(N))
    assert [_index_of(c.image) for c in got] == list(range(N))
    assert got[0].image.shape == (H, W, 3) and got[0].image.dtype == np.uint8
    t = np.array([c.t_mono_ns for c in got])
    assert (np.diff(t) > 0).all()
    assert abs(got[0].t_wall_ns - time.time_ns()) < 60e9
    assert src.stats == {"frames": N, "skipped": 0, "reopened": 0}


def test_pacing_follows_fps(video):
    src = C.open_source("file", str(video), fps=100.0, pace=True)
    got = list(src)
    dt = np.diff([c.t_mono_ns for c in got]) / 1e9
    assert np.median(dt) == pytest.approx(0.01, abs=0.003)
    assert (got[-1].t_mono_ns - got[0].t_mono_ns) / 1e9 >= 0.95 * (N - 1) / 100.0
    t0 = time.monotonic()
    fast = list(C.open_source("file", str(video)))  # as fast as possible: far quicker than 25 fps
    assert time.monotonic() - t0 < (N - 1) / FPS / 2
    # ...but stamped with the media clock, so durations downstream stay true.
    assert np.diff([c.t_mono_ns for c in fast]) / 1e9 == pytest.approx(1 / FPS, abs=1e-6)


def test_loop_keeps_counting(video):
    src = C.open_source("file", str(video), loop=True)
    got = []
    for c in src:
        got.append(c)
        if len(got) == 2 * N + 5:
            break
    assert [c.index for c in got] == list(range(2 * N + 5))
    assert _index_of(got[N].image) == 0 and _index_of(got[2 * N + 4].image) == 4


def test_truncated_video_ends_cleanly(video, tmp_path, caplog):
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="edge.perception.capture"):
        src = C.open_source("file", str(cut))
        got = list(src)
    assert 0 < len(got) < N
    assert [_index_of(c.image) for c in got] == list(range(len(got)))
    assert any("frames" in r.getMessage() for r in caplog.records)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(UserError, match="video file not found"):
        C.open_source("file", str(tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserError, match="cannot open video file"):
        C.open_source("file", str(junk))
    with pytest.raises(UserError, match="frame folder not found"):
        C.open_source("folder", str(tmp_path / "nodir"))
    with pytest.raises(UserError, match="no image files"):
        C.open_source("folder", str(tmp_path))
    with pytest.raises(UserError, match="unknown source kind"):
        C.open_source("vhs", "x")


def test_frame_folder_numeric_order_and_unreadable_skipped(tmp_path):
    for i in range(12):  # img1..img12, unpadded like CASME II: lexical order would put img10 first
        cv2.imwrite(str(tmp_path / f"img{i + 1}.png"), _frame(i))
    (tmp_path / "img13.png").write_bytes(b"broken")
    (tmp_path / "notes.txt").write_text("ignored")
    src = C.open_source("auto", str(tmp_path), fps=200.0, pace=True)
    assert src.kind == "folder"
    got = list(src)
    assert [_index_of(c.image) for c in got] == list(range(12))
    assert src.stats["skipped"] == 1 and src.stats["frames"] == 12
    dt = np.diff([c.t_mono_ns for c in got]) / 1e9
    assert (dt > 0).all() and np.median(dt) == pytest.approx(0.005, abs=0.002)


def test_missing_camera_retries_then_gives_up(caplog):
    src = C.open_source("camera", "/dev/video-does-not-exist", max_reopen=3)
    src.backoff_s = (0.01, 0.02)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="edge.perception.capture"), \
            pytest.raises(Unavailable, match="gave up after 3 attempts: camera .* not found"):
        list(src)
    assert time.monotonic() - t0 < 2
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


def test_missing_camera_stops_promptly_when_asked():
    stop_at = time.monotonic() + 0.3
    src = C.open_source("camera", "/dev/video-does-not-exist", should_stop=lambda: time.monotonic() > stop_at)
    t0 = time.monotonic()
    assert list(src) == []  # retried until stopped, no exception
    assert time.monotonic() - t0 < 1.5


def test_lost_live_source_is_reopened(video):
    """A live capture that fails mid-stream is reopened (here a real VideoCapture on a file whose end
    looks like a lost camera) and frames continue."""
    opens = []

    def opener() -> cv2.VideoCapture:
        opens.append(1)
        return cv2.VideoCapture(str(video))

    src = C.LiveSource("live", opener, backoff_s=(0.01, 0.02))
    got = []
    for c in src:
        got.append(c)
        if len(got) == N + 3:
            break
    src.close()
    assert len(opens) == 2 and src.stats["reopened"] == 1
    assert _index_of(got[N].image) == 0


def test_gstreamer_says_when_missing():
    if C.has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(Unavailable, match="no GStreamer"):
        C.open_source("gstreamer", "videotestsrc ! appsink")


def test_synthetic_source():
    pytest.importorskip("edge.data.synth", reason="edge.data.synth (synthetic generator) not built yet")
    src = C.open_source("synthetic", fps=30.0, width=320, height=240,
                        synth={"duration_s": 0.5, "seed": 1, "preset": "webcam30"})
    got = list(src)
    assert len(got) == 15 and src.fps == 30.0
    assert [c.index for c in got] == list(range(15))
    assert got[0].image.shape == (240, 320, 3) and got[0].image.dtype == np.uint8
    assert isinstance(src.truth, list)
    with pytest.raises(UserError, match="synthetic"):
        C.open_source("synthetic", synth={"no_such_option": 1})


def test_guess_kind(tmp_path):
    assert C.guess_kind("0") == "camera" and C.guess_kind("/dev/video2") == "camera"
    assert C.guess_kind("v4l2src ! appsink") == "gstreamer"
    assert C.guess_kind(str(tmp_path)) == "folder" and C.guess_kind("a.mp4") == "file"
    assert C.natural_key("img2.png") < C.natural_key("img10.png")
