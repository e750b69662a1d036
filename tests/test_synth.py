"""Synthetic source: AU displacement fields, sample pairs, live video, clips written and read back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.cli import main as cli_main
from edge.data import aus, emotions, faces, synth
from edge.data.domains import DOMAINS, get_domain
from edge.errors import UserError

IDENT = np.array([[1.0, 0, 0], [0, 1.0, 0]])


@pytest.mark.parametrize("n", sorted(aus.AUS))
def test_au_field_peaks_at_its_amplitude_inside_its_region(n):
    xx, yy = aus.grid()
    for amp in (0.3, 2.5):
        d = aus.combo_field({n: amp}, xx, yy)
        mag = np.hypot(d[0], d[1])
        assert mag.max() == pytest.approx(amp, rel=1e-4)
        region = aus.region_mask(n)
        iy, ix = np.unravel_index(mag.argmax(), mag.shape)
        assert region[iy, ix], f"AU{n} peak at {(ix, iy)} outside {aus.AUS[n].regions}"
        assert (mag ** 2)[region].sum() > 0.6 * (mag ** 2).sum()
        assert mag[(yy < 4) | (xx < 4) | (xx > 124)].max() < 0.05 * amp  # local (the chin reaches the bottom)


def test_au_directions_follow_facs():
    xx, yy = aus.grid()

    def at_peak(n):
        d = aus.au_field(n, xx, yy)
        mag = np.hypot(*d)
        mag[:, 64:] = 0  # image-left half
        iy, ix = np.unravel_index(mag.argmax(), mag.shape)
        return d[:, iy, ix]

    assert at_peak(1)[1] < -0.9 and at_peak(2)[1] < -0.9      # brows raise (y up is negative)
    assert at_peak(4)[1] > 0.5 and at_peak(4)[0] > 0.3        # brows lower and draw together (to the midline)
    assert at_peak(12)[0] < -0.5 and at_peak(12)[1] < -0.3    # lip corner pulled out and up
    assert at_peak(15)[1] > 0.9 and at_peak(26)[1] > 0.9      # corner down, jaw drops


def _ramp_subject(axis: int) -> faces.Subject:
    side = 512
    ramp = np.indices((side, side), dtype=np.float32)[1 - axis]  # value = template x (axis 0) or y (axis 1)
    return faces.Subject("ramp", cv2.cvtColor(ramp, cv2.COLOR_GRAY2BGR), ramp, 2.0, 1.0, 0.0)


def test_inverse_warp_moves_skin_by_the_field_subpixel_exact():
    """On a linear ramp image, onset - apex = slope * d (bilinear is exact on a ramp): checks the sign convention
    (skin at x moves to x + d(x)) and that remap applies sub-pixel shifts without bias."""
    amps = {12: 0.7, 1: 0.4, 26: 1.3}
    xx, yy = aus.grid()
    d = synth.field_for(amps, xx, yy)
    for axis in (0, 1):
        subj = _ramp_subject(axis)
        on = synth._render_grey(subj, 1.0, 128, lambda x, y: None, IDENT)
        ap = synth._render_grey(subj, 1.0, 128, lambda x, y: synth.field_for(amps, x, y), IDENT)
        slope = float(np.median(np.diff(on, axis=1 - axis)))
        recovered = (on - ap)[8:-8, 8:-8] / slope
        # cv2.remap interpolates in fixed point: sub-pixel steps of 1/32 px, so errors <= 1/64 px, unbiased.
        err = recovered - d[axis][8:-8, 8:-8]
        assert np.abs(err).max() <= 1 / 64 + 1e-3 and abs(err.mean()) < 2e-3


def test_samples_shapes_labels_and_determinism():
    o1, a1, m1 = synth.make_samples(24, "lab200", seed=3, subjects=4)
    o2, a2, m2 = synth.make_samples(24, "lab200", seed=3, subjects=4)
    o3, _, _ = synth.make_samples(24, "lab200", seed=4, subjects=4)
    assert o1.shape == a1.shape == (24, 128, 128) and o1.dtype == np.uint8
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(a1, a2)
    assert m1 == m2 and not np.array_equal(o1, o3)
    assert {m["label"] for m in m1} <= set(emotions.COMPOSITE_CLASSES)
    assert len({m["subject"] for m in m1}) > 1
    for m in m1:
        assert emotions.COMPOSITE_CLASSES[m["label_index"]] == m["label"]
        pat = [p for p in emotions.PATTERNS if p.composite == m["label"] and list(p.aus) == m["aus"]]
        assert pat, m
        assert 0.1 < m["amplitude_px"] < 5.0 and m["domain"] == "lab200"


def test_samples_move_where_the_aus_are():
    """On the clean domain the onset->apex change lies in the AU regions of the sample's pattern."""
    onset, apex, meta = synth.make_samples(30, "lab200", seed=5, subjects=3, class_set="casme2")
    inside, outside = [], []
    for o, a, m in zip(onset, apex, meta, strict=True):
        if m["amplitude_px"] < 1.0:
            continue
        diff = np.abs(a.astype(np.float32) - o)
        region = np.zeros((128, 128), bool)
        for n in m["aus"]:
            region |= cv2.dilate(aus.region_mask(n).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        inside.append(diff[region].mean())
        outside.append(diff[~region].mean())
    assert len(inside) >= 5
    assert np.median(np.array(inside) / np.maximum(outside, 1e-3)) > 2.0


def test_webcam_domain_is_harder_than_lab():
    """The domain presets differ where it matters: noise and mis-alignment between onset and apex."""
    o_lab, a_lab, _ = synth.make_samples(12, "lab200", seed=1, subjects=3)
    o_web, a_web, _ = synth.make_samples(12, "webcam30", seed=1, subjects=3)
    assert get_domain("webcam30").fps == 30 and get_domain("lab200").fps == 200
    noise = [np.abs(a.astype(np.float32) - o)[:20].mean() for o, a in ((o_lab, a_lab), (o_web, a_web))]
    assert noise[1] > 2 * noise[0]


def _still(**kw):
    still = dict(noise_sigma=0.0, jpeg_quality=None, drift_px_s=0.0, jitter_px=0.0, illumination=0.0,
                 blinks_per_min=0.0, head_turns_per_min=0.0, blur_sigma=(0.0, 0.0))
    return synth.SyntheticVideo("lab200", seed=2, duration_s=1.0, fps=100, overrides=still, **kw)


def test_video_truth_matches_rendered_motion():
    v = _still(script=[{"t": 0.3, "kind": "micro", "label": "surprise", "amplitude_px": 2.0}])
    assert len(v) == v.n_frames == 100 and v.fps == 100
    (iv,) = v.truth
    assert iv["kind"] == "micro" and iv["label"] == "surprise" and iv["face"] == 0
    assert iv["onset"] == 30 and iv["offset"] - iv["onset"] <= 50 and iv["apex"] - iv["onset"] <= 26
    assert iv["amplitude_px"] == pytest.approx(2.0, rel=1e-3)
    frames = list(v)
    assert frames[0].shape == (480, 640, 3) and frames[0].dtype == np.uint8
    energy = np.array([np.abs(f.astype(np.int16) - frames[0]).sum() for f in frames])
    assert energy[: iv["onset"]].max() == 0 and energy[iv["offset"] + 1:].max() == 0
    assert abs(int(energy.argmax()) - iv["apex"]) <= 1


def test_frame_px_amplitude_is_what_the_camera_sees_at_any_face_size():
    """amplitude_frame_px is the apex in px of the video frame: a small face is upsampled into the 128-px
    crop, so the same camera px is more crop px there (the true crop -> frame scale of the render)."""
    entry = {"t": 0.3, "kind": "micro", "label": "surprise", "amplitude_frame_px": 0.5}
    crop_px = []
    for iod in (32.0, 64.0):
        still = dict(noise_sigma=0.0, jpeg_quality=None, drift_px_s=0.0, jitter_px=0.0, iod_px=(iod, iod))
        v = synth.SyntheticVideo("lab200", seed=2, duration_s=1.0, fps=100, overrides=still, script=[entry])
        (iv,) = v.truth
        frame_per_crop = float(np.sqrt(abs(np.linalg.det(v.face_transform(0, iv["apex"])[:, :2]))))
        assert iv["amplitude_frame_px"] == pytest.approx(0.5, rel=1e-3)
        assert iv["amplitude_px"] * frame_per_crop == pytest.approx(0.5, rel=0.05)
        crop_px.append(iv["amplitude_px"])
    assert crop_px[0] == pytest.approx(2 * crop_px[1], rel=0.05)
    with pytest.raises(UserError, match="not both"):
        synth.SyntheticVideo("lab200", seed=2, duration_s=1.0, script=[dict(entry, amplitude_px=1.0)])


def test_sensor_noise_is_fresh_every_frame_not_a_moved_copy():
    """Sensor noise is independent between exposures: frame k + 3 (the flow lag) must not carry frame k's
    noise pattern at any shift within 16 px, which a flow would follow as coherent texture motion."""
    bare = dict(jpeg_quality=None, drift_px_s=0.0, jitter_px=0.0, illumination=0.0, gamma=(1.0, 1.0))
    noisy = synth.SyntheticVideo("lab200", seed=4, duration_s=0.1, fps=100, overrides=dict(bare, noise_sigma=3.0))
    clean = synth.SyntheticVideo("lab200", seed=4, duration_s=0.1, fps=100, overrides=dict(bare, noise_sigma=0.0))
    assert np.array_equal(noisy.frame(5), noisy.frame(5))  # deterministic in (seed, k)
    n0, n3 = ((noisy.frame(k).astype(np.float64) - clean.frame(k))[16:-16, 16:-16, 1] for k in (2, 5))
    assert n0.std() == pytest.approx(3.0, rel=0.05) and n3.std() == pytest.approx(3.0, rel=0.05)
    # Normalised cross-correlation over all shifts (circular, by FFT): ~4 / sqrt(N) = 0.008 for independent
    # noise, ~1 at the shift where one frame's noise is the other's moved.
    a, b = (x - x.mean() for x in (n0, n3))
    xc = np.fft.irfft2(np.fft.rfft2(a) * np.conj(np.fft.rfft2(b)), a.shape) / (a.size * a.std() * b.std())
    near = np.roll(xc, (16, 16), (0, 1))[:33, :33]  # shifts -16..16 px in y and x
    assert np.abs(near).max() < 0.03, np.abs(near).max()


def test_video_script_kinds_and_errors():
    script = [{"t": 0.1, "kind": "blink"}, {"t": 0.3, "kind": "head"},
              {"t": 0.2, "kind": "macro", "label": "positive", "face": 1, "duration_s": 0.6},
              {"t": 0.1, "kind": "micro", "aus": [9, 10], "face": 1}]
    v = synth.SyntheticVideo("webcam30", seed=0, duration_s=1.0, faces=2, script=script)
    kinds = sorted((t["kind"], t["face"]) for t in v.truth)
    assert kinds == [("blink", 0), ("head", 0), ("macro", 1), ("micro", 1)]
    micro = next(t for t in v.truth if t["kind"] == "micro")
    assert micro["emotion"] == "disgust" and micro["label"] == "negative"
    assert next(v.__iter__()).shape == (480, 640, 3)
    for bad in ([{"t": 1, "kind": "sneeze"}], [{"t": 1, "kind": "micro", "colour": 1}],
                [{"kind": "micro"}], [{"t": 1, "kind": "micro", "label": "boredom"}],
                [{"t": 1, "kind": "blink", "face": 3}]):
        with pytest.raises(UserError):
            synth.SyntheticVideo("webcam30", duration_s=1.0, script=bad)
    with pytest.raises(UserError):
        synth.SyntheticVideo("nowhere")


def test_random_events_respect_durations():
    v = synth.SyntheticVideo("webcam30", seed=1, duration_s=20.0)
    kinds = {t["kind"] for t in v.truth}
    assert "micro" in kinds
    for t in v.truth:
        dur = t["t_offset"] - t["t_onset"]
        if t["kind"] == "micro":
            assert dur <= 0.5 + 1e-9 and t["t_apex"] - t["t_onset"] <= 0.26 + 1e-9
        if t["kind"] == "macro":
            assert 0.5 - 1e-9 <= dur <= 4.0 + 1e-9
        assert 0 <= t["onset"] <= t["apex"] <= t["offset"] < v.n_frames


def test_clip_written_reads_back_with_opencv(tmp_path):
    v = _still(script=[{"t": 0.2, "kind": "micro", "label": "positive", "amplitude_px": 2.5}])
    doc = synth.write_clip(v, tmp_path / "c.avi")
    truth = json.loads((tmp_path / "c.json").read_text())
    assert truth == json.loads(json.dumps(doc)) and truth["n_frames"] == 100
    cap = cv2.VideoCapture(str(tmp_path / "c.avi"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == truth["n_frames"] and frames[0].shape == (480, 640, 3)
    iv = truth["intervals"][0]
    assert np.abs(frames[50].astype(np.int16) - v.frame(50)).mean() < 5  # the codec's loss only
    # FFmpeg's MJPG encoder codes the first frame at another quality, so compare with frame 1.
    energy = np.array([np.abs(f.astype(np.int16) - frames[1]).mean() for f in frames])
    assert energy[1: iv["onset"]].max() < 0.05 and energy[iv["offset"] + 1:].max() < 0.05
    assert abs(1 + int(energy[1:].argmax()) - iv["apex"]) <= 1 and energy[1:].max() > 0.1


def test_user_photo_folder(tmp_path):
    from skimage import data

    cv2.imwrite(str(tmp_path / "me.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not a photo")
    tpl = faces.folder_faces(tmp_path)
    assert [t.name for t in tpl] == ["me"]
    ref = faces.builtin_faces()[0].image.astype(np.float32)
    assert np.abs(tpl[0].image.astype(np.float32) - ref).mean() < 10  # same canonical layout
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no frontal face"):
        faces.folder_faces(empty)
    with pytest.raises(UserError):
        faces.folder_faces(tmp_path / "missing")


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert cli_main(["synth", "samples", "--out", str(out), "--n", "6", "--preset", "hs100"]) == 0
    onset, apex, meta = synth.load_samples(out)
    assert onset.shape == (6, 128, 128) and len(meta) == 6 and meta[0]["domain"] == "hs100"
    assert cli_main(["synth", "clips", "--out", str(tmp_path / "clips"), "--n", "1", "--duration", "0.5",
                     "--size", "320x240"]) == 0
    assert (tmp_path / "clips" / "webcam30_0000.avi").stat().st_size > 0
    assert cli_main(["synth", "samples", "--out", str(tmp_path / "s.txt"), "--n", "2"]) == 2
    assert cli_main(["synth", "clips", "--out", str(tmp_path), "--size", "big"]) == 2
    assert "error" in capsys.readouterr().err


def test_presets_exist():
    assert {"lab200", "webcam30"} <= set(DOMAINS)
    for d in DOMAINS.values():
        assert 30 <= d.fps <= 200


def test_an_unwritable_output_folder_is_one_error_line_not_a_crash(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli_main(["synth", "clips", "--out", str(blocker / "clips"), "--n", "1", "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("facesleuth synth: error: ") and "internal error" not in err[0], err
