"""Preprocessing: model inputs from onset/apex crops, the same on the training path (parallel, cached)
and the live per-sample path, and the spec carried by the model file."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bench.flowfields import face_crop, known_field, warp_by_flow
from edge.data.preprocess import FeatureCache, PreprocessSpec, input_key, model_input, precompute
from edge.errors import UserError
from edge.perception.geometry import roi_boxes


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return face_crop(128)


@pytest.fixture(scope="module")
def pairs(face) -> tuple[np.ndarray, np.ndarray]:
    """Six real-photo pairs moved by known fields (brow raise / lip-corner pull, several amplitudes)."""
    rng = np.random.default_rng(0)
    on, ap = [], []
    for kind in ("brow_raise", "lip_corner_pull"):
        for amp in (0.5, 1.0, 2.0):
            noisy = np.clip(face + rng.normal(0, 1.0, face.shape), 0, 255).astype(np.uint8)
            on.append(noisy)
            ap.append(warp_by_flow(noisy, known_field(kind, 128, amp)))
    return np.stack(on), np.stack(ap)


def test_shape_channels_and_motion_sign(face):
    spec = PreprocessSpec(size=64, channels=("u", "v", "strain", "apex"))
    x = model_input(face, warp_by_flow(face, known_field("brow_raise", 128, 1.5)), spec)
    assert x.shape == (4, 64, 64) and x.dtype == np.float32
    u, v, strain = x[0], x[1], x[2]
    brows = roi_boxes(64)
    x0, y0, x1, y1 = brows["brow_left"]
    bx0, by0, bx1, by1 = roi_boxes(64)["chin"]
    # A brow raise is upward motion (negative v, image y down) in the brows and none at the chin.
    assert v[y0:y1, x0:x1].mean() < -0.3
    assert abs(v[by0:by1, bx0:bx1].mean()) < 0.1
    assert abs(u[y0:y1, x0:x1].mean()) < 0.5 * abs(v[y0:y1, x0:x1].mean())
    assert strain[y0:y1, x0:x1].mean() > 2 * strain[by0:by1, bx0:bx1].mean()
    assert -1.0 <= x[3].min() and x[3].max() <= 1.0  # apex appearance channel


def test_resize_rescales_vectors_and_median_removes_rigid_shift(face):
    shift = np.zeros((128, 128, 2), np.float32)
    shift[..., 0] = 1.0  # 1 px right at 128 px
    moved = warp_by_flow(face, shift)
    raw = PreprocessSpec(size=64, global_motion="none", norm="fixed", floor_px=0.1)  # fixed: u / 1.0
    u = model_input(face, moved, raw)[0]
    inner = u[8:-8, 8:-8]
    assert np.median(inner) == pytest.approx(0.5, abs=0.08)  # 1 px at 128 is 0.5 px at 64
    stab = PreprocessSpec(size=64, global_motion="median", norm="fixed", floor_px=0.1)
    assert abs(np.median(model_input(face, moved, stab)[0][8:-8, 8:-8])) < 0.05


def test_robust_norm_is_amplitude_invariant_but_floors_stillness(face):
    spec = PreprocessSpec(size=64)
    small = model_input(face, warp_by_flow(face, known_field("lip_corner_pull", 128, 1.0)), spec)
    large = model_input(face, warp_by_flow(face, known_field("lip_corner_pull", 128, 2.0)), spec)
    corr = np.corrcoef(small[:2].ravel(), large[:2].ravel())[0, 1]
    assert corr > 0.9
    # Twice the motion, (nearly) the same input: the pattern counts, not the amplitude.
    x0, y0, x1, y1 = roi_boxes(64)["mouth_left"]
    assert np.abs(large[:2, y0:y1, x0:x1]).mean() == pytest.approx(np.abs(small[:2, y0:y1, x0:x1]).mean(), rel=0.25)
    still = model_input(face, face.copy(), spec)
    assert np.abs(still[:2]).max() < 0.5  # no motion stays small instead of being blown up to 1


def test_training_path_equals_live_path(pairs, tmp_path):
    onsets, apexes = pairs
    spec = PreprocessSpec(size=32).resolved()
    live = np.stack([model_input(o, a, spec) for o, a in zip(onsets, apexes, strict=True)])
    par = precompute(onsets, apexes, spec, cache_dir=tmp_path, workers=2, chunk=2, progress=False)
    np.testing.assert_array_equal(par, live)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == len(onsets)
    again = precompute(onsets, apexes, spec, cache_dir=tmp_path, workers=0, progress=False)
    np.testing.assert_array_equal(again, live)
    # The cache is keyed by the parameters too: another spec gets other entries.
    other = PreprocessSpec(size=32, norm="minmax").resolved()
    assert input_key(onsets[0], apexes[0], other) != input_key(onsets[0], apexes[0], spec)
    FeatureCache(tmp_path).path(input_key(onsets[0], apexes[0], spec)).write_bytes(b"garbage")
    np.testing.assert_array_equal(precompute(onsets, apexes, spec, cache_dir=tmp_path, workers=0,
                                             progress=False), live)  # a broken entry is recomputed


def test_spec_travels_in_the_model_file(pairs, tmp_path):
    from edge.model import create_model
    from edge.model.file import load_model, save_model

    spec = PreprocessSpec(backend="farneback", size=32, norm="minmax").resolved()
    save_model(create_model("soa", img_size=32), tmp_path / "m.pt", meta=spec.to_meta())
    _, info = load_model(tmp_path / "m.pt")
    back = PreprocessSpec.from_meta(info["meta"])
    assert back == spec and back.flow_params["winsize"] == 15  # resolved defaults are recorded
    o, a = pairs[0][1], pairs[1][1]
    np.testing.assert_array_equal(model_input(o, a, info["meta"]), model_input(o, a, spec))


def test_bad_input_is_one_clear_error(face):
    spec = PreprocessSpec()
    with pytest.raises(UserError, match="uint8 grey"):
        model_input(face.astype(np.float32), face, spec)
    with pytest.raises(UserError, match="uint8 grey"):
        model_input(np.dstack([face] * 3), face, spec)
    with pytest.raises(UserError, match="differ in size"):
        model_input(face, face[:100, :100].copy(), spec)
    with pytest.raises(UserError, match="channel"):
        PreprocessSpec(channels=("u", "depth"))
    with pytest.raises(UserError, match="auto"):
        PreprocessSpec(backend="auto")
    with pytest.raises(UserError, match="unknown flow backend"):
        PreprocessSpec(backend="magic").resolved()
    with pytest.raises(UserError, match="preprocessing"):
        PreprocessSpec.from_meta({"classes": ["a", "b"]})
