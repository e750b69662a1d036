"""Starting the angle well: a learnt SOA angle gets almost no gradient about 60 deg away from where it
should be (the pooled profile of a misaligned pattern averages out), so training starts from a prior
(90 deg, the paper's finding on real data) or from the best of a short coarse sweep.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch

from edge.model.net import SOANet

log = logging.getLogger(__name__)


def angle_error(a: float, b: float) -> float:
    """Distance between two axis angles in degrees, modulo 180 (axes, not directions)."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def sweep_initial_angle(model: SOANet, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        angles: Sequence[float] = (0.0, 30.0, 60.0, 90.0, 120.0, 150.0), steps: int = 20,
                        lr: float = 1e-2, angle_lr: float = 2e-2) -> tuple[float, dict[float, float]]:
    """Train a copy of `model` briefly from each initial angle (all stages alike); pick the lowest loss.

    Args:
        model: the untrained network (left unchanged).
        batches: (x, y) pairs cycled for `steps` optimiser steps per candidate; the last pass over
            all batches scores the candidate (mean loss, eval mode).
        angles: candidate initial angles in degrees.
    Returns:
        (best angle in degrees, {angle: score}).
    """
    if not batches:
        raise ValueError("sweep needs at least one batch")
    scores: dict[float, float] = {}
    for angle in angles:
        trial = copy.deepcopy(model)
        trial.set_angles(float(angle))
        ids = {id(p) for p in trial.angle_parameters()}
        others = [p for p in trial.parameters() if id(p) not in ids]
        opt = torch.optim.Adam([{"params": others, "lr": lr},
                                {"params": trial.angle_parameters(), "lr": angle_lr}])
        trial.train()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            opt.zero_grad()
            loss_fn(trial(x), y).backward()
            opt.step()
        trial.eval()
        with torch.no_grad():
            scores[float(angle)] = float(sum(loss_fn(trial(x), y) for x, y in batches) / len(batches))
        log.info("angle sweep: start %.0f deg -> loss %.4f (angles now %s)", angle, scores[float(angle)],
                 ", ".join(f"{a:.1f}" for a in trial.angles()))
    best = min(scores, key=scores.__getitem__)
    return best, scores
