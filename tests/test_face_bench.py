"""`facesleuth bench face` runs end to end on a short clip and reports what it claims (no timing asserted)."""

from __future__ import annotations

import json

from edge.cli import main


def test_bench_face_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "face.json"
    assert main(["bench", "face", "--frames", "24", "--faces", "1", "--json", str(out)]) == 0
    assert "face: detection + tracking + alignment" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    tracked = [r for r in doc["rows"] if r["mode"].startswith("tracked")]
    baseline = [r for r in doc["rows"] if r["mode"].startswith("baseline")]
    assert tracked and len(baseline) == 1
    for r in tracked:
        assert r["tracks"] == 1 and r["fps"] > 0
        assert r["true_drift_max_px"] < 0.3, "the locked crop of a rigidly moving face stays still"
    # The per-frame baseline jitters: the reason the crop is locked.
    assert baseline[0]["true_drift_max_px"] > 3 * max(r["true_drift_max_px"] for r in tracked)
    assert {"load_avg_1min", "target_met", "machine"} <= set(doc)
