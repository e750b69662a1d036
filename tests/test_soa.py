"""The SOA operator (edge/model/soa.py): shapes, errors, exactness, equivariance, gradients, learning.

Angle convention checked here: image axes x right (column), y down (row), centred pixel coordinates;
theta is the axis a = (cos theta, sin theta) along which the attention profile varies, so theta = 90 deg
pools along rows (the vertical axis) and a pattern "varying along phi" is constant on lines perpendicular
to (cos phi, sin phi).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge.model.angles import angle_error, sweep_initial_angle
from edge.model.soa import SOA, angle_from_vector, orientation_matrices, soa_pool, vector_from_angle


def _soa(channels=4, size=(16, 16), angle=90.0, length=None, seed=0, dtype=torch.float32) -> SOA:
    torch.manual_seed(seed)
    m = SOA(channels, size, length, angle=angle).to(dtype)
    # Larger bottleneck weights than the default init so the attention actually varies across offsets.
    with torch.no_grad():
        for p in (m.fc1.weight, m.fc2.weight):
            p.normal_(0, 1.0)
    return m


class TestSOA:
    def test_smoke_and_cardinality(self):
        m = _soa(size=(12, 20), length=9)
        y, att = m(torch.randn(3, 4, 12, 20))
        assert y.shape == att.shape == (3, 4, 12, 20)
        pool, back = orientation_matrices(vector_from_angle(33.0), 12, 20, 9)
        assert pool.shape == (9, 240) and back.shape == (240, 9)
        assert torch.allclose(back.sum(1), torch.ones(240), atol=1e-6)  # every pixel fully attended
        assert torch.all(att > 0) and torch.all(att < 1)

    def test_exceptions(self):
        m = _soa(size=(8, 8))
        with pytest.raises(ValueError, match=r"expects \(B, C, 8, 8\)"):
            m(torch.randn(1, 4, 8, 9))
        with pytest.raises(ValueError, match="shape"):
            orientation_matrices(torch.zeros(3), 8, 8)
        with pytest.raises(ValueError, match="L"):
            orientation_matrices(torch.ones(2), 8, 8, 1)

    def test_angle_is_folded_and_unsaturated(self):
        v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1e-3], [-1.0, 1.0], [2.0, -2.0]])
        deg = torch.rad2deg(angle_from_vector(v))
        assert torch.allclose(deg, torch.tensor([0.0, 90.0, 0.0573, 135.0, 135.0]), atol=1e-3)
        assert torch.all(deg >= 0) and torch.all(deg < 180)

    def test_pool_is_mean_of_in_map_pixels(self):
        # Any angle: a constant map pools to exactly that constant (no zero padding enters a mean).
        x = torch.full((1, 1, 10, 14), 3.0)
        for deg in (0.0, 17.0, 45.0, 90.0, 123.0):
            pool, _ = orientation_matrices(vector_from_angle(deg), 10, 14, 10)
            assert torch.allclose(soa_pool(x, pool), torch.full((1, 1, 10), 3.0), atol=1e-6), deg

    def test_theta0_pools_columns(self):
        x = torch.randn(2, 3, 9, 11)
        pool, _ = orientation_matrices(vector_from_angle(0.0), 9, 11, 11)
        assert torch.allclose(soa_pool(x, pool), x.mean(-2), atol=1e-6)

    @pytest.mark.parametrize("size", [(16, 16), (12, 20)])
    def test_cva_equivalence_at_90(self, size):
        """theta = 90 deg and L = H: row means, gate per row -- the fixed vertical variant to 1e-6."""
        m = _soa(channels=5, size=size, angle=90.0)
        x = torch.randn(2, 5, *size)
        y, _ = m(x)
        # CVA written independently: row means (B, H, C), bottleneck, gate per row
        z = torch.sigmoid(m.fc2(F.relu(m.fc1(x.mean(-1).transpose(1, 2))))).transpose(1, 2)
        assert torch.allclose(y, x * z.unsqueeze(-1), atol=1e-6)

    @pytest.mark.parametrize("deg", [0.0, 30.0, 72.0, 90.0, 135.0])
    def test_rotation_equivariance(self, deg):
        """Rotating the input by 90 deg (x -> y, y -> -x on screen: clockwise) and the angle by +90 deg
        rotates the output."""
        m = _soa(channels=3, size=(15, 15), angle=deg)
        m2 = _soa(channels=3, size=(15, 15), angle=deg + 90.0)
        m2.load_state_dict({**m.state_dict(), "axis": vector_from_angle(deg + 90.0)})
        x = torch.randn(2, 3, 15, 15)
        # rot90 with k=-1 over (H, W) maps pixel (x, y) to (-y, x) in centred image axes: the +90 deg turn.
        rot = lambda t: torch.rot90(t, -1, (-2, -1))  # noqa: E731
        y, _ = m(x)
        y2, _ = m2(rot(x))
        assert torch.allclose(y2, rot(y), atol=1e-5)
        # (a turn by -90 deg is the same axis change modulo 180.) Keeping the angle does not commute
        # with the turn, so the check can fail:
        y3, _ = m(rot(x))
        assert not torch.allclose(y3, rot(y), atol=1e-3)

    @pytest.mark.parametrize("deg", [0.0, 37.0, 90.0, 150.0])
    def test_angle_gradient_finite_nonzero(self, deg):
        m = _soa(size=(16, 16), angle=deg)
        x = torch.randn(2, 4, 16, 16)
        y, _ = m(x)
        (y * torch.randn_like(y)).sum().backward()
        g = m.axis.grad
        assert torch.isfinite(g).all()
        # The component that turns the axis (perpendicular to it) is what moves the angle.
        a = m.axis.detach() / m.axis.detach().norm()
        assert abs(float(g @ torch.stack([-a[1], a[0]]))) > 1e-6

    def test_gradcheck_float64_including_angle(self):
        m = _soa(channels=2, size=(6, 5), angle=70.0, length=5, dtype=torch.float64)
        x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
        axis = m.axis.detach().clone().requires_grad_(True)
        w1 = m.fc1.weight.detach().clone().requires_grad_(True)

        def f(x, axis, w1):
            pool, back = orientation_matrices(axis, 6, 5, 5)
            z = torch.sigmoid(m.fc2(F.relu(F.linear(soa_pool(x, pool).transpose(1, 2), w1, m.fc1.bias))))
            return x * torch.matmul(z.transpose(1, 2), back.t()).reshape(x.shape)

        assert torch.autograd.gradcheck(f, (x, axis, w1), eps=1e-6, atol=1e-5)

    @pytest.mark.parametrize("deg", [90.0, 61.0])
    def test_frozen_equals_training_form(self, deg):
        m = _soa(size=(12, 12), angle=deg)
        x = torch.randn(3, 4, 12, 12)
        y, _ = m(x)
        m.freeze()
        assert m.frozen and "pool_matrix" in dict(m.named_buffers())
        yf, _ = m(x)
        assert torch.allclose(y, yf, atol=1e-6)
        with pytest.raises(RuntimeError, match="frozen"):
            m.set_angle(10.0)


# --- the learning test ---------------------------------------------------------------------------------

N_PIX, PHI = 32, 30.0


def _oriented(angles_deg: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, 1, N, N) random smooth 1-D signals f(s), s = x cos a + y sin a, unit variance, plus noise.

    Written without edge.model.soa so the angle convention is checked, not assumed: x = column, y = row.
    """
    n = len(angles_deg)
    c = torch.arange(N_PIX, dtype=torch.float32) - (N_PIX - 1) / 2
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    t = torch.deg2rad(angles_deg)[:, None, None]
    s = xs * torch.cos(t) + ys * torch.sin(t)
    out = torch.zeros(n, N_PIX, N_PIX)
    for _ in range(4):  # a few wavelengths: broad enough to pull from 30 deg, sharp enough to settle
        lam = 4 + 12 * torch.rand(n, 1, 1, generator=g)
        out += torch.cos(2 * math.pi * s / lam + 2 * math.pi * torch.rand(n, 1, 1, generator=g))
    out = out / out.std((1, 2), keepdim=True)
    return (out + 0.3 * torch.randn(n, N_PIX, N_PIX, generator=g)).unsqueeze(1)


