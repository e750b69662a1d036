"""edge.perception.flow: every available backend on a real face photograph warped by known fields."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.bench import flowfields as FF
from edge.errors import Unavailable, UserError
from edge.perception import flow as F


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return FF.face_crop(128)


def _backend(name: str) -> F.FlowBackend:
    try:
        flow = F.create_flow(name)
        flow.calc(np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8))
    except Unavailable as e:
        pytest.skip(str(e))
    return flow


# (field, EPE bound as a fraction of the field's mean magnitude in its region). Any bound < 1 fails an
# estimate no better than "no motion"; test_bounds_reject_classic_bugs shows that a wrong sign, swapped
# u/v or a scale error fails it too.
FIELDS = [("shift", 0.35), ("rotation", 0.5), ("brow_raise", 0.5), ("lip_corner_pull", 0.6)]
# Farneback's small window smears local motion; nvof's grid is coarse: both keep the same discrimination.
LOOSER = {"farneback": 0.1, "cuda_farneback": 0.1, "nvof": 0.15, "vpi": 0.15}


@pytest.mark.parametrize("name", F.BACKENDS)
@pytest.mark.parametrize("field,frac", FIELDS)
def test_known_warp(face, name, field, frac):
    flow = _backend(name)
    truth = FF.known_field(field, 128)
    mask = FF.region_mask(field, 128)
    est = flow.calc(face, FF.warp_by_flow(face, truth))
    assert est.shape == (128, 128, 2) and est.dtype == np.float32
    scale = float(np.hypot(truth[..., 0], truth[..., 1])[mask].mean())
    bound = (frac + LOOSER.get(name, 0.0)) * scale
    epe = FF.end_point_error(est, truth, mask)
    assert epe < bound, f"{name} {field}: EPE {epe:.3f} px >= {bound:.3f} px"
    assert 0.6 < FF.motion_gain(est, truth, mask) < 1.4
    assert FF.end_point_error(-est, truth, mask) > bound  # the estimate's sign is right


@pytest.mark.parametrize("field,frac", FIELDS)
def test_bounds_reject_classic_bugs(field, frac):
    """A backend with a wrong sign, swapped u/v, a 2x scale error or no output fails the bounds above."""
    truth = FF.known_field(field, 128)
    mask = FF.region_mask(field, 128)
    scale = float(np.hypot(truth[..., 0], truth[..., 1])[mask].mean())
    bound = (frac + max(LOOSER.values())) * scale
    for bug, wrong in {"sign": -truth, "swap": truth[..., ::-1], "scale x2": 2 * truth,
                       "scale /32": truth / 32, "zero": 0 * truth}.items():
        assert FF.end_point_error(wrong, truth, mask) > bound, f"{bug} would pass for {field}"


def test_default_cpu_backend_sub_pixel_under_noise(face):
    """The brow-raise targets of the issue (EPE <= 0.15 clean, <= 0.25 sigma=2) for the CPU default."""
    flow = F.create_flow("dis")
    truth = FF.known_field("brow_raise")
    mask = FF.region_mask("brow_raise")
    nxt = FF.warp_by_flow(face, truth)
    assert FF.end_point_error(flow.calc(face, nxt), truth, mask) <= 0.15
    rng = np.random.default_rng(1)
    noisy = [FF.end_point_error(flow.calc(FF.add_noise(face, 2, rng), FF.add_noise(nxt, 2, rng)), truth, mask)
             for _ in range(3)]
    assert np.mean(noisy) <= 0.25
    # And the reason for the non-preset default: DIS's MEDIUM preset sees far less of a lip-corner pull.
    preset = F.create_flow("dis", finest_scale=1, patch_stride=3, gd_iterations=25, var_iterations=5)
    lip = FF.known_field("lip_corner_pull")
    lip_next, lmask = FF.warp_by_flow(face, lip), FF.region_mask("lip_corner_pull")
    assert FF.motion_gain(flow.calc(face, lip_next), lip, lmask) > \
        FF.motion_gain(preset.calc(face, lip_next), lip, lmask) + 0.2


def test_warp_by_flow_translation_matches_affine(face):
    truth = FF.known_field("shift")  # (0.6, -0.4) px
    out = FF.warp_by_flow(face, truth).astype(np.float32)
    m = np.float32([[1, 0, 0.6], [0, 1, -0.4]])
    ref = cv2.warpAffine(face, m, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    assert np.abs(out - ref)[8:-8, 8:-8].max() <= 1.0  # rounding of two uint8 bilinear samplings


def test_warp_by_flow_truth_is_on_prev_grid():
    """next(p + f(p)) == prev(p): the known field is the flow on prev's grid (forward convention)."""
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    prev = (xs * 3 + ys * 2).astype(np.float32)  # linear ramp: bilinear sampling is exact
    f = FF.gaussian_bump(64, (32, 32), (6, 6), (0.0, -2.0))
    nxt = FF.warp_by_flow(prev, f, iterations=10)
    back = cv2.remap(nxt, xs + f[..., 0], ys + f[..., 1], cv2.INTER_LINEAR)
    # remap's fixed-point weights (1/32 px) on a ramp of slope 3.6 bound the error at ~0.1 grey levels;
    # the naive backward warp prev(x - f(x)) is off by ~0.6 here.
    assert np.abs(back - prev)[8:-8, 8:-8].max() < 0.15


