"""Frame sources behind one iterator: V4L2 camera, GStreamer pipeline, video file, frame folder, synthetic.

    with open_source("file", "clip.mp4", pace=True) as src:
        for image, t_mono_ns, t_wall_ns, index in src:   # image: (H, W, 3) uint8 BGR
            process(image)
    src.stats   # {"frames": n, "skipped": unreadable frames, "reopened": camera reopen count}

Timestamps are taken when the frame is in hand (after pacing): `time.monotonic_ns()` and
`time.time_ns()`, except for stored media read as fast as possible (`pace=False`), which carry the
media clock (first frame's time + index / fps) so that durations stay true. `index` counts delivered frames from 0 and keeps counting through `loop`, so
downstream time only moves forward. Live sources (camera, GStreamer) are paced by the device; stored
ones (file, folder, synthetic) play at their nominal fps with `pace=True` or as fast as possible.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from edge.errors import Unavailable, UserError

log = logging.getLogger(__name__)

KINDS = ("camera", "gstreamer", "file", "folder", "synthetic")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp"}


class Captured(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 BGR
    t_mono_ns: int
    t_wall_ns: int
    index: int


def has_gstreamer() -> bool:
    """True when this OpenCV build can open GStreamer pipelines."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    except (AttributeError, cv2.error):
        return "GStreamer:                   YES" in cv2.getBuildInformation()


def has_v4l2() -> bool:
    """True when this OpenCV build has the V4L2 capture backend."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_V4L2))
    except (AttributeError, cv2.error):
        return False


def list_cameras() -> list[str]:
    """Video device nodes present (/dev/video*), numerically sorted."""
    return sorted((str(p) for p in Path("/dev").glob("video*")), key=natural_key)


def natural_key(s: str) -> list:
    """Sort key that orders digit runs numerically: frame2 < frame10 (datasets rarely zero-pad)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


