"""The runtime: graphs, nodes and their processes, transport, messages, supervision."""
