"""SOA-Net: a small residual CNN over onset->apex motion with one attention module per stage.

After FaceSleuth-R (arXiv 2506.02695), resized for edge devices. The paper's main branch runs on
224x224 RGB apex-onset differences with 128..512 channels (about 4.6 GMACs for that branch alone); here
the input is the motion itself (flow u, v and optical-strain magnitude, optionally the apex grey level)
at 64x64. Why 64: the aligned crop is 128 px; micro-movements of 0.3-3 px on the crop are still 0.15-1.5
px of flow after halving, the smallest regions that move (brow heads, mouth corners) stay >= 8 px wide,
and the whole net fits 1 M parameters and 100 M MACs. Larger sizes are a config value away.

Layout: stem conv3x3 (C0 @ S) -> 4 stages (conv3x3 stride 2 + conv3x3, residual, then attention)
-> global average pool -> dropout -> linear. Attention variants under one API:
"soa" (learnt angle), "cva" (fixed 90 deg, row means), "coord" (coordinate attention, both axes, Hou et al.
CVPR 2021), "none". Blocks, then the class, then `_create`, the default cfgs and the registered variants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edge.model.soa import SOA
from edge.model.variants import default_cfgs

DEFAULT_CLASSES = ("negative", "positive", "surprise")
ATTENTIONS = ("soa", "cva", "coord", "none")


class CoordAttention(nn.Module):
    """Coordinate attention: row and column profiles, shared bottleneck, one gate per axis.

    Forward: x (B, C, H, W), prior (B, 1, H, W) or None -> (y, attention), both (B, C, H, W).
    """

    def __init__(self, channels: int, size: tuple[int, int], reduction: int = 8) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.size = size
        self.fc1 = nn.Linear(channels, hidden)   # on (B, H + W, C) profiles, like SOA's bottleneck
        self.fc_h = nn.Linear(hidden, channels)
        self.fc_w = nn.Linear(hidden, channels)

    def macs(self, channels: int) -> int:
        h, w = self.size
        return (2 * channels * h * w + (h + w) * self.fc1.weight.numel() + h * self.fc_h.weight.numel()
                + w * self.fc_w.weight.numel())

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.shape[-2]
        # One profile per axis, concatenated so the bottleneck is shared (as in the paper).
        prof = torch.cat([x.mean(-1), x.mean(-2)], dim=2).transpose(1, 2)   # (B, H + W, C)
        hid = F.relu(self.fc1(prof))
        zh = torch.sigmoid(self.fc_h(hid[:, :h])).transpose(1, 2)           # (B, C, H)
        zw = torch.sigmoid(self.fc_w(hid[:, h:])).transpose(1, 2)           # (B, C, W)
        att = zh.unsqueeze(-1) * zw.unsqueeze(-2)
        if prior is not None:
            att = att * prior
        return x * att, att


class Block(nn.Module):
    """Residual block (conv3x3 stride s + BN + ReLU + conv3x3 + BN, projected shortcut), then attention."""

    def __init__(self, cin: int, cout: int, stride: int, out_size: tuple[int, int], attn: str,
                 angle: float, length: int | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.attn: nn.Module | None
        if attn == "soa":
            self.attn = SOA(cout, out_size, length, angle=angle, learn_angle=True)
        elif attn == "cva":
            self.attn = SOA(cout, out_size, length, angle=90.0, learn_angle=False)
        elif attn == "coord":
            self.attn = CoordAttention(cout, out_size)
        else:
            self.attn = None

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.short(x))
        if self.attn is None:
            return y, None
        return self.attn(y, prior)


@dataclass
class NetConfig:
    """Architecture as data: travels in the model file and rebuilds the net with create_model()."""

    attn: str = "soa"
    in_chans: int = 3
    img_size: int = 64
    classes: tuple[str, ...] = DEFAULT_CLASSES
    stem: int = 24
    widths: tuple[int, ...] = (32, 48, 96, 160)
    angle: float = 90.0            # initial SOA angle, degrees (the paper reports ~88 deg learnt on real data)
    length: int | None = None      # SOA offset bins per stage; None = the stage's height
    propagate: bool = False        # multiply each stage's attention by the previous stage's (channel mean)
    drop: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["widths"] = list(self.classes), list(self.widths)
        return d


class SOANet(nn.Module):
    """The classifier. Forward: x (B, in_chans, S, S) motion -> logits (B, num_classes)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        if cfg.attn not in ATTENTIONS:
            raise ValueError(f"unknown attention {cfg.attn!r}; choose from {ATTENTIONS}")
        if cfg.img_size % 2 ** len(cfg.widths):
            raise ValueError(f"img_size {cfg.img_size} must be divisible by {2 ** len(cfg.widths)}")
        if len(cfg.classes) < 2:
            raise ValueError("need at least two classes")
        self.cfg = cfg
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_chans, cfg.stem, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cfg.stem), nn.ReLU(inplace=True))
        blocks, cin, size = [], cfg.stem, cfg.img_size
        for width in cfg.widths:
            size //= 2
            length = None if cfg.length is None else max(2, cfg.length * size // cfg.img_size)
            blocks.append(Block(cin, width, 2, (size, size), cfg.attn, cfg.angle, length))
            cin = width
        self.blocks = nn.ModuleList(blocks)
        self.drop = nn.Dropout(cfg.drop)
        self.head = nn.Linear(cin, len(cfg.classes))
        self.frozen = False

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.classes)

    def soa_layers(self) -> list[SOA]:
        return [b.attn for b in self.blocks if isinstance(b.attn, SOA)]

    def angles(self) -> list[float]:
        """Per-stage SOA angles in degrees, [0, 180) (empty for "coord" and "none")."""
        return [m.angle for m in self.soa_layers()]

    def set_angles(self, angle: float | list[float]) -> None:
        layers = self.soa_layers()
        values = [angle] * len(layers) if isinstance(angle, (int, float)) else list(angle)
        for m, a in zip(layers, values, strict=True):
            m.set_angle(a)

    def angle_parameters(self) -> list[nn.Parameter]:
        """The learnable angle vectors (give them their own optimiser group: larger lr, no weight decay)."""
        return [m.axis for m in self.soa_layers() if isinstance(m.axis, nn.Parameter)]

    def freeze(self) -> SOANet:
        """Deployable form, in place: eval mode, BatchNorm folded into the convolutions before it, and
        every SOA angle folded into constant matrices. Irreversible (save the training form). Returns self."""
        self.eval()
        if self.frozen:
            return self
        self.frozen = True
        _fold_bn(self.stem, 0, 1)
        for b in self.blocks:
            b.conv1, b.bn1 = fuse_conv_bn_eval(b.conv1, b.bn1), nn.Identity()
            b.conv2, b.bn2 = fuse_conv_bn_eval(b.conv2, b.bn2), nn.Identity()
            if len(b.short):
                _fold_bn(b.short, 0, 1)
        for m in self.soa_layers():
            m.freeze()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        prior = None
        for block in self.blocks:
            x, att = block(x, prior)
            if self.cfg.propagate and att is not None:
                prior = F.max_pool2d(att.mean(1, keepdim=True), 2)
        x = x.mean((2, 3))
        return self.head(self.drop(x))


