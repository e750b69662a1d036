"""Named capture domains for the synthetic source: camera, face size and nuisance levels.

A domain is what a held-out-domain evaluation holds out: train on "lab200", test on "webcam30", and the
model has to survive lower frame rate, smaller faces, noise, compression and head motion it never saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from edge.errors import UserError


@dataclass(frozen=True)
class Domain:
    """Nuisance levels. Lengths in px of the frame unless noted; rates per minute; times in s."""

    name: str
    fps: float
    iod_px: tuple[float, float]          # inter-ocular distance of faces in the frame (scale range)
    noise_sigma: float                   # Gaussian sensor noise, grey levels (0-255)
    jpeg_quality: int | None             # compression round trip (None: lossless)
    blur_sigma: tuple[float, float]      # optical blur range, px of the frame
    drift_px_s: float                    # slow head drift speed
    jitter_px: float                     # per-frame head jitter (and residual mis-alignment in samples)
    head_turns_per_min: float            # larger rigid head movements (distractors)
    blinks_per_min: float
    illumination: float                  # relative amplitude of slow light changes (0.1 = +-10 %)
    gamma: tuple[float, float]           # camera gamma range
    description: str = ""
    # Real-face nuisances (edge.data.synth.SyntheticVideo), all off in the presets so that their clips and
    # ground truth stay what they were for a seed; switch them on with overrides.
    speech_per_min: float = 0.0          # talking bursts (random events)
    occluders_per_min: float = 0.0       # a hand or object sliding over part of the face (random events)
    blink_drag: float = 0.0              # random blinks close fully and drag brows/cheeks by this fraction
    restless: float = 0.0                # continuous head sway, nods and rolls (1 = a person talking)

    def to_dict(self) -> dict:
        return asdict(self)


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("lab200", 200.0, (60.0, 75.0), 1.0, None, (0.0, 0.4), 0.5, 0.03, 0.5, 10.0, 0.01, (0.95, 1.05),
           "CASME II / SAMM-like: 200 fps, large faces, clean, still head"),
    Domain("hs100", 100.0, (45.0, 60.0), 2.0, 95, (0.2, 0.6), 1.0, 0.08, 1.0, 12.0, 0.03, (0.9, 1.1),
           "SMIC-HS-like: 100 fps, medium faces, mild noise"),
    Domain("webcam30", 30.0, (28.0, 48.0), 4.0, 70, (0.4, 1.0), 4.0, 0.35, 3.0, 17.0, 0.10, (0.8, 1.25),
           "consumer webcam: 30 fps, small faces, noisy, compressed, moving head"),
    Domain("edge60", 60.0, (35.0, 55.0), 3.0, 85, (0.3, 0.8), 2.0, 0.2, 2.0, 15.0, 0.06, (0.85, 1.15),
           "Jetson CSI camera: 60 fps, medium faces, moderate noise"),
)}


def get_domain(name: str, **overrides: object) -> Domain:
    """The named preset, with fields replaced by `overrides` (e.g. noise_sigma=0)."""
    if name not in DOMAINS:
        raise UserError(f"unknown synthetic domain preset {name!r}; known: {', '.join(DOMAINS)}")
    bad = [k for k in overrides if k not in Domain.__dataclass_fields__ or k == "name"]
    if bad:
        raise UserError(f"unknown domain field(s) {', '.join(bad)}; known: {', '.join(Domain.__dataclass_fields__)}")
    return replace(DOMAINS[name], **overrides)