class Source(ABC):
    """A frame source. Iterate for Captured tuples; `fps` is the nominal rate (Hz), `stats` the counters."""

    kind = "source"

    def __init__(self, name: str, fps: float, pace: bool = False, loop: bool = False,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.name, self.fps, self.pace, self.loop = name, float(fps), pace, loop
        self.media_clock = not pace and self.kind in ("file", "folder", "synthetic") and self.fps > 0
        self.should_stop = should_stop
        self.stats = {"frames": 0, "skipped": 0, "reopened": 0}

    @abstractmethod
    def frames(self) -> Iterator[np.ndarray]:
        """Raw BGR frames, one pass (or forever for live sources)."""

    def __iter__(self) -> Iterator[Captured]:
        period = 1.0 / self.fps if self.pace and self.fps > 0 else 0.0
        t_next = time.monotonic()
        t0_mono, t0_wall = time.monotonic_ns(), time.time_ns()
        while True:
            n_before = self.stats["frames"]
            for img in self.frames():
                if self.should_stop():
                    return
                if period:
                    delay = t_next - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        t_next = time.monotonic()  # behind: don't burst to catch up
                    t_next += period
                index = self.stats["frames"]
                self.stats["frames"] += 1
                if self.media_clock:
                    # Unpaced stored media: stamp frames with the media clock (start + index/fps), so
                    # durations downstream (micro <= 500 ms) stay true however fast the file is read.
                    dt = round(index * 1e9 / self.fps)
                    yield Captured(_bgr(img), t0_mono + dt, t0_wall + dt, index)
                else:
                    yield Captured(_bgr(img), time.monotonic_ns(), time.time_ns(), index)
            if not self.loop or self.should_stop() or self.stats["frames"] == n_before:
                return
            log.info("%s: looping", self.name)

    def close(self) -> None:  # noqa: B027 - optional hook: sources without resources keep this no-op
        """Release the device or file."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


class VideoFileSource(Source):
    """A video file OpenCV can decode. A truncated file ends cleanly; its short count is logged."""

    kind = "file"

    def __init__(self, path: str | Path, fps: float = 0.0, max_bad: int = 5, **kw: Any) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"video file not found: {self.path}")
        cap = self._open()
        nominal = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        super().__init__(str(self.path), fps or nominal or 30.0, **kw)
        self.max_bad = max_bad

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise UserError(f"cannot open video file {self.path} (not a video OpenCV can decode)")
        return cap

    def frames(self) -> Iterator[np.ndarray]:
        cap = self._open()
        read, bad = 0, 0  # bad: consecutive failed reads; skipped only once a later frame decodes
        try:
            while True:
                ok, img = cap.read()
                if ok and img is not None:
                    self.stats["skipped"] += bad
                    read, bad = read + 1, 0
                    yield img
                    continue
                # The end, or a damaged frame: past the declared count it is the end; before it, try a
                # few more reads before calling the rest of the file truncated.
                bad += 1
                if (self.declared and read + self.stats["skipped"] + bad > self.declared) or bad > self.max_bad:
                    break
        finally:
            cap.release()
        if self.declared and read < self.declared:
            log.warning("%s: ended after %d of %d frames (file truncated or damaged)", self.name, read,
                        self.declared)
        else:
            log.info("%s: end of file after %d frames", self.name, read)


class FolderSource(Source):
    """A folder of numbered frames (dataset-style: img1.jpg ... img120.jpg), numeric sort."""

    kind = "folder"

    def __init__(self, path: str | Path, fps: float = 30.0, **kw: Any) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"frame folder not found: {self.path}")
        self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise UserError(f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in {self.path}")
        super().__init__(str(self.path), fps or 30.0, **kw)

    def frames(self) -> Iterator[np.ndarray]:
        for p in self.files:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                self.stats["skipped"] += 1
                log.warning("%s: skipped unreadable frame %s", self.name, p.name)
                continue
            yield img


class LiveSource(Source):
    """A live capture (camera or GStreamer): reopened with exponential backoff when it is lost.

    `opener()` returns an opened cv2.VideoCapture or raises; `max_reopen` bounds consecutive failed
    attempts (0: retry until stopped), after which Unavailable is raised.
    """

    def __init__(self, name: str, opener: Callable[[], cv2.VideoCapture], fps: float = 30.0,
                 max_reopen: int = 0, backoff_s: tuple[float, float] = (0.5, 8.0), **kw: Any) -> None:
        super().__init__(name, fps, **kw)
        self.opener, self.max_reopen, self.backoff_s = opener, max_reopen, backoff_s
        self.cap: cv2.VideoCapture | None = None

    def _connect(self) -> bool:
        """Open with backoff. False if stopped meanwhile; Unavailable after max_reopen failures."""
        delay, attempt = self.backoff_s[0], 0
        while not self.should_stop():
            attempt += 1
            try:
                self.cap = self.opener()
                return True
            except (UserError, Unavailable, cv2.error) as e:
                if self.max_reopen and attempt >= self.max_reopen:
                    raise Unavailable(f"{self.name}: gave up after {attempt} attempts: {e}") from None
                log.warning("%s: %s; retrying in %.1f s (attempt %d%s)", self.name, e, delay, attempt,
                            f"/{self.max_reopen}" if self.max_reopen else "")
                end = time.monotonic() + delay
                while time.monotonic() < end and not self.should_stop():  # stop never waits on backoff
                    time.sleep(min(0.05, delay))
                delay = min(delay * 2, self.backoff_s[1])
        return False

    def open_first(self) -> None:
        """Open once, now, without retrying: a source that is not there at start (no camera plugged in, a
        wrong device path) is an error to report, not a loss to wait out. Raises Unavailable. Only what is
        lost later is reopened with backoff (`frames`)."""
        if self.cap is None:
            try:
                self.cap = self.opener()
            except cv2.error as e:
                raise Unavailable(f"{self.name}: {e}") from None

    def frames(self) -> Iterator[np.ndarray]:
        first = True
        while not self.should_stop():
            if self.cap is None:
                if not first:
                    self.stats["reopened"] += 1
                if not self._connect():
                    return
            first = False
            ok, img = self.cap.read()
            if ok and img is not None:
                yield img
                continue
            log.warning("%s: lost (read failed); reopening", self.name)
            self.cap.release()
            self.cap = None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def camera_opener(device: str | int, width: int = 0, height: int = 0, fps: float = 0.0,
                  mjpg: bool = True) -> Callable[[], cv2.VideoCapture]:
    """An opener for a V4L2 camera (index or /dev path) that requests size/fps/MJPG and logs what it got."""
    dev = int(device) if str(device).isdigit() else str(device)

    def open_() -> cv2.VideoCapture:
        if isinstance(dev, str) and not Path(dev).exists():
            raise Unavailable(f"camera {dev} not found (no such device)")
        if isinstance(dev, int) and Path("/dev").is_dir() and not Path(f"/dev/video{dev}").exists():
            # Said here, before OpenCV prints its own warnings about an index it cannot open.
            raise Unavailable(f"camera {dev} (/dev/video{dev}) not found (no such device)")
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise Unavailable(f"camera {dev} could not be opened (busy, absent or not a capture device)")
        # FOURCC first: many UVC cameras offer high resolutions at full rate only as MJPG.
        if mjpg:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latest frame, not a queue of stale ones
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
               cap.get(cv2.CAP_PROP_FPS))
        log.info("camera %s: requested %sx%s @ %s fps, got %dx%d @ %.1f fps", dev, width or "-",
                 height or "-", fps or "-", *got)
        return cap

    return open_


def gstreamer_opener(pipeline: str) -> Callable[[], cv2.VideoCapture]:
    """An opener for a GStreamer pipeline ending in appsink. Unavailable when OpenCV lacks GStreamer."""
    if not has_gstreamer():
        raise Unavailable("gstreamer: this OpenCV build has no GStreamer (getBuildInformation: 'GStreamer: NO'; "
                          "the PyPI wheels never have it): use JetPack's OpenCV or build with WITH_GSTREAMER=ON")

    def open_() -> cv2.VideoCapture:
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise Unavailable(f"gstreamer pipeline did not start: {pipeline[:80]}")
        return cap

    return open_


class SyntheticSource(Source):
    """edge.data.synth.SyntheticVideo frames (ground truth intervals in `.truth`).

    `synth`: SyntheticVideo keyword args (preset, seed, duration_s, faces, script, overrides, ...);
    fps 0 takes the preset's own rate.
    """

    kind = "synthetic"

    def __init__(self, fps: float = 0.0, width: int = 640, height: int = 480,
                 synth: dict[str, Any] | None = None, **kw: Any) -> None:
        try:
            from edge.data.synth import SyntheticVideo
        except ImportError as e:
            raise Unavailable(f"synthetic: the generator (edge.data.synth) is not available: {e}") from None
        try:
            self.video = SyntheticVideo(width=width, height=height, fps=fps or None, **(synth or {}))
        except TypeError as e:  # an unknown option in the graph's `synthetic` dict
            raise UserError(f"synthetic: {e}") from None
        super().__init__(f"synthetic:{self.video.preset}:{self.video.seed}", self.video.fps, **kw)

    @property
    def truth(self) -> Any:
        return self.video.truth

    def frames(self) -> Iterator[np.ndarray]:
        yield from self.video


def open_source(kind: str, uri: str = "", *, width: int = 0, height: int = 0, fps: float = 0.0,
                pace: bool = False, loop: bool = False, max_reopen: int = 0, mjpg: bool = True,
                synth: dict[str, Any] | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> Source:
    """Open a source by kind.

    kind: "camera" (uri = index or /dev/videoN), "gstreamer" (uri = pipeline ending in appsink), "file"
    (uri = video path), "folder" (uri = directory of numbered images), "synthetic" (synth = kwargs of
    SyntheticVideo: preset, seed, duration_s, faces, script), or "auto" (guessed from uri).
    width/height/fps: requested from a camera; fps also sets the rate of a folder (default 30) and
    overrides a file's own. Raises UserError for bad input, Unavailable for a missing capability.
    """
    if kind == "auto":
        kind = guess_kind(uri)
    common = dict(pace=pace, loop=loop, should_stop=should_stop)
    if kind == "camera":
        if not has_v4l2():
            raise Unavailable("camera: this OpenCV build has no V4L2 backend")
        return LiveSource(f"camera {uri or 0}", camera_opener(uri or "0", width, height, fps, mjpg),
                          fps=fps or 30.0, max_reopen=max_reopen, should_stop=should_stop)
    if kind == "gstreamer":
        if not uri:
            raise UserError("gstreamer: give the pipeline string as the source")
        return LiveSource("gstreamer", gstreamer_opener(uri), fps=fps or 30.0, max_reopen=max_reopen,
                          should_stop=should_stop)
    if kind == "file":
        return VideoFileSource(uri, fps=fps, **common)
    if kind == "folder":
        return FolderSource(uri, fps=fps or 30.0, **common)
    if kind == "synthetic":
        return SyntheticSource(fps=fps, width=width or 640, height=height or 480, synth=synth, **common)
    raise UserError(f"unknown source kind {kind!r}; choose from auto, {', '.join(KINDS)}")


def guess_kind(uri: str) -> str:
    """auto: digits or /dev/... -> camera; '!' -> gstreamer; a directory -> folder; 'synthetic'; else file."""
    if uri == "synthetic":
        return "synthetic"
    if uri.isdigit() or uri.startswith("/dev/"):
        return "camera"
    if "!" in uri:
        return "gstreamer"
    if Path(uri).is_dir():
        return "folder"
    return "file"
