"""Single-Orientation Attention (SOA), after FaceSleuth-R (arXiv 2506.02695).

One learnable angle theta per layer. For a feature map X (C, H, W) and the unit axis a = (cos theta, sin theta):

    s(p)     = p . a                                   offset of pixel p along a (centred coordinates, px)
    s_k      = -R + k * D,  k = 0..L-1,  D = 2R / (L-1),  R = |cos| (W-1)/2 + |sin| (H-1)/2
    w_k(p)   = max(0, 1 - |s(p) - s_k| / D)            triangular weight of pixel p on bin k
    P_c(k)   = sum_p w_k(p) X_c(p) / sum_p w_k(p)      1. pool: mean over the line perpendicular to a
    Z_c(k)   = sigmoid(W2 relu(W1 P(k) + b1) + b2)_c   2. excite: channel bottleneck shared by all k
    Y_c(p)   = X_c(p) * sum_k w_k(p) Z_c(k)            3. apply: Z linearly interpolated at p's own offset

Only pixels of the map enter a mean (no zero padding), every pixel receives the attention of its own
offset (the weights w_k(p) sum to 1 over k for every p), and because w depends on theta through s(p) and R,
the pooled profile is differentiable in theta. At theta = 90 deg and L = H the bins sit exactly on the
rows, w_k(p) is 1 on row k and 0 elsewhere, and SOA is the fixed vertical variant (row means, "CVA").

Steps 1 and 3 are the linear maps `pool` (L, H*W) and `back` (H*W, L). The training form builds them
from theta on every call; the frozen form stores them as constants, so the deployed graph holds only
matrix products, 1x1 convolutions and element-wise ops (no grid_sample / affine_grid): TensorRT, INT8
and DLA accept it.

Convention:
    Image axes: x to the right (column index), y down (row index). Pixel centres sit at integer
    indices; coordinates are centred, x = j - (W-1)/2, y = i - (H-1)/2. theta = 0 is the horizontal
    axis, theta = 90 deg the vertical axis; theta grows from +x towards +y (clockwise on screen).
    The angle is stored as a free 2-vector v and read as atan2(v_y, v_x) folded into [0, 180) deg:
    a and -a give the same lines (the profile is only reversed), so the fold loses nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SOA", "angle_from_vector", "orientation_matrices", "soa_pool", "soa_apply", "vector_from_angle"]


def angle_from_vector(v: torch.Tensor) -> torch.Tensor:
    """Angle (radians, in [0, pi)) of a free 2-vector v (..., 2) = (x, y)."""
    return torch.remainder(torch.atan2(v[..., 1], v[..., 0]), math.pi)


def vector_from_angle(theta_deg: float) -> torch.Tensor:
    """Unit 2-vector (2,) for an angle in degrees (convention in the module docstring)."""
    t = math.radians(theta_deg)
    return torch.tensor([math.cos(t), math.sin(t)])


def orientation_matrices(v: torch.Tensor, height: int, width: int, length: int | None = None,
                         eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooling and back-projection matrices for the axis of v.

    Args:
        v: (2,) axis as a free vector (x, y); only its direction counts. Gradients flow into v.
        height, width: map size H, W in px.
        length: number of offset bins L (default H).
    Returns:
        pool (L, H*W): rows are normalised line means (each row sums to 1, or 0 for an empty bin).
        back (H*W, L): rows are interpolation weights (each row sums to 1).

    Example:
        >>> x = torch.arange(12.0).reshape(1, 1, 3, 4)
        >>> pool, back = orientation_matrices(vector_from_angle(90.0), 3, 4)   # L = H: row means
        >>> soa_pool(x, pool)
        tensor([[[1.5000, 5.5000, 9.5000]]])
    """
    if v.shape != (2,):
        raise ValueError(f"v must have shape (2,), got {tuple(v.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"map size must be positive, got {height}x{width}")
    length = height if length is None else int(length)
    if length < 2:
        raise ValueError(f"length L must be >= 2, got {length}")
    a = v / v.norm().clamp_min(eps)
    ys = torch.arange(height, dtype=v.dtype, device=v.device) - (height - 1) / 2
    xs = torch.arange(width, dtype=v.dtype, device=v.device) - (width - 1) / 2
    s = (xs[None, :] * a[0] + ys[:, None] * a[1]).reshape(-1)                       # (HW,)
    radius = a[0].abs() * (width - 1) / 2 + a[1].abs() * (height - 1) / 2
    radius = radius.clamp_min(1e-6)  # a 1x1 map has a single offset
    step = 2 * radius / (length - 1)
    centres = -radius + step * torch.arange(length, dtype=v.dtype, device=v.device)  # (L,)
    # clamp (not relu): its gradient passes at the boundary, so when pixels sit exactly on bin centres
    # (theta = 90 deg, L = H) the angle still gets the central-difference gradient instead of zero.
    w = torch.clamp(1 - (s[None, :] - centres[:, None]).abs() / step, min=0)          # (L, HW)
    pool = w / w.sum(1, keepdim=True).clamp_min(eps)
    back = (w / w.sum(0, keepdim=True).clamp_min(eps)).t()
    return pool, back


def soa_pool(x: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Profiles (B, C, L) of x (B, C, H, W) under a pooling matrix (L, H*W)."""
    return torch.matmul(x.flatten(2), pool.t())


def soa_apply(x: torch.Tensor, z: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
    """Attention map (B, C, H, W): profile z (B, C, L) back-projected with back (H*W, L)."""
    return torch.matmul(z, back.t()).reshape(x.shape)


class SOA(nn.Module):
    """SOA layer: pool along lines perpendicular to a learnt axis, excite, gate every pixel.

    Args:
        channels: C.
        size: (H, W) of the maps it will see (needed for the frozen form).
        length: offset bins L (default H).
        angle: initial angle in degrees (90 = vertical axis, the paper's finding on real data).
        learn_angle: False fixes the angle (theta = 90 gives the "CVA" variant).
        reduction: bottleneck width = max(8, C // reduction).
    Forward:
        x (B, C, H, W), prior (B, 1, H, W) or None -> (y (B, C, H, W), attention (B, C, H, W)).
    """

    def __init__(self, channels: int, size: tuple[int, int], length: int | None = None, angle: float = 90.0,
                 learn_angle: bool = True, reduction: int = 8) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.length = int(length or size[0])
        hidden = max(8, channels // reduction)
        # The 1x1 channel bottleneck as Linear layers on (B, L, C) profiles: on CPU a Conv1d with kernel 1
        # takes PyTorch's slow im2col path, a Linear is one GEMM.
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        vec = vector_from_angle(angle)
        if learn_angle:
            self.axis = nn.Parameter(vec)
        else:
            self.register_buffer("axis", vec)
        self.frozen = False

    @property
    def angle(self) -> float:
        """Current angle in degrees, in [0, 180)."""
        return math.degrees(float(angle_from_vector(self.axis.detach())))

    def set_angle(self, angle: float) -> None:
        """Set the angle (degrees) in place, keeping the storage (parameter or buffer)."""
        if self.frozen:
            raise RuntimeError("cannot change the angle of a frozen SOA layer")
        with torch.no_grad():
            self.axis.copy_(vector_from_angle(angle))

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frozen:
            return self.pool_matrix, self.back_matrix
        return orientation_matrices(self.axis, self.size[0], self.size[1], self.length)

    def freeze(self) -> None:
        """Replace the angle by the two constant matrices (the deployable form). Irreversible."""
        if self.frozen:
            return
        with torch.no_grad():
            pool, back = orientation_matrices(self.axis.detach(), self.size[0], self.size[1], self.length)
        self.register_buffer("pool_matrix", pool.contiguous())
        self.register_buffer("back_matrix", back.contiguous())
        self.frozen_angle = self.angle
        self.frozen = True

    def macs(self, channels: int) -> int:
        """Multiply-accumulates per sample: pool + back-projection + bottleneck."""
        hw, n = self.size[0] * self.size[1], self.length
        return 2 * channels * hw * n + n * (self.fc1.weight.numel() + self.fc2.weight.numel())

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"SOA expects (B, C, {self.size[0]}, {self.size[1]}), got {tuple(x.shape)}")
        pool, back = self.matrices()
        prof = soa_pool(x, pool).transpose(1, 2)                              # (B, L, C)
        z = torch.sigmoid(self.fc2(F.relu(self.fc1(prof)))).transpose(1, 2)  # (B, C, L)
        att = soa_apply(x, z, back)
        if prior is not None:
            att = att * prior
        return x * att, att
