"""SMIC-HS (100 fps): no annotation sheet; the folders are the labels:
`HS/<subject>/micro/<negative|positive|surprise>/<sample>/<frames>`. Each clip is cut to the expression,
so onset = first frame, offset = last frame, and the missing apex is onset + (offset - onset) // 2 (MEB)."""

from __future__ import annotations

from pathlib import Path

from edge.data.datasets.common import Sample, find_one, list_frames, make_sample
from edge.errors import UserError

LABELS = ("negative", "positive", "surprise")


def load(root: str | Path) -> list[Sample]:
    root = Path(root)
    hs = find_one(root, ("HS", "SMIC-HS", "SMIC_all_raw/HS"), "SMIC HS folder")
    out = []
    for subj in sorted((p for p in hs.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        micro = subj / "micro"
        if not micro.is_dir():
            continue
        for emo in sorted(p for p in micro.iterdir() if p.is_dir()):
            if emo.name.lower() not in LABELS:
                raise UserError(f"unknown SMIC label folder {emo} (expected {', '.join(LABELS)})")
            for clip in sorted(p for p in emo.iterdir() if p.is_dir()):
                frames = list_frames(clip)
                first, last = min(frames), max(frames)
                # Normalise s1 -> s01 (the MEGC list's spelling) so ids sort and match.
                name = subj.name.lower()
                subject = f"s{int(name[1:]):02d}" if name[1:].isdigit() else subj.name
                out.append(make_sample("smic", subject, clip.name, clip, first, None, last, emo.name.lower(), []))
    if not out:
        raise UserError(f"no SMIC-HS samples under {hs} (expected <subject>/micro/<label>/<sample>/)")
    return out