def test_optical_strain():
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    shift = np.stack([np.full_like(xs, 0.7), np.full_like(xs, -0.3)], -1)
    assert np.abs(F.optical_strain(shift)).max() < 1e-6  # rigid translation: no strain
    stretch = np.stack([0.1 * xs, np.zeros_like(xs)], -1)  # u = 0.1 x: u_x = 0.1, nothing else
    np.testing.assert_allclose(F.optical_strain(stretch), 0.1, atol=1e-6)
    shear = np.stack([0.2 * ys, np.zeros_like(xs)], -1)  # u_y = 0.2 -> sqrt(1/2 * 0.2^2)
    np.testing.assert_allclose(F.optical_strain(shear), np.sqrt(0.5) * 0.2, atol=1e-6)
    rot = FF.known_field("rotation", 32)  # small rotation: antisymmetric, ~no strain
    assert F.optical_strain(rot).max() < 1e-3
    with pytest.raises(UserError):
        F.optical_strain(np.zeros((4, 4)))


def test_nvof_to_px_converts_s10_5_and_upsamples():
    raw = np.zeros((8, 8, 2), np.int16)
    raw[..., 0], raw[..., 1] = 32, -48  # 1 px right, 1.5 px up
    out = F.nvof_to_px(raw, (32, 32))
    assert out.shape == (32, 32, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], 1.0)
    np.testing.assert_allclose(out[..., 1], -1.5)


def test_resize_flow_rescales_vectors():
    f = np.zeros((64, 64, 2), np.float32)
    f[..., 0], f[..., 1] = 2.0, -1.0
    small = F.resize_flow(f, 32)
    assert small.shape == (32, 32, 2)
    np.testing.assert_allclose(small[..., 0], 1.0)
    np.testing.assert_allclose(small[..., 1], -0.5)


def test_create_flow_errors_and_auto():
    with pytest.raises(UserError, match="unknown flow backend"):
        F.create_flow("nope")
    with pytest.raises(UserError, match="unknown parameter"):
        F.create_flow("dis", windw=3)
    auto = F.create_flow("auto")
    assert auto.name in F.AUTO_ORDER
    if not F.has_cuda_opencv():
        assert auto.name == "farneback"
        for name in ("nvof", "cuda_tvl1", "cuda_farneback"):
            with pytest.raises(Unavailable, match=f"^{name}: .*no CUDA.*; on a CPU use auto \\(farneback\\)$"):
                F.create_flow(name)
    avail = F.available_backends()
    assert avail["dis"] == "yes" and set(avail) == set(F.BACKENDS)


def test_bad_images_rejected():
    flow = F.create_flow("dis")
    with pytest.raises(UserError, match="uint8 grey"):
        flow.calc(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="shapes differ"):
        flow.calc(np.zeros((8, 8), np.uint8), np.zeros((9, 8), np.uint8))


def test_lag_buffer():
    buf = F.LagBuffer(2)
    a, b, c, d = (np.full((2, 2), i, np.uint8) for i in range(4))
    assert buf.push(7, 10, a) is None  # first frame of a track: nothing to compare with
    assert buf.push(7, 11, b)[0] == 10  # younger than lag: oldest
    ref = buf.push(7, 12, c)
    assert ref[0] == 10 and ref[1] is a
    assert buf.push(7, 14, d)[0] == 11  # a dropped frame (13): the true index of the reference
    assert buf.push(8, 14, d) is None  # tracks are independent
    buf.end(7)
    assert buf.tracks() == [8]
    with pytest.raises(UserError):
        F.LagBuffer(0)
