"""The synthetic benchmark: batch-dict convention, exact geometry, label consistency, domains, cache."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mtl_core.data import synthetic
from mtl_core.data.geometry import backproject, normals_from_depth
from mtl_core.data.scenes import OBJECT_CLASSES, SCENE_CLASSES
from mtl_core.data.synthetic import RenderSpec, SyntheticScenes, render_sample


def angle_deg(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1, 1)))


# ---------------------------------------------------------------- the batch-dict convention


@pytest.mark.parametrize("domain", ["render", "sensor"])
def test_items_follow_the_batch_dict_convention(tmp_path, domain):
    ds = SyntheticScenes("train", 6, size=(64, 96), domain=domain, root=tmp_path, workers=1)
    assert len(ds.classes) >= 3 + 8 and ds.classes[:3] == ("floor", "wall", "ceiling")
    assert len(ds.det_classes) >= 8 and len(ds.scene_classes) >= 5
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 64, 96) and s["image"].dtype == torch.float32
        assert 0 <= s["image"].min() and s["image"].max() <= 1
        assert s["semseg"].shape == (64, 96) and s["semseg"].dtype == torch.int64
        assert int(s["semseg"].max()) < len(ds.classes)
        assert s["depth"].shape == (1, 64, 96) and (s["depth"] >= 0).all()
        assert s["normals"].shape == (3, 64, 96)
        norm = s["normals"].norm(dim=0)
        assert torch.allclose(norm[norm > 0], torch.ones(1), atol=1e-3)  # unit or all-zero (missing)
        for key in ("edge", "sal"):
            assert set(s[key].unique().tolist()) <= {0.0, 1.0}
        assert s["scene"].dtype == torch.int64 and -1 <= int(s["scene"]) < len(ds.scene_classes)
        assert s["boxes"].shape[1] == 4 and len(s["boxes"]) == len(s["labels"])
        assert (s["labels"] >= 0).all() and (s["labels"] < len(ds.det_classes)).all()
        assert torch.allclose(s["intrinsics"][2:], torch.tensor([48.0, 32.0]))


def test_render_domain_is_fully_annotated(tmp_path):
    ds = SyntheticScenes("val", 8, size=(64, 64), root=tmp_path, workers=1)
    for i in range(len(ds)):
        s = ds[i]
        assert (s["depth"] > 0).all() and (s["normals"].norm(dim=0) > 0.99).all() and s["scene"] >= 0


def test_nyu_aspect_and_intrinsics():
    s = render_sample(0, RenderSpec(size=(96, 128)))
    assert s["image"].shape == (96, 128, 3)
    fx, fy, cx, cy = s["intrinsics"]
    assert fx == fy and (cx, cy) == (64, 48)
    assert 2 * np.degrees(np.arctan(64 / fx)) == pytest.approx(63.3, abs=0.5)  # NYUv2 Kinect field of view


@pytest.mark.parametrize("kwargs, name", [
    ({"size": (60, 64)}, "size"), ({"size": (64, 0)}, "size"), ({"size": "big"}, "size"),
    ({"split": "training"}, "split"), ({"domain": "real"}, "domain"), ({"num_samples": 0}, "num_samples"),
    ({"missing_fraction": 0.2}, "missing_fraction"),
    ({"domain": "sensor", "missing_fraction": 1.5}, "missing_fraction"),
])
def test_bad_arguments_fail_early_naming_the_parameter(tmp_path, kwargs, name):
    args = {"split": "train", "num_samples": 4, "size": (64, 64), **kwargs}
    with pytest.raises(ValueError, match=name):
        SyntheticScenes(root=tmp_path, **args)
    assert not any(tmp_path.iterdir()), "nothing may be generated before validation"


# ---------------------------------------------------------------- determinism


def test_deterministic_given_seed_and_index():
    spec = RenderSpec(size=(64, 64), domain="sensor", missing_fraction=0.5)
    a, b = render_sample(3, spec), render_sample(3, spec)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other = render_sample(4, spec)
    assert not np.array_equal(a["image"], other["image"])
    reseeded = render_sample(3, RenderSpec(size=(64, 64), domain="sensor", missing_fraction=0.5, seed=1))
    assert not np.array_equal(a["image"], reseeded["image"])
    val = render_sample(3, RenderSpec(size=(64, 64), split="val", domain="sensor", missing_fraction=0.5))
    assert not np.array_equal(a["image"], val["image"])


def test_parallel_generation_equals_serial(tmp_path):
    serial = SyntheticScenes("train", 20, root=tmp_path / "a", workers=1)
    parallel = SyntheticScenes("train", 20, root=tmp_path / "b", workers=2)
    for i in range(20):
        for key, value in serial.raw(i).items():
            np.testing.assert_array_equal(value, parallel.raw(i)[key], err_msg=key)


# ---------------------------------------------------------------- geometry


def test_normals_are_unit_and_face_the_camera(render_samples):
    for s in render_samples:
        h, w = s["depth"].shape
        n = s["normals"].astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1, atol=2e-3)
        rays = backproject(np.ones((h, w)), s["intrinsics"])  # camera-frame ray of every pixel
        assert ((n * rays).sum(-1) < 0).all()


def test_normals_are_the_orientation_of_the_depth_surface(render_samples):
    """Normals computed from the rendered depth by back-projection agree with the rendered normals."""
    for s in render_samples:
        estimate = normals_from_depth(s["depth"], s["intrinsics"])
        valid = np.linalg.norm(estimate, axis=-1) > 0
        assert valid.mean() > 0.6
        err = angle_deg(estimate[valid], s["normals"][valid].astype(np.float64))
        assert np.median(err) < 0.5 and np.mean(err < 5) > 0.9, (np.median(err), np.mean(err < 5))


def test_floor_pixels_back_project_onto_one_plane(render_samples):
    for s in render_samples:
        floor = s["semseg"] == 0
        if floor.sum() < 50:
            continue
        points = backproject(s["depth"], s["intrinsics"])[floor]
        centre = points.mean(0)
        _, sv, vt = np.linalg.svd(points - centre, full_matrices=False)
        normal = vt[-1] * -np.sign(vt[-1] @ centre)
        assert sv[-1] / np.sqrt(len(points)) < 1e-3  # RMS distance to the fitted plane, metres
        assert np.median(angle_deg(s["normals"][floor].astype(np.float64), normal)) < 0.5


# ---------------------------------------------------------------- labels


def test_boxes_are_tight_around_visible_instances(render_samples):
    min_pixels = RenderSpec().min_box_pixels
    for s in render_samples:
        inst, sem = s["instance"], s["semseg"]
        boxes = {tuple(b) for b in s["boxes"].tolist()}
        expected = set()
        for k in np.unique(inst[inst > 0]):
            ys, xs = np.nonzero(inst == k)
            cls = np.unique(sem[inst == k])
            assert len(cls) == 1 and cls[0] >= 3  # one instance, one object class
            if len(ys) >= min_pixels:
                expected.add((xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0))
        assert boxes == expected
        for box, label in zip(s["boxes"], s["labels"], strict=True):
            x0, y0, x1, y1 = box.astype(int)
            assert (sem[y0:y1, x0:x1] == label + 3).any()


def test_edges_saliency_and_segments_agree(render_samples):
    for s in render_samples:
        assert np.array_equal(s["sal"], (s["semseg"] >= 3).astype(np.uint8))
        assert np.array_equal(s["sal"], (s["instance"] > 0).astype(np.uint8))
        label = s["semseg"].astype(np.int64) * 256 + s["instance"]
        edge = s["edge"].astype(bool)
        # every semantic or instance boundary between neighbours is marked on one side of it
        for a, b, ea, eb in [(label[:, :-1], label[:, 1:], edge[:, :-1], edge[:, 1:]),
                             (label[:-1], label[1:], edge[:-1], edge[1:])]:
            assert (ea | eb)[a != b].all()
        assert edge.mean() < 0.2  # thin


def test_room_type_is_inferable_from_the_objects():
    """The room type is a latent: object-class presence predicts it far above chance (1/6)."""
    samples = [render_sample(i, RenderSpec(size=(64, 64), shadows=False)) for i in range(180)]
    x = np.array([np.bincount(s["labels"], minlength=len(OBJECT_CLASSES)) > 0 for s in samples], float)
    y = np.array([int(s["scene"]) for s in samples])
    assert set(y) == set(range(len(SCENE_CLASSES)))
    train, test = slice(0, 120), slice(120, None)
    p = np.array([(x[train][y[train] == c].sum(0) + 1) / ((y[train] == c).sum() + 2)
                  for c in range(len(SCENE_CLASSES))])
    log_lik = x[test] @ np.log(p).T + (1 - x[test]) @ np.log(1 - p).T  # naive Bayes
    assert (log_lik.argmax(1) == y[test]).mean() > 0.6


def test_object_classes_are_not_told_apart_by_colour():
    feats, cls = [], []
    for i in range(150):
        s = render_sample(i, RenderSpec(size=(64, 64), shadows=False))
        for k in np.unique(s["instance"][s["instance"] > 0]):
            mask = s["instance"] == k
            if mask.sum() >= 16:
                feats.append(s["image"][mask].mean(0))
                cls.append(int(s["semseg"][mask][0]))
    feats, cls = np.array(feats), np.array(cls)
    assert len(np.unique(cls)) >= 8
    half = len(cls) // 2
    classes = np.unique(cls[:half])
    centroids = np.array([feats[:half][cls[:half] == c].mean(0) for c in classes])
    predicted = classes[((feats[half:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    majority = np.bincount(cls[half:]).max() / len(cls[half:])
    assert (predicted == cls[half:]).mean() < majority  # mean colour does no better than guessing


# ---------------------------------------------------------------- sensor domain


def test_sensor_domain_is_a_kinect_view_of_the_same_room():
    for i in range(4):
        clean = render_sample(i, RenderSpec(size=(96, 128)))
        real = render_sample(i, RenderSpec(size=(96, 128), domain="sensor", missing_fraction=0.0))
        np.testing.assert_array_equal(clean["semseg"], real["semseg"])  # same room and camera
        np.testing.assert_array_equal(clean["boxes"], real["boxes"])
        assert np.abs(clean["image"].astype(int) - real["image"].astype(int)).mean() > 3
        holes = real["depth"] == 0
        assert holes.any() and holes.mean() < 0.5
        assert holes[(clean["depth"] > 5.5) | (clean["depth"] < 0.5)].all()  # outside the sensor's range
        rays = backproject(np.ones(holes.shape), clean["intrinsics"])
        grazing = np.abs((clean["normals"] * rays).sum(-1)) / np.linalg.norm(rays, axis=-1)
        assert holes[grazing < np.cos(np.radians(82))].all()  # surfaces seen edge-on
        valid = ~holes
        rel = np.abs(real["depth"][valid] - clean["depth"][valid]) / clean["depth"][valid]
        assert 0 < np.median(rel) < 0.01  # noisy, but close
        normals = real["normals"].astype(float)
        has_normal = np.linalg.norm(normals, axis=-1) > 0
        assert not has_normal[holes].any()  # normals come from the holed depth
        err = angle_deg(normals[has_normal], clean["normals"][has_normal].astype(float))
        assert np.median(err) < 10


def test_missing_annotations_are_marked_not_dropped(tmp_path):
    ds = SyntheticScenes("train", 60, domain="sensor", missing_fraction=0.5, root=tmp_path, workers=2)
    scene_missing = depth_missing = normals_missing = 0
    for i in range(len(ds)):
        s = ds[i]
        assert {"depth", "normals", "scene"} <= set(s)
        scene_missing += int(s["scene"]) == -1
        depth_missing += bool((s["depth"] == 0).all())
        normals_missing += bool((s["normals"] == 0).all())
    for count in (scene_missing, depth_missing, normals_missing):
        assert 15 <= count <= 45  # ~ Binomial(60, 0.5)
    complete = SyntheticScenes("train", 20, domain="sensor", missing_fraction=0.0, root=tmp_path, workers=2)
    assert all(int(complete[i]["scene"]) >= 0 and (complete[i]["depth"] > 0).any() for i in range(20))


# ---------------------------------------------------------------- cache


def test_cache_is_reused_verified_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    calls = []
    original = synthetic.render_sample
    monkeypatch.setattr(synthetic, "render_sample", lambda i, spec: calls.append(i) or original(i, spec))
    first = SyntheticScenes("train", 5, root=tmp_path, workers=1)
    assert sorted(calls) == list(range(5))
    reference = [first.raw(i)["image"].copy() for i in range(5)]

    calls.clear()
    SyntheticScenes("train", 5, root=tmp_path, workers=1)
    assert calls == []  # served from the cache

    image_file = first.cache_dir / "image.npy"
    data = bytearray(image_file.read_bytes())
    data[-100:] = bytes(100)  # corrupt the last rows
    image_file.write_bytes(bytes(data))
    synthetic.build_or_load.__globals__["_VERIFIED"].clear()  # as in a new process
    with pytest.warns(UserWarning, match="checksum mismatch"):
        again = SyntheticScenes("train", 5, root=tmp_path, workers=1)
    assert sorted(calls) == list(range(5))
    for i in range(5):
        np.testing.assert_array_equal(again.raw(i)["image"], reference[i])

    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    stale = SyntheticScenes("train", 5, root=tmp_path, workers=1)
    assert stale.cache_dir != first.cache_dir  # a new generator version never reads old data


def test_killed_generation_leaves_no_cache_and_is_redone(tmp_path):
    code = ("from mtl_core.data.synthetic import SyntheticScenes;"
            f"SyntheticScenes('train', 2000, root={str(tmp_path)!r}, workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".tmp-*/image.npy")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".tmp-*")), "the build should have been in progress"
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    small = SyntheticScenes("train", 3, root=tmp_path, workers=1)
    assert len(small) == 3 and (small.cache_dir / "meta.json").exists()
