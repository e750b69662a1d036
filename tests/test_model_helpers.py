"""Helpers shared by the model tests (imported as a module), and a check that they do their job."""

from __future__ import annotations

import torch
from torch import nn

from edge.model import create_model


def varied_input(n: int, chans: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs that differ in scale and offset per sample and channel, like real flow fields do."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, chans, size, size, generator=g)
    return x * 3 * torch.rand(n, chans, 1, 1, generator=g) + torch.randn(n, chans, 1, 1, generator=g)


def settled(name: str = "soa", seed: int = 0, **kw) -> nn.Module:
    """A net with realistic BatchNorm statistics and a head that spreads the logits (eval mode).

    An untrained net with default init outputs near-constant logits, which would make any parity check
    between two implementations pass trivially.
    """
    torch.manual_seed(seed)
    m = create_model(name, **kw)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = None  # cumulative average over the passes below
    m.train()
    with torch.no_grad():
        for i in range(3):
            m(varied_input(8, m.cfg.in_chans, m.cfg.img_size, seed=100 + i))
        m.head.weight.normal_(0, 1.0)
    return m.eval()


def test_settled_model_spreads_logits():
    m = settled()
    with torch.no_grad():
        z = m(varied_input(16))
    assert float(z.std(0).max()) > 0.05
