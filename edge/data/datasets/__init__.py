"""Loaders for the licensed micro-expression datasets users bring: `load(name, root) -> list[Sample]`.

Names: casme2, samm, smic (SMIC-HS), casme3 (CAS(ME)^3 part A), mmew. Layouts and quirks per module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge.data.datasets.common import COMPOSITE, NATIVE_CLASSES, Sample
from edge.errors import UserError

DATASETS = ("casme2", "samm", "smic", "casme3", "mmew")

__all__ = ["COMPOSITE", "DATASETS", "NATIVE_CLASSES", "Sample", "load"]


def load(name: str, root: str | Path, **kwargs: object) -> list[Sample]:
    """Samples of dataset `name` from its folder `root` (the official layout)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return importlib.import_module(f"edge.data.datasets.{name}").load(root, **kwargs)
