"""Data: synthetic micro-expressions (synth, aus, faces, emotions, domains), real dataset loaders
(datasets), evaluation protocols (protocols) and metrics (metrics)."""
