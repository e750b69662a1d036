"""`scorecard`: compares the events of a run with a ground-truth script and prints a summary at the end.

The synthetic capture source writes its ground truth (`capture.truth`); this node collects the events and,
at end of stream, matches micro events to scripted micro intervals under the MEGC rule (one-to-one, frame
IoU >= 0.5), then prints every scripted interval with what was found, the false events, spotting F1 and
label accuracy. It also writes the summary as JSON when `out` is set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.data.metrics import iou
from edge.runtime.messages import Message
from edge.runtime.node import Node, Param, Port, register_node


def score(truth: list[dict[str, Any]], events: list[dict[str, Any]], thr: float = 0.5) -> dict[str, Any]:
    """Match micro events to micro truth intervals (greedy by IoU, one-to-one). Returns a summary dict."""
    gt = [t for t in truth if t.get("kind") == "micro"]
    ev = [e for e in events if e.get("kind") == "micro"]
    span = [(int(e["onset"]["frame"]), int(e["offset"]["frame"])) for e in ev]
    pairs = sorted(((iou(s, (int(t["onset"]), int(t["offset"]))), i, j)
                    for i, s in enumerate(span) for j, t in enumerate(gt)), reverse=True)
    matched: dict[int, int] = {}  # truth index -> event index
    used: set[int] = set()
    for v, i, j in pairs:
        if v >= thr and i not in used and j not in matched:
            matched[j] = i
            used.add(i)
    tp = len(matched)
    fp, fn = len(ev) - tp, len(gt) - tp
    labelled = [(gt[j].get("label"), ev[i].get("label")) for j, i in matched.items() if gt[j].get("label")]
    correct = sum(a == b for a, b in labelled)
    rows = []
    for j, t in enumerate(gt):
        e = ev[matched[j]] if j in matched else None
        best = max((iou(sp, (int(t["onset"]), int(t["offset"]))) for sp in span), default=0.0)
        rows.append({"onset": t["onset"], "offset": t["offset"], "truth": t.get("label"),
                     "found": e is not None, "label": e.get("label") if e else None,
                     "confidence": e.get("confidence") if e else None, "best_iou": round(best, 2)})
    false_events = [{"onset": e["onset"]["frame"], "offset": e["offset"]["frame"], "label": e.get("label")}
                    for i, e in enumerate(ev) if i not in used]
    distractors = [t for t in truth if t.get("kind") != "micro"]
    return {
        "micro_truth": len(gt), "micro_events": len(ev), "tp": tp, "fp": fp, "fn": fn,
        "f1": 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0,
        "label_accuracy": correct / len(labelled) if labelled else None,
        "distractors": {k: sum(t.get("kind") == k for t in distractors) for k in ("blink", "head", "macro")},
        "other_events": len(events) - len(ev), "intervals": rows, "false_events": false_events,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = ["", "== scorecard: events against the script =="]
    for r in s["intervals"]:
        found = (f"found: {r['label']} ({r['confidence']:.2f})" if r["found"] else
                 f"MISSED (best overlapping event IoU {r['best_iou']:.2f} < 0.5)" if r["best_iou"] > 0 else "MISSED")
        ok = "" if not r["found"] or r["truth"] is None else ("  ok" if r["label"] == r["truth"] else "  wrong label")
        lines.append(f"  micro frames {r['onset']:>5}-{r['offset']:<5} truth {r['truth'] or '-':<9} {found}{ok}")
    for f in s["false_events"]:
        lines.append(f"  FALSE micro event frames {f['onset']}-{f['offset']} ({f['label']})")
    acc = "n/a" if s["label_accuracy"] is None else f"{100 * s['label_accuracy']:.0f}%"
    d = s["distractors"]
    lines.append(f"  spotting F1 {s['f1']:.2f} (TP {s['tp']}, FP {s['fp']}, FN {s['fn']}), label accuracy {acc}; "
                 f"distractors in the script: {d['blink']} blinks, {d['head']} head movements, {d['macro']} macro")
    return "\n".join(lines)


@register_node("scorecard")
class Scorecard(Node):
    """Summary of events found against a ground-truth script (the demo's last stage)."""

    inputs = {"events": Port("event")}
    params = {
        "truth": Param(Path, "truth.json", "ground truth written by the synthetic capture source"),
        "out": Param(Path, None, "also write the summary here as JSON"),
    }

    def setup(self) -> None:
        self.events: list[dict[str, Any]] = []

    def process(self, port: str, msg: Message) -> None:
        self.events.append(dict(msg.meta))

    def end_of_stream(self) -> None:
        path = Path(self.p.truth)
        if not path.is_file():
            self.log.error("no ground truth at %s: nothing to score", path)
            return
        truth = json.loads(path.read_text())["intervals"]
        summary = score(truth, self.events)
        print(format_summary(summary) + "\n", end="", flush=True)  # one write: other nodes log meanwhile
        if self.p.out:
            Path(self.p.out).write_text(json.dumps(summary, indent=1, default=str))
