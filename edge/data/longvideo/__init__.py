"""Long-video spotting datasets users bring: `load(name, root) -> list[LongVideo]`.

Names: casme2_lv (CAS(ME)^2), samm_lv (SAMM Long Videos), casme3_lv (CAS(ME)^3 part A). Layouts, quirks and
what was assumed: the modules and docs/spotting-datasets.md. Scoring (MEGC rule, STRS): `score.py`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge.data.longvideo.common import FPS, Interval, LongVideo
from edge.errors import UserError

DATASETS = ("casme2_lv", "samm_lv", "casme3_lv")

__all__ = ["DATASETS", "FPS", "Interval", "LongVideo", "load"]


def load(name: str, root: str | Path, **kwargs: object) -> list[LongVideo]:
    """The long videos of dataset `name` from its folder `root` (the official layout)."""
    if name not in DATASETS:
        raise UserError(f"unknown long-video dataset {name!r}; known: {', '.join(DATASETS)}")
    if not Path(root).is_dir():
        raise UserError(f"dataset folder {root} not found")
    return importlib.import_module(f"edge.data.longvideo.{name}").load(root, **kwargs)
