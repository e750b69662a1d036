"""SpotParams: every spotting threshold, declared once (default, unit, why; docs/spotting.md has the
measurements behind each default). Thresholds are in noise units (k_*) or physical units (px, s), never
frames, so one setting holds at any frame rate and on any face, camera and lighting."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.runtime.params import knob


@dataclass
class SpotParams:
    """Spotting parameters (edge.runtime.params.knob fields: the spot node's params are generated from them)."""

    k_on: float = knob(6.5, "best channel score that opens an event (lower lets sensor-noise bumps through)",
                       "noise units", min=0.0)
    k_off: float = knob(2.5, "score above which a frame still counts as moving", "noise units", min=0.0)
    noise_window_s: float = knob(4.0, "quiet history behind each channel's noise scale", "s", min=0.0)
    warmup_s: float = knob(1.0, "no events until this much quiet history exists", "s", min=0.0)
    noise_floor_px: float = knob(0.01, "lower bound of a noise scale (clean synthetic video has ~0 noise)",
                                 "crop px", min=0.0)
    noise_tail: float = knob(0.0, "> 0: the noise scale is also at least this quantile of |x| over its "
                             "Gaussian value (heavy-tailed channels rise less often: precision over recall)",
                             min=0.0, max=1.0)
    min_intensity_px: float = knob(0.05, "peak ROI displacement (block mean) below which no expression is "
                                   "kept (block means see a third to a half of an action unit's apex)",
                                   "crop px", min=0.0)
    return_frac: float = knob(0.5, "displacement back under this fraction of its peak: returned",
                              min=0.0, max=1.0)
    micro_max_s: float = knob(0.5, "longest micro-expression (longer: macro)", "s", min=0.0)
    micro_min_s: float = knob(0.1, "shorter micro intervals are a glitch of the crop or the flow, not a "
                              "facial action (it goes and comes back)", "s", min=0.0)
    max_open_s: float = knob(4.0, "an event open this long is closed as macro", "s", min=0.0)
    roi_frac: float = knob(0.5, "ROIs whose peak reaches this fraction of the top one are listed as moved",
                           min=0.0, max=1.0)
    blink_ratio: float = knob(0.6, "blink: every non-eye ROI peak below this fraction of the eye peak",
                              min=0.0)
    blink_min_px: float = knob(0.5, "blink: the eye peak at least this (a lid sweeps the eye opening; "
                               "sub-pixel eye-region motion is an action unit)", "crop px", min=0.0)
    blink_expr_px: float = knob(0.1, "a ROI away from the lids that carried the event and moved this much "
                                "(net of its noise tolerance) makes a blink an expression during a blink",
                                "crop px", min=0.0)
    blink_expr_k: float = knob(2.0, "... and at least this many noise tolerances", "tolerances", min=0.0)
    head_speed_max: float = knob(40.0, "head motion (face node) above which intervals are discarded",
                                 "crop px/s")
    residual_max: float = knob(1.0, "stabilisation residual above which intervals are discarded",
                               "crop px RMS")
    rigid_speed_max: float = knob(8.0, "rigid motion left in the stabilised crop that discards (the floor of "
                                  "the face's own limit, see k_motion)", "crop px/s", min=0.0)
    k_motion: float = knob(6.0, "rigid and micro head limits rise to median + this many MADs of the track's "
                           "recent speeds (jittery footage moves 'rigidly' all the time)", "MADs", min=0.0)
    spans: int = knob(3, "score displacements over 1..spans chained flows (an onset outlasts one lag)",
                      "flows", min=1)
    smooth: int = knob(1, "scores average this many consecutive frames", "frames", min=1)
    rigid: bool = knob(True, "remove the affine (rigid) flow component")
    k_bump: float = knob(6.0, "rise-and-return score that spots a micro-expression too small for k_on",
                         "noise units", min=0.0)
    bump_widths_s: tuple = knob((0.13, 0.2, 0.27), "rise (= return) windows of the rise-and-return filter", "s")
    edge_frac: float = knob(0.2, "onset / offset where the displacement is this fraction of its rise / return",
                            min=0.0, max=1.0)
    head_margin_s: float = knob(0.3, "head motion this close to an interval discards it too (a head turn is "
                                "slow where it turns)", "s", min=0.0)
    early_close: bool = knob(True, "publish a clear micro interval the frame its displacement is back "
                             "(edge_frac), not once the face is still (lag frames later)")
    early_margin_s: float = knob(0.1, "early_close only this far under micro_max_s (nearer the limit the slow "
                                 "tail of a return decides micro or macro)", "s", min=0.0)
    bump_head_speed_max: float = knob(20.0, "micro intervals need a steadier face than head_speed_max (a slow "
                                      "head turn leaves parallax of a micro-expression's size in the crop)",
                                      "crop px/s", min=0.0)
    # Facial context (edge.perception.spot.context; docs/spotting.md has the measurements).
    speech_px: float = knob(0.5, "a swing of the mouth's or the chin's vertical flow this large counts as a "
                            "syllable", "crop px", min=0.0)
    speech_swings: int = knob(3, "this many mouth swings within speech_window_s are talking (a "
                              "micro-expression rises and returns: 2)", min=1)
    speech_window_s: float = knob(2.0, "window of the swing count (also how long talking outlasts speech)",
                                  "s", min=0.1)
    eye_shut: float = knob(0.7, "mean eye openness, of its open level over the last second, under which the "
                           "eyes are shut",
                           min=0.0, max=1.0)
    blink_max_s: float = knob(1.0, "an eye closure that reopens within this is a blink (longer: eyes closed)",
                              "s", min=0.0)
    blink_near_s: float = knob(0.3, "shut eyes this close to an interval make it the blink's (eye region "
                               "only) or give it a blink nearby (context)", "s", min=0.0)
    micro_max_px: float = knob(4.0, "peak ROI displacement above which an interval is not a micro-expression "
                               "(the eyes are 0.37 of the crop side apart: 4 px of a 128-px crop is 8 % of the eye distance)",
                               "crop px", min=0.0)
    occlusion_k: float = knob(4.0, "a ROI whose warp residual is this many times its usual is occluded (a "
                              "hand or object moving over it: its channels do not count)", "times", min=1.0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpotParams:
        """Params from a dict of field values (unknown keys and values of the wrong type: UserError)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"spot params: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        p = cls()
        for k, v in d.items():
            default = getattr(p, k)
            try:
                setattr(p, k, type(default)(v))
            except (TypeError, ValueError):
                raise UserError(f"spot params: {k}={v!r} is not a {type(default).__name__}") from None
        p.check()
        return p

    def check(self) -> None:
        """UserError naming the first inconsistent value."""
        if not 0 < self.k_off <= self.k_on:
            raise UserError(f"spot params: need 0 < k_off <= k_on, got k_off={self.k_off}, k_on={self.k_on}")
        if self.spans < 1:
            raise UserError(f"spot params: spans must be >= 1, got {self.spans}")
        if not 0 < self.return_frac < 1:
            raise UserError(f"spot params: return_frac must be in (0, 1), got {self.return_frac}")
        if self.k_bump <= 0 or not self.bump_widths_s or min(self.bump_widths_s) <= 0:
            raise UserError(f"spot params: need k_bump > 0 and bump_widths_s > 0, got {self.k_bump}, "
                            f"{self.bump_widths_s}")
        if not 0 <= self.noise_tail < 1:
            raise UserError(f"spot params: noise_tail must be in [0, 1), got {self.noise_tail}")
        if not 0 <= self.micro_min_s < self.micro_max_s:
            raise UserError(f"spot params: need 0 <= micro_min_s < micro_max_s, got {self.micro_min_s}, "
                            f"{self.micro_max_s}")
        if self.early_margin_s < 0:
            raise UserError(f"spot params: early_margin_s must be >= 0, got {self.early_margin_s}")
        if not 0 < self.edge_frac < 1:
            raise UserError(f"spot params: edge_frac must be in (0, 1), got {self.edge_frac}")

    @classmethod
    def load(cls, path: str | Path) -> SpotParams:
        """Read a params file (JSON written by `facesleuth calib spot`: {"params": {...}, ...})."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"spot params file not found: {path}") from None
        except (OSError, ValueError) as e:
            raise UserError(f"spot params file {path}: not readable JSON ({e})") from None
        if not isinstance(doc, dict):
            raise UserError(f"spot params file {path}: expected a JSON object")
        return cls.from_dict(doc.get("params", doc))

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write {"params": {...}, **extra} as JSON (what load() and the spot node read)."""
        Path(path).write_text(json.dumps({"params": asdict(self), **extra}, indent=2))
