"""Perception: frame sources, face tracking and alignment, optical flow, spotting."""
