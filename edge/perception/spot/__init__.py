"""Micro-expression spotting: ROI motion curves -> intervals (onset, apex, offset, kind).

Input per track and frame: the flow of the aligned crop against a reference frame `lag` frames back
(edge.perception.flow convention: u, v in crop px, `uv[:, y, x]` moves pixel (x, y) of the reference), plus what the
face node says about the frame (head motion, stabilisation residual, track loss).

Per frame, per track, in stages (each module's docstring says how):

1. features: the rigid (affine) part of the flow is removed and the flow is averaged over ROI blocks,
   block groups and mirrored pairs: the channels (RoiFeatures).
2. track, noise: besides the flow itself (span 1), the displacement over 2..`spans` chained flows is
   scored, as an onset lasts longer than one lag; each (span, channel) is scored in units of its own
   robust noise scale on the quiet history, so thresholds are in noise units (NoiseModel).
3. threshold: a channel at `k_on` opens an event, which closes once the face is still and back
   (ThresholdDetector).
4. bump: micro-expressions too small for `k_on` are spotted by their shape, a rise that returns, on the
   accumulated displacement (BumpDetector).
5. describe: kind (micro / macro by duration in seconds, blink) and discards (head motion, residual,
   rigid motion, dropped frames, track loss, too short, too weak).
6. spotter: every track of a stream, with the motion gates whose limits follow each face's own recent
   speeds (Spotter).

An interval is final once its offset is seen; clear micro intervals are published at their offset
(`early_close`), others `lag` or `lag + 1` frames after it, rise-and-return ones 1-2 frames after it.
Parameters: SpotParams (docs/spotting.md: why each default is what it is). Scoring against ground truth
(MEGC rule): edge.data.metrics.
"""

from edge.perception.spot.features import BLOCK_FRAC, EYE_ROIS, PAIRS, RoiFeatures
from edge.perception.spot.params import SpotParams
from edge.perception.spot.records import KINDS, FrameInfo, Interval
from edge.perception.spot.spotter import Spotter
from edge.perception.spot.track import TrackSpotter

__all__ = ["BLOCK_FRAC", "EYE_ROIS", "KINDS", "PAIRS", "FrameInfo", "Interval", "RoiFeatures", "SpotParams",
           "Spotter", "TrackSpotter"]