def _task_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives vary along PHI; negatives carry the same energy along an orientation 50-130 deg away,
    so "no pattern" is never a shortcut: only the orientation tells the classes apart."""
    y = torch.randint(0, 2, (n,), generator=g)
    other = PHI + 50 + 80 * torch.rand(n, generator=g)
    return _oriented(torch.where(y == 1, torch.full((n,), PHI), other), g), y.float()


class _Probe(nn.Module):
    """One SOA layer, global energy read-out, logistic head (read-out sign fixed: energy -> positive)."""

    def __init__(self, angle: float) -> None:
        super().__init__()
        self.soa = SOA(1, (N_PIX, N_PIX), angle=angle)
        self.head = nn.Linear(1, 1)
        nn.init.constant_(self.head.weight, 1.0)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.soa(x)
        return self.head((y * x).mean((2, 3))).squeeze(1)


@pytest.mark.parametrize("start", [PHI - 30.0, PHI + 30.0])
def test_soa_learns_the_orientation(start):
    torch.manual_seed(0)
    model = _Probe(start)
    g = torch.Generator().manual_seed(1)
    others = [p for n, p in model.named_parameters() if n != "soa.axis"]
    opt = torch.optim.Adam([{"params": [model.soa.axis], "lr": 0.03}, {"params": others, "lr": 0.05}])
    for _ in range(100):
        x, y = _task_batch(64, g)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert angle_error(model.soa.angle, PHI) < 3.0, model.soa.angle
    assert loss.item() < 0.4


def test_angle_sweep_finds_the_basin():
    from edge.model.net import create_model

    g = torch.Generator().manual_seed(3)
    batches = [_task_batch(32, g) for _ in range(4)]
    batches = [(F.interpolate(x, size=64, mode="bilinear").repeat(1, 3, 1, 1), y.long()) for x, y in batches]
    net = create_model("soa", classes=("other", "phi"), stem=8, widths=(8, 8, 8, 8), drop=0.0)
    before = net.angles()
    best, scores = sweep_initial_angle(net, batches, F.cross_entropy, angles=(30.0, 120.0), steps=12)
    assert set(scores) == {30.0, 120.0} and all(math.isfinite(v) for v in scores.values())
    assert best == 30.0, scores
    assert net.angles() == before  # the model passed in is left unchanged
