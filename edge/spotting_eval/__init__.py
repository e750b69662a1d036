"""`facesleuth eval spotting`: the product's spotting path on the long-video datasets, scored by the MEGC rule.

- frames.py: a long video's frame folder read in frame-number order (what `extract` feeds the nodes);
- record.py: each video once through the face, flow and spot nodes (edge.bench.clips.extract), the
  spotter's input recorded and cached per video, in `--jobs` processes;
- thresholds.py: replays of the recordings with the shipped params and with every setting of the
  calibration grid, and the thresholds chosen leave-one-subject-out / leave-one-dataset-out;
- plot.py: the per-video PNG (score over time, ground truth and spotted intervals);
- cli.py: the command (add_arguments / main), the table and the JSON report.

Protocol and caveats: docs/spotting-datasets.md.
"""
