"""The SOA classifier: operator (soa), network + registry (net), model file (file), exports (export),
runtime loader (runtime), fake quantisation (quant).

`create_model(name, **kw)` is the one way to build a network; importing this package fills the registry.
"""

from edge.model.net import NetConfig, SOANet, count_macs, count_params, create_model, list_models

__all__ = ["NetConfig", "SOANet", "count_macs", "count_params", "create_model", "list_models"]
