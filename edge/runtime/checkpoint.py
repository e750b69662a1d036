"""A node's checkpoint: the state a restarted process goes on from (Node.checkpoint_every).

Acknowledged delivery resends to a restarted process what the dead one had not acknowledged. A node
whose state no short window of inputs rebuilds (spot: seconds of noise statistics, open intervals)
acknowledges its handled inputs only in batches, each right after the runner saved the node's state
with them in it: the restarted process loads the newest checkpoint and is sent exactly the inputs after
it, so it emits what the dead one would have (the same ids: duplicates are dropped downstream).

A checkpoint is taken only between messages, when no input is handled in part (a later stage of
frame-order delivery due): then the saved state holds exactly the inputs acknowledged with it. It also
holds the node's outputs that downstream has not acknowledged yet (every lossless link's outbox), so
the inputs they came from are acknowledged with it too, not held until downstream acknowledges: the
restarted process sends them again. Without that, face (whose crops flow and spot hold for their own
windows and checkpoints) never found a moment with nothing waiting, and capture had to hold what
every node downstream held. Such a moment comes within a message or two; a batch that finds none
within SLACK more inputs acknowledges its oldest without (a restart then misses what they did to the
state, as without checkpoints) rather than stall the producers. It also names the ids of the last two batches, so that one
whose acknowledgement died with the process is dropped as a repeat rather than counted twice.

The file lives in the run's private folder (mode 0700) and is written by this user's runner only:
pickle is what it takes for numpy arrays, deques and dataclasses, and nothing else reads it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

VERSION = 2  # 2: the outputs' unacknowledged messages too
SLACK = 4  # handled inputs held beyond a batch while waiting for a moment to checkpoint (Node.held)


def save(path: Path, state: Any, done: list[list[str]]) -> int:
    """Write the checkpoint atomically (a kill mid-write leaves the previous one); returns its bytes."""
    data = pickle.dumps({"version": VERSION, "state": state, "done": done}, protocol=pickle.HIGHEST_PROTOCOL)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def load(path: Path) -> tuple[Any, list[list[str]]]:
    """(state, done ids per input) of the checkpoint at `path`; ValueError if it is not one of ours."""
    try:
        obj = pickle.loads(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("version") != VERSION:
        raise ValueError("not a checkpoint of this version")
    return obj["state"], obj["done"]
