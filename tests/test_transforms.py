"""Tests for mtl_core.data.transforms and mtl_core.data.collate on a synthetic, analytic sample."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from mtl_core.data.collate import collate_batch
from mtl_core.data.transforms import (
    BatchAugment,
    Compose,
    PhotometricJitter,
    RandomHorizontalFlip,
    RandomScaleCrop,
    augment_seed,
    train_transforms,
)

H, W = 32, 64
FX = FY = 40.0
CX, CY = W / 2 + 3.7, H / 2 - 2.3  # off-centre, so that mirroring cx is observable
PLANE_N = torch.tensor([0.2, -0.4, -0.9], dtype=torch.float64)
PLANE_N = PLANE_N / PLANE_N.norm()  # faces the camera (negative z)
PLANE_D = -3.0
INSTANCE_CLASSES = [3, 3, 5]  # instances 1 and 2 share a class
RECTANGULAR = [True, True, False]  # instance 3 is a disk


def tight_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def make_sample(seed: int = 0, with_boxes: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    instance = torch.zeros(H, W, dtype=torch.int64)
    instance[4:14, 1:6] = 1  # thin rectangle at the left border: often leaves the crop
    instance[18:30, 20:40] = 2
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    instance[(v - 12) ** 2 + (u - 50) ** 2 <= 49] = 3  # disk near the right border

    semseg = torch.zeros(H, W, dtype=torch.int64)
    for k, cls in enumerate(INSTANCE_CLASSES, start=1):
        semseg[instance == k] = cls
    semseg[0, :8] = 255  # some ignore pixels
    edge = torch.zeros(1, H, W)
    edge[0, :, 1:] = (semseg[:, 1:] != semseg[:, :-1]).float()
    edge[0, 0, :8] = 255
    sal = (instance > 0).float()[None]

    cx, cy = CX, CY
    uu, vv = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    rays = torch.stack([(uu - cx) / FX, (vv - cy) / FY, torch.ones_like(uu)], dim=-1).double()
    depth = (PLANE_D / (rays @ PLANE_N)).float()[None]
    normals = PLANE_N.float().view(3, 1, 1).expand(3, H, W).clone()
    depth[:, 24:28, 50:61] = 0.0  # a hole: missing depth and normals
    normals[:, 24:28, 50:61] = 0.0

    sample = {
        "image": torch.rand(3, H, W, generator=g),
        "semseg": semseg,
        "depth": depth,
        "normals": normals,
        "edge": edge,
        "sal": sal,
        "scene": torch.tensor(2),
        "intrinsics": torch.tensor([FX, FY, cx, cy]),
        "instance": instance,
        "index": seed,
        "domain": "synthetic",
    }
    if with_boxes:
        sample["boxes"] = torch.stack([tight_box(instance == k) for k in (1, 2, 3)])
        sample["labels"] = torch.tensor(INSTANCE_CLASSES)
    else:
        sample["boxes"] = torch.zeros(0, 4)
        sample["labels"] = torch.zeros(0, dtype=torch.int64)
    return sample


def plane_normal_error_deg(sample: dict) -> float:
    """Fit a plane to the back-projected valid depth; angle (deg) between its normal and `normals`."""
    fx, fy, cx, cy = sample["intrinsics"].double()
    vv, uu = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    z = sample["depth"][0].double()
    valid = z > 0
    points = torch.stack([(uu - cx) / fx * z, (vv - cy) / fy * z, z], dim=-1)[valid]
    # Plane n.X = d with d != 0  <=>  X . (n / d) = 1: linear least squares for n / d.
    a = torch.linalg.lstsq(points, torch.ones(len(points), 1, dtype=torch.float64)).solution[:, 0]
    normals = sample["normals"].double()[:, valid].T
    assert torch.allclose(normals, normals[:1].expand_as(normals)), "plane normals should be constant"
    # atan2(|a x n|, |a . n|) stays accurate for tiny angles, unlike acos of a float32-rounded dot product.
    n = normals[0]
    return math.degrees(math.atan2(torch.linalg.cross(a, n).norm(), (a @ n).abs()))


def assert_samples_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_synthetic_sample_is_consistent():
    s = make_sample()
    assert plane_normal_error_deg(s) < 1e-3
    assert (s["depth"][s["depth"] > 0] > 1).all()


# --- horizontal flip ---------------------------------------------------------------------------------


def test_flip_twice_is_identity_and_input_untouched():
    sample = make_sample()
    copy = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
    flip = RandomHorizontalFlip(p=1.0)
    once = flip(sample)
    assert not torch.equal(once["image"], sample["image"])
    assert_samples_equal(flip(once), sample)
    assert_samples_equal(sample, copy)  # input dict not modified in place


def test_flip_targets():
    sample = make_sample()
    out = RandomHorizontalFlip(p=1.0)(sample)
    assert torch.equal(out["normals"][0], -sample["normals"][0].flip(-1))
    assert torch.equal(out["normals"][1:], sample["normals"][1:].flip(-1))
    assert torch.equal(out["depth"], sample["depth"].flip(-1))
    assert torch.equal(out["semseg"], sample["semseg"].flip(-1))
    for k in (1, 2, 3):
        assert torch.equal(out["boxes"][k - 1], tight_box(out["instance"] == k))
    assert torch.equal(out["labels"], sample["labels"])
    assert out["intrinsics"][2] == W - sample["intrinsics"][2]
    assert torch.equal(out["intrinsics"][[0, 1, 3]], sample["intrinsics"][[0, 1, 3]])
    assert plane_normal_error_deg(out) < 1e-3  # the mirrored scene is still the (mirrored) plane


def test_flip_probability_zero_is_identity():
    sample = make_sample()
    assert_samples_equal(RandomHorizontalFlip(p=0.0)(sample), sample)


# --- scale and crop ----------------------------------------------------------------------------------


def expected_boxes(boxes, sx, sy, x0, y0):
    b = boxes.double() * torch.tensor([sx, sy, sx, sy]) - torch.tensor([x0, y0, x0, y0])
    x1, y1, x2, y2 = b.unbind(1)
    clipped = torch.stack([x1.clamp(0, W), y1.clamp(0, H), x2.clamp(0, W), y2.clamp(0, H)], dim=1)
    return b, clipped


def check_depth_is_nearest_divided_by_s(src_depth, out_depth, s, sx, sy, x0, y0):
    """Every output depth * s equals the source depth at the nearest source pixel (either neighbour on
    an exact tie, so the check does not depend on floating-point rounding inside interpolate)."""

    def candidates(n_out, offset, factor, n_in):
        pos = (torch.arange(n_out, dtype=torch.float64) + offset + 0.5) / factor
        return [(pos + eps).floor().long().clamp(0, n_in - 1) for eps in (-1e-6, 1e-6)]

    rescaled = out_depth[0].double() * s
    ok = torch.zeros(H, W, dtype=torch.bool)
    for iy in candidates(H, y0, sy, H):
        for ix in candidates(W, x0, sx, W):
            ref = src_depth[0].double()[iy[:, None], ix[None, :]]
            ok |= torch.isclose(rescaled, ref, rtol=1e-6, atol=0.0)
    assert ok.all()


def test_scale_crop_geometry_over_many_draws():
    sample = make_sample()
    transform = RandomScaleCrop(scale=(1.0, 1.5), generator=torch.Generator().manual_seed(0))
    n_dropped = n_all_kept = 0
    for _ in range(40):
        out = transform(sample)
        p = transform.last_params
        s, (sx, sy), (x0, y0), keep = p["scale"], p["factors"], p["offset"], p["keep"]
        assert 1.0 <= s <= 1.5 and p["size"] == (round(s * H), round(s * W))
        assert sx == p["size"][1] / W and sy == p["size"][0] / H

        for key in ("image", "semseg", "depth", "normals", "edge", "sal", "instance"):
            assert out[key].shape == sample[key].shape and out[key].dtype == sample[key].dtype, key
        for key in ("scene", "index", "domain"):
            assert out[key] is sample[key]
        assert set(out["semseg"].unique().tolist()) <= {0, 3, 5, 255}  # nearest: no mixed labels
        assert set(out["instance"].unique().tolist()) <= {0, 1, 2, 3}

        check_depth_is_nearest_divided_by_s(sample["depth"], out["depth"], s, sx, sy, x0, y0)
        expected_k = torch.tensor([FX * sx, FY * sy, CX * sx - x0, CY * sy - y0])
        assert torch.allclose(out["intrinsics"], expected_k, atol=1e-5)
        # Normals are only resampled, never rescaled (the hole with zero normals may leave the crop).
        assert set(out["normals"].unique().tolist()) <= set(sample["normals"].unique().tolist())
        assert plane_normal_error_deg(out) < 1.0

        check_boxes(sample["boxes"], sample["labels"], out, keep, sx, sy, x0, y0)
        n_dropped += int((~keep).any())
        n_all_kept += int(keep.all())
    assert n_dropped > 0 and n_all_kept > 0, "the draws should exercise both kept and dropped boxes"


def check_boxes(src_boxes, src_labels, out, keep, sx, sy, x0, y0):
    """Boxes after scale-crop: the independent drop rule, then each kept box matches its instance mask."""
    raw, clipped = expected_boxes(src_boxes, sx, sy, x0, y0)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    assert torch.equal(keep, (cw >= 1) & (ch >= 1) & (cw * ch >= 0.25 * area))
    assert torch.allclose(out["boxes"].double(), clipped[keep], atol=1e-4)
    assert torch.equal(out["labels"], src_labels[keep])
    assert out["boxes"].dtype == torch.float32 and out["intrinsics"].dtype == torch.float32
    out_index = keep.cumsum(0) - 1
    for k in range(3):
        mask = out["instance"] == k + 1
        if not mask.any():
            assert not keep[k], f"instance {k + 1} left the crop but its box was kept"
            continue
        if not keep[k]:
            continue
        box, mask_box = out["boxes"][out_index[k]], tight_box(mask)
        was_clipped = not torch.equal(raw[k], clipped[k])
        if RECTANGULAR[k] or not was_clipped:
            assert (box - mask_box).abs().max() < 1.0, (k, box, mask_box)
        else:  # a clipped disk may be narrower than its clipped box, but never outside it
            assert (mask_box[:2] > box[:2] - 1).all() and (mask_box[2:] < box[2:] + 1).all()


def test_scale_crop_is_reproducible_and_identity_at_scale_one():
    sample = make_sample()
    a = RandomScaleCrop(generator=torch.Generator().manual_seed(3))(sample)
    b = RandomScaleCrop(generator=torch.Generator().manual_seed(3))(sample)
    assert_samples_equal(a, b)
    same = RandomScaleCrop(scale=(1.0, 1.0))(sample)
    for key in ("image", "semseg", "depth", "normals", "instance", "boxes", "labels", "intrinsics"):
        assert torch.allclose(same[key].double(), sample[key].double(), atol=1e-6), key


# --- photometric jitter --------------------------------------------------------------------------------


def test_photometric_jitter_changes_only_the_image():
    sample = make_sample()
    jitter = PhotometricJitter(generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        out = jitter(sample)
        assert out["image"].shape == sample["image"].shape and out["image"].dtype == torch.float32
        assert (out["image"] - sample["image"]).abs().max() > 1e-3
        assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0
        assert_samples_equal(
            {k: v for k, v in out.items() if k != "image"}, {k: v for k, v in sample.items() if k != "image"}
        )


def test_train_transforms_compose_runs():
    sample = make_sample()
    out = train_transforms(generator=torch.Generator().manual_seed(1))(sample)
    assert out.keys() == sample.keys()
    assert out["image"].shape == (3, H, W) and len(out["boxes"]) == len(out["labels"])
    assert len(train_transforms(flip=False, scale=None, jitter=False).transforms) == 0


def test_unknown_intrinsics_stay_unknown():
    sample = make_sample()
    sample["intrinsics"] = torch.zeros(4)
    for transform in (RandomHorizontalFlip(p=1.0), RandomScaleCrop(scale=(1.3, 1.3))):
        assert torch.equal(transform(sample)["intrinsics"], torch.zeros(4))


# --- the batch version -------------------------------------------------------------------------------

NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}


def unbatch(batch: dict, i: int) -> dict:
    return {k: v[i] for k, v in batch.items()}


def assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        elif a[key] and isinstance(a[key][0], torch.Tensor):
            assert len(a[key]) == len(b[key]) and all(map(torch.equal, a[key], b[key])), key
        else:
            assert a[key] == b[key], key


def test_batch_flip_equals_per_sample_flip():
    batch = collate_batch([make_sample(0), make_sample(1)])
    out = BatchAugment(flip_p=1.0, scale=None, **NO_JITTER)(batch, torch.Generator().manual_seed(0))
    for i in range(2):
        want, got = RandomHorizontalFlip(p=1.0)(unbatch(batch, i)), unbatch(out, i)
        for key in ("semseg", "depth", "normals", "edge", "sal", "instance", "boxes", "labels", "intrinsics"):
            assert torch.equal(got[key], want[key]), key
        # pixel centres map onto pixel centres: the bilinear image is the mirrored image up to rounding
        assert torch.allclose(got["image"], want["image"], atol=1e-6)
        assert plane_normal_error_deg(got) < 1e-3


def test_batch_identity_without_flip_and_zoom():
    batch = collate_batch([make_sample(0), make_sample(1)])
    out = BatchAugment(flip_p=0.0, scale=(1.0, 1.0), **NO_JITTER)(batch, torch.Generator().manual_seed(0))
    assert torch.allclose(out["image"], batch["image"], atol=1e-6)
    assert_batches_equal({k: v for k, v in out.items() if k != "image"},
                         {k: v for k, v in batch.items() if k != "image"})


def test_batch_geometry_over_many_draws():
    """Per sample of the batch: the maps are the flipped source sampled at the nearest pixel of the zoomed
    crop, depth divided by the zoom, normals' x negated where flipped, the back-projected depth agrees with
    the normals under the new intrinsics, and boxes follow the drop rule and match the instance masks."""
    n = 8
    samples = [make_sample(seed) for seed in range(n)]  # same geometry, different images
    batch = collate_batch(samples)
    augment, generator = BatchAugment(**NO_JITTER), torch.Generator().manual_seed(0)
    n_flipped = n_dropped = n_all_kept = 0
    for _ in range(6):
        out = augment(batch, generator)
        p = augment.last_params
        for key in ("image", "semseg", "depth", "normals", "edge", "sal", "instance", "intrinsics"):
            assert out[key].shape == batch[key].shape and out[key].dtype == batch[key].dtype, key
        for key in ("scene", "index", "domain"):
            assert out[key] is batch[key]
        # nearest neighbour: only ids that exist, never a blend of two
        assert set(out["semseg"].unique().tolist()) <= {0, 3, 5, 255}
        assert set(out["instance"].unique().tolist()) <= {0, 1, 2, 3}
        assert set(out["edge"].unique().tolist()) <= {0.0, 1.0, 255.0}
        assert set(out["sal"].unique().tolist()) <= {0.0, 1.0}
        for i in range(n):
            src, got = samples[i], unbatch(out, i)
            flipped, s = bool(p["flipped"][i]), float(p["scale"][i])
            x0, y0 = (float(v) for v in p["offset"][i])
            assert 1.0 <= s <= 1.5 and 0 <= x0 <= (s - 1) * W + 1e-4 and 0 <= y0 <= (s - 1) * H + 1e-4
            mirrored = RandomHorizontalFlip(p=1.0)(src) if flipped else src
            check_depth_is_nearest_divided_by_s(mirrored["depth"], got["depth"], s, s, s, x0, y0)
            nx = -PLANE_N[0] if flipped else PLANE_N[0]
            valid = got["depth"][0] > 0
            expected_n = torch.tensor([nx, PLANE_N[1], PLANE_N[2]], dtype=torch.float32)
            assert torch.equal(got["normals"][:, valid].T, expected_n.expand(int(valid.sum()), 3))
            assert torch.equal(got["normals"][:, ~valid], torch.zeros(3, int((~valid).sum())))  # the hole
            cx = W - CX if flipped else CX
            expected_k = torch.tensor([FX * s, FY * s, cx * s - x0, CY * s - y0], dtype=torch.float64)
            assert torch.allclose(got["intrinsics"].double(), expected_k, atol=1e-4)
            assert plane_normal_error_deg(got) < 1.0
            boxes = got["boxes"]
            assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= W).all()
            assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= H).all()
            keep = p["keep"][i]
            check_boxes(mirrored["boxes"], mirrored["labels"], got, keep, s, s, x0, y0)
            n_flipped += flipped
            n_dropped += int((~keep).any())
            n_all_kept += int(keep.all())
    assert 0 < n_flipped < 6 * n
    assert n_dropped > 0 and n_all_kept > 0, "the draws should exercise both kept and dropped boxes"


def test_batch_missing_annotations_stay_missing():
    samples = [make_sample(0), make_sample(1), make_sample(2, with_boxes=False)]
    samples[1]["depth"] = torch.zeros(1, H, W)  # a sample without depth, normals or a known camera
    samples[1]["normals"] = torch.zeros(3, H, W)
    samples[1]["intrinsics"] = torch.zeros(4)
    samples[1]["semseg"] = torch.full((H, W), 255)
    batch = collate_batch(samples)
    augment, generator = BatchAugment(), torch.Generator().manual_seed(1)
    for _ in range(5):
        out = augment(batch, generator)
        assert torch.equal(out["depth"][1], torch.zeros(1, H, W))
        assert torch.equal(out["normals"][1], torch.zeros(3, H, W))
        assert torch.equal(out["intrinsics"][1], torch.zeros(4))
        assert torch.equal(out["semseg"][1], torch.full((H, W), 255))
        # depth and normals are sampled at the same source pixels: the hole stays one hole
        hole = out["depth"][:, 0] == 0
        assert torch.equal(hole, (out["normals"] == 0).all(dim=1))
        assert [len(b) for b in out["boxes"]] == [len(b) for b in out["labels"]]
        assert len(out["boxes"][2]) == 0 and out["boxes"][2].shape == (0, 4)


def test_batch_parameters_differ_within_the_batch():
    n = 16
    batch = collate_batch([make_sample(0)] * n)  # identical inputs: any difference comes from the draws
    augment = BatchAugment()
    out = augment(batch, torch.Generator().manual_seed(0))
    p = augment.last_params
    for key in ("scale", "brightness", "contrast", "saturation", "hue"):
        assert len(set(p[key].tolist())) == n, key
    assert len(set(map(tuple, p["offset"].tolist()))) == n
    assert 0 < int(p["flipped"].sum()) < n
    images = out["image"].flatten(1)
    assert (torch.cdist(images, images) + torch.eye(n)).min() > 1e-3, "two samples were augmented alike"


def test_batch_is_deterministic_with_a_seeded_generator():
    batch = collate_batch([make_sample(i) for i in range(4)])
    copy = {k: [t.clone() for t in v] if isinstance(v, list) and v and isinstance(v[0], torch.Tensor)
            else v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    augment = BatchAugment()
    a = augment(batch, torch.Generator().manual_seed(5))
    b = augment(batch, torch.Generator().manual_seed(5))
    assert_batches_equal(a, b)
    assert_batches_equal(batch, copy)  # the input batch is not modified
    generator = torch.Generator().manual_seed(5)
    first, second = augment(batch, generator), augment(batch, generator)
    assert_batches_equal(first, a)
    assert not torch.equal(second["image"], first["image"])  # the generator moves on
    other = augment(batch, torch.Generator().manual_seed(6))
    assert not torch.equal(other["image"], a["image"])


def test_batch_jitter_is_per_sample_jitter_of_the_image_only():
    """With the geometry off, each image equals torchvision's per-image ops (PhotometricJitter's chain) at
    the factors drawn for it; nothing else changes."""
    batch = collate_batch([make_sample(i) for i in range(6)])
    batch["image"][0, :, :8] = 0.5  # grey pixels and channel ties exercise the hue's special cases
    batch["image"][1, 0, :8] = batch["image"][1, 1, :8]
    batch["image"][2] = (batch["image"][2] * 4).round() / 4
    augment = BatchAugment(flip_p=0.0, scale=None, hue=0.5)
    out = augment(batch, torch.Generator().manual_seed(0))
    p = augment.last_params
    for i in range(6):
        img = TF.adjust_brightness(batch["image"][i], float(p["brightness"][i]))
        img = TF.adjust_contrast(img, float(p["contrast"][i]))
        img = TF.adjust_saturation(img, float(p["saturation"][i]))
        img = TF.adjust_hue(img, float(p["hue"][i])).clamp(0.0, 1.0)
        assert torch.allclose(out["image"][i], img, atol=1e-5), i
    assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0
    assert_batches_equal({k: v for k, v in out.items() if k != "image"},
                         {k: v for k, v in batch.items() if k != "image"})


def test_batch_keeps_the_image_memory_format():
    batch = collate_batch([make_sample(0), make_sample(1)])
    batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)  # as train.to_device
    out = BatchAugment()(batch, torch.Generator().manual_seed(0))
    assert out["image"].is_contiguous(memory_format=torch.channels_last)


def test_augment_seed():
    assert augment_seed(0, 3) == augment_seed(0, 3, rank=0)
    seeds = {augment_seed(seed, epoch, rank) for seed in range(3) for epoch in range(20) for rank in range(2)}
    assert len(seeds) == 3 * 20 * 2 and all(0 <= v < 2**32 for v in seeds)


# --- collate -----------------------------------------------------------------------------------------


def test_collate_batch_shapes_and_lists():
    batch = collate_batch([make_sample(0), make_sample(1, with_boxes=False)])
    assert [len(b) for b in batch["boxes"]] == [3, 0]
    assert [len(b) for b in batch["labels"]] == [3, 0]
    assert batch["image"].shape == (2, 3, H, W)
    assert batch["semseg"].shape == (2, H, W) and batch["semseg"].dtype == torch.int64
    assert batch["depth"].shape == (2, 1, H, W) and batch["normals"].shape == (2, 3, H, W)
    assert batch["scene"].shape == (2,) and batch["intrinsics"].shape == (2, 4)
    assert batch["index"] == [0, 1] and batch["domain"] == ["synthetic", "synthetic"]


def test_collate_batch_errors_name_the_key():
    a, b = make_sample(0), make_sample(1)
    del b["sal"]
    with pytest.raises(ValueError, match="sal"):
        collate_batch([a, b])
    b = make_sample(1)
    b["depth"] = b["depth"][:, :16]
    with pytest.raises(ValueError, match="depth"):
        collate_batch([a, b])
    with pytest.raises(ValueError):
        collate_batch([])


# --- argument validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: RandomHorizontalFlip(p=1.5), "p"),
        (lambda: RandomHorizontalFlip(p=-0.1), "p"),
        (lambda: RandomScaleCrop(scale=(0.5, 1.0)), "scale"),
        (lambda: RandomScaleCrop(scale=(1.5, 1.2)), "scale"),
        (lambda: RandomScaleCrop(scale=(1.0,)), "scale"),
        (lambda: PhotometricJitter(brightness=-0.1), "brightness"),
        (lambda: PhotometricJitter(contrast=1.5), "contrast"),
        (lambda: PhotometricJitter(saturation=2.0), "saturation"),
        (lambda: PhotometricJitter(hue=0.7), "hue"),
        (lambda: Compose([RandomHorizontalFlip(), 3]), "transforms"),
        (lambda: train_transforms(scale=(0.9, 1.0)), "scale"),
        (lambda: BatchAugment(flip_p=1.5), "flip_p"),
        (lambda: BatchAugment(scale=(0.8, 1.2)), "scale"),
        (lambda: BatchAugment(brightness=-0.1), "brightness"),
        (lambda: BatchAugment(hue=0.6), "hue"),
    ],
)
def test_invalid_arguments_raise(factory, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        factory()


def test_invalid_generator_raises():
    with pytest.raises(TypeError, match="generator"):
        RandomHorizontalFlip(generator=0)
    with pytest.raises(TypeError, match="generator"):
        BatchAugment()(collate_batch([make_sample(0)]), 0)
