"""The registered networks' names and configs, without torch: `facesleuth train --arch foo` is refused before
torch is imported. edge.model.net registers one network per entry."""

from __future__ import annotations

from typing import Any

# Per variant, only what differs from NetConfig's defaults (which are the "soa" network).
default_cfgs: dict[str, dict[str, Any]] = {
    "soa": {},
    "cva": {"attn": "cva"},
    "coord": {"attn": "coord"},
    "none": {"attn": "none"},
}


def model_names() -> list[str]:
    """The networks `create_model` builds (edge.model.list_models, without importing torch)."""
    return sorted(default_cfgs)
