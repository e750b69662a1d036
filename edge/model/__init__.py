"""The SOA classifier: operator (soa), network + registry (net), model file (file), exports (export),
runtime loader (runtime), fake quantisation (quant), training loop (fit).

`create_model(name, **kw)` is the one way to build a network; importing it fills the registry. The names
below load edge.model.net (and torch) on first use, so the torch-free parts (variants, the ONNX runtime
path) and argument checks do not pay for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NetConfig", "SOANet", "count_macs", "count_params", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edge.model import net

        return getattr(net, name)
    raise AttributeError(f"module 'edge.model' has no attribute {name!r}")
