"""One human line per mer.event: what the events node prints live and `facesleuth events tail` shows."""

from __future__ import annotations


def format_event(ev: dict) -> str:
    """One human line per event (the demo prints these live)."""
    onset, apex, offset = (ev.get(k) or {} for k in ("onset", "apex", "offset"))
    scores = ev.get("scores") or {}
    latency = "" if ev.get("latency_ms") is None else f" latency {ev['latency_ms']:.0f} ms"
    top = " ".join(f"{k}={v:.2f}" for k, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    ctx = ev.get("context") or {}
    around = [k for k, on in (("talking", ctx.get("talking")), ("blink near", ctx.get("blink_near"))) if on]
    around += [f"occluded {r}" for r in ctx.get("occluded") or ()]
    return (f"event #{ev.get('seq')} {ev.get('stream')}/track {ev.get('track_id')}: {ev.get('kind')} "
            f"{ev.get('label')} ({ev.get('confidence', 0):.2f}) frames {onset.get('frame')}-{apex.get('frame')}"
            f"-{offset.get('frame')} ({ev.get('duration_s', 0) * 1000:.0f} ms) intensity "
            f"{ev.get('intensity', 0):.2f} px{latency} [{top}]" + (f" ({', '.join(around)})" if around else ""))
