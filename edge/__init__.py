"""FaceSleuth Edge: real-time micro-expression recognition for edge devices."""

__version__ = "0.2.0"
