"""The per-track noise model: robust scales of every score's statistic on the quiet history.

Each (span, channel) displacement has its own scale (robust_scale of its components) over the last
`noise_window_s` seconds outside events and flags, so scores are in noise units and thresholds are too:
each face, camera and lighting sets its own level. The rise-and-return detector's statistic (a rise of the
accumulated displacement over w frames) gets its own scale per window, measured the same way.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from edge.perception.robust import robust_scale
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import History


def noise_scale(a: np.ndarray, axis: int, tail: float = 0.0) -> np.ndarray:
    """Robust Gaussian scale of |x| samples `a` along `axis` (nan = missing): robust_scale, or with
    `tail` q > 0 also at least the q-quantile over its Gaussian value (half-normal quantile)."""
    nan = bool(np.isnan(a).any())
    scale = robust_scale(a, axis=axis, nan=nan)
    if tail > 0:
        z = NormalDist().inv_cdf((1 + tail) / 2)
        scale = np.maximum(scale, (np.nanquantile(a, tail, axis=axis) if nan
                                   else np.quantile(a, tail, axis=axis)) / z)
    return scale


class NoiseModel:
    """One track's noise scales, refreshed from its History.

    flow (J, C) crop px: scale of each span's displacement per channel (None until warmed up);
    rise (W, C) crop px: scale of a rise of the accumulated displacement over each window (None until
    every window has enough quiet history); widths: the rise-and-return windows, frames;
    ready_frame: the first frame with a flow scale (spotting starts there)."""

    def __init__(self, params: SpotParams) -> None:
        self.p = params
        self.flow: np.ndarray | None = None
        self.rise: np.ndarray | None = None
        self.widths: tuple[int, ...] = ()
        self.ready_frame: int | None = None

    def update(self, history: History) -> None:
        """Refresh from every frame of `history` outside events and flags: leaving out merely high-scoring
        frames as well would truncate the sample and bias the scale low (many channels: some score high
        every frame)."""
        frames = history.frames
        quiet = [f.smoothed for f in frames if not f.flag and not f.busy]
        span = (frames[-1].t_mono_ns - frames[0].t_mono_ns) * 1e-9
        if len(quiet) < 5 or (self.flow is None and span < self.p.warmup_s):
            return
        a = np.abs(np.stack(quiet))  # (T, J, C, 2)
        a = a.transpose(1, 2, 0, 3).reshape(a.shape[1], a.shape[2], -1)
        with np.errstate(all="ignore"):
            flow = noise_scale(a, axis=2, tail=self.p.noise_tail)
        self.flow = np.maximum(np.nan_to_num(flow, nan=np.inf), self.p.noise_floor_px)
        if self.ready_frame is None:
            self.ready_frame = frames[-1].frame
        # The rise-and-return score's noise: the same filter's rise (acc[t] - acc[t - w]) on the quiet
        # history, so k_bump is in noise units of the statistic actually thresholded.
        fps = history.fps()
        self.widths = tuple(sorted({max(2, round(w * fps)) for w in self.p.bump_widths_s}))
        rise = []
        for w in self.widths:
            d = [f.acc - g.acc for f in frames if not f.flag and not f.busy
                 and (g := history.by_frame.get(f.frame - w)) is not None and not g.flag and not g.busy]
            if len(d) < 5:
                self.rise = None
                return
            rise.append(noise_scale(np.abs(np.stack(d)).transpose(1, 0, 2).reshape(len(d[0]), -1), axis=1,
                                    tail=self.p.noise_tail))
        self.rise = np.maximum(np.array(rise), self.p.noise_floor_px)