def _fold_bn(seq: nn.Sequential, conv: int, bn: int) -> None:
    seq[conv], seq[bn] = fuse_conv_bn_eval(seq[conv], seq[bn]), nn.Identity()


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-accumulates per sample, counted with forward hooks on convs, linears and attention."""
    total = [0]

    def conv_hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        k = m.weight[0].numel()          # (Cin/groups) * kernel size
        total[0] += out[0].numel() * k   # per sample: output elements * MACs each

    def linear_hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        total[0] += out[0].numel() * m.in_features

    def attn_hook(m: nn.Module, inp: tuple, out: tuple) -> None:
        total[0] += m.macs(inp[0].shape[1]) - _inner_linear_macs(m)

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, (SOA, CoordAttention)):
            handles.append(m.register_forward_hook(attn_hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _inner_linear_macs(m: nn.Module) -> int:
    # The hooks on an attention module's own Linear layers count its bottleneck already; m.macs() counts
    # it too, so subtract it once here.
    if isinstance(m, SOA):
        return m.length * (m.fc1.weight.numel() + m.fc2.weight.numel())
    h, w = m.size
    return (h + w) * m.fc1.weight.numel() + h * m.fc_h.weight.numel() + w * m.fc_w.weight.numel()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- creation, cfgs and registry (timm's order) -------------------------------------------------------

_REGISTRY: dict[str, Callable[..., SOANet]] = {}


def register_model(fn: Callable[..., SOANet]) -> Callable[..., SOANet]:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> SOANet:
    """The one way to build a network. None-valued kwargs are dropped so unset CLI flags keep defaults."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name](**{k: v for k, v in kwargs.items() if v is not None})


def _create(variant: str, **kwargs: Any) -> SOANet:
    cfg = {**default_cfgs[variant], **kwargs}
    unknown = set(cfg) - set(NetConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown model option(s) {sorted(unknown)}")
    for key in ("classes", "widths"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    return SOANet(NetConfig(**cfg))


@register_model
def soa(**kwargs: Any) -> SOANet:
    """SOA-Net: one learnt orientation per stage (default init 90 deg)."""
    return _create("soa", **kwargs)


@register_model
def cva(**kwargs: Any) -> SOANet:
    """Ablation: the angle fixed at 90 deg (row means, vertical attention)."""
    return _create("cva", **kwargs)


@register_model
def coord(**kwargs: Any) -> SOANet:
    """Ablation: coordinate attention over both axes."""
    return _create("coord", **kwargs)


@register_model
def none(**kwargs: Any) -> SOANet:
    """Ablation: no attention."""
    return _create("none", **kwargs)
