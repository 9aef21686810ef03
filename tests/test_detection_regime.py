"""The detection regime: ROCK's reference default boxes on a 1/4 base map of 128x128 images.

Prior geometry (levels, boxes per location, scales, aspect ratios), the head's priors as the coverage
study sees them, the `cnn` backbone's output stride, gradient flow through the 6-level head, and the
coverage of the benchmark's validation objects at the chosen setting."""

from __future__ import annotations

import math

import pytest
import torch

from mtl_core import detection_study as ds
from mtl_core.data.synthetic import SyntheticScenes
from mtl_core.losses import task_losses
from mtl_core.models import build_model
from mtl_core.models.backbones import SimpleCNN
from mtl_core.models.detection import ROCK_ASPECT_RATIOS, PriorBoxes, SSDHead, multibox_loss
from mtl_core.tasks import make_tasks

SIZE = (128, 128)  # the detection regime: 128x128 images, base map at 1/4 (32x32)
OPTIONS = {"widths": [8, 16, 24, 32], "output_stride": 4}
LEVELS = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
REFERENCE_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]  # rock-pytorch, pboxes_rock: sk


# tiny models: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ prior geometry
def test_reference_scales_and_boxes_per_level():
    priors = PriorBoxes()
    assert priors.scales(6) == pytest.approx(REFERENCE_SCALES)
    assert [priors.num_per_location(k) for k in range(6)] == [4, 6, 6, 6, 4, 4]
    assert [priors.level_ratios(k) for k in range(6)] == list(ROCK_ASPECT_RATIOS)
    assert priors.level_ratios(9) == (2.0,)  # levels past the list repeat its last entry
    # fewer levels: the first keeps 0.07, the linear range 0.15 ... 0.87 is spread over the others
    assert priors.scales(3) == pytest.approx([0.07, 0.15, 0.87, 1.59])
    # SSD's own rule (no special first level) and one tuple of ratios for every level
    ssd = PriorBoxes(first_scale=None, min_scale=0.2, max_scale=0.9, aspect_ratios=(2.0, 3.0))
    assert ssd.scales(3) == pytest.approx([0.2, 0.55, 0.9, 1.25])
    assert [ssd.num_per_location(k) for k in range(3)] == [6, 6, 6]
    assert PriorBoxes(aspect_ratios=()).num_per_location(0) == 2
    with pytest.raises(ValueError, match="aspect_ratios"):
        PriorBoxes(aspect_ratios=((2.0,), (0.0,)))
    with pytest.raises(ValueError, match="first_scale"):
        PriorBoxes(first_scale=-0.1)


def test_prior_boxes_of_every_level_as_configured():
    gen = PriorBoxes()
    priors = gen(LEVELS, SIZE)
    assert len(priors) == gen.count(LEVELS) == 32 * 32 * 4 + (256 + 64 + 16) * 6 + (4 + 1) * 4 == 6132
    start = 0
    for k, (h, w) in enumerate(LEVELS):
        a = gen.num_per_location(k)
        level = priors[start:start + h * w * a].reshape(h * w, a, 4)
        start += h * w * a
        sk, nxt = REFERENCE_SCALES[k], REFERENCE_SCALES[k + 1]
        expected = [(sk, sk), (math.sqrt(sk * nxt),) * 2]
        for ratio in ROCK_ASPECT_RATIOS[k]:
            r = math.sqrt(ratio)
            expected += [(sk * r, sk / r), (sk / r, sk * r)]
        expected = torch.tensor(expected).clamp(0, 1)  # clip=True, as the reference
        assert torch.allclose(level[:, :, 2:], expected.expand(h * w, a, 2), atol=1e-6), f"level {k}"
        # centres: the cell centres, row by row
        centres = level[:, 0, :2]
        assert centres[0].tolist() == pytest.approx([0.5 / w, 0.5 / h])
        assert centres[-1].tolist() == pytest.approx([1 - 0.5 / w, 1 - 0.5 / h])
        assert torch.allclose(level[:, :, :2], centres[:, None].expand(h * w, a, 2))
    assert start == len(priors)


def test_non_square_images_keep_square_priors_square_in_pixels():
    priors = PriorBoxes()([(3, 4)], (96, 128))
    first = priors[0]  # the square box of scale 0.07 of the shorter side (96 px)
    assert (first[2] * 128).item() == pytest.approx(0.07 * 96)
    assert (first[3] * 96).item() == pytest.approx(0.07 * 96)


# ------------------------------------------------------------------ the head and the model use these priors
def test_head_default_boxes_are_the_forward_priors():
    head = SSDHead(8, 10).eval()
    assert head.extra_layers == 5 and len(head.cls_convs) == 6
    assert [conv.out_channels for conv in head.cls_convs] == [a * 11 for a in (4, 6, 6, 6, 4, 4)]
    assert [conv.out_channels for conv in head.box_convs] == [a * 4 for a in (4, 6, 6, 6, 4, 4)]
    with torch.no_grad():
        out = head(torch.zeros(1, 8, 32, 32), SIZE)
    sizes, priors = head.default_boxes((32, 32), SIZE)
    assert out["feature_sizes"] == sizes == LEVELS
    assert torch.equal(out["priors"], priors)
    assert out["logits"].shape == (1, 6132, 11) and out["deltas"].shape == (1, 6132, 4)
    # the reference's bias prior: every class starts at probability ~0.01 against the background
    probs = out["logits"][0].softmax(-1)
    assert torch.allclose(probs[:, 1:] / probs[:, :1], torch.full_like(probs[:, 1:], 0.01 / 0.99), rtol=1e-4)


def test_model_priors_follow_the_backbone_stride():
    model = build_model("ssd", ["detection"], backbone="cnn", backbone_options=OPTIONS).eval()
    sizes, priors = ds.detector_priors(model, SIZE)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *SIZE))["detection"]
    assert out["feature_sizes"] == sizes == LEVELS
    assert torch.equal(out["priors"], priors)
    assert ds.ssd_feature_sizes(SIZE, 4) == LEVELS


def test_cnn_output_stride():
    image = torch.randn(1, 3, *SIZE)
    for output_stride, strides in [(32, [4, 8, 16, 32]), (16, [4, 8, 16, 16]), (8, [4, 8, 8, 8]),
                                   (4, [4, 4, 4, 4])]:
        net = SimpleCNN((8, 16, 24, 32), output_stride=output_stride)
        assert net.strides == strides
        assert [m.shape[-1] for m in net(image)] == [SIZE[1] // s for s in strides]
    # the default and `dilated=True` are unchanged: output stride 32 and 16, the same weights and maps
    torch.manual_seed(0)
    dilated = SimpleCNN((8, 16, 24, 32), dilated=True).eval()
    torch.manual_seed(0)
    stride16 = SimpleCNN((8, 16, 24, 32), output_stride=16).eval()
    assert SimpleCNN().strides == [4, 8, 16, 32]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(dilated(image), stride16(image), strict=True))
    with pytest.raises(ValueError, match="output_stride"):
        SimpleCNN(output_stride=2)
    with pytest.raises(ValueError, match="dilated"):
        SimpleCNN(dilated=True, output_stride=8)


@pytest.mark.parametrize("name", ["ssd", "flat_mtl", "rock"])
def test_gradient_reaches_every_level_of_the_head(name):
    torch.manual_seed(0)
    task_names = ["detection"] if name == "ssd" else ["detection", "scene", "depth", "normals"]
    tasks = make_tasks(task_names)
    model = build_model(name, tasks, backbone="cnn", backbone_options=OPTIONS)
    g = torch.Generator().manual_seed(0)
    # objects of every size the levels are for: 0.07 ... 0.9 of the image
    sizes = torch.tensor([0.08, 0.15, 0.3, 0.5, 0.7, 0.9]) * SIZE[0]
    boxes = [torch.stack([torch.tensor([4.0, 4.0, 4 + s, 4 + s]) for s in sizes[i::2]]) for i in range(2)]
    batch = {"image": torch.randn(2, 3, *SIZE, generator=g), "boxes": boxes,
             "labels": [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])], "scene": torch.tensor([0, 1]),
             "depth": 1 + torch.rand(2, 1, *SIZE, generator=g),
             "normals": torch.nn.functional.normalize(torch.randn(2, 3, *SIZE, generator=g), dim=1)}
    out = model(batch["image"])
    assert out["detection"]["feature_sizes"] == LEVELS  # all 5 extra layers in use
    losses = task_losses(out, batch, tasks)
    assert torch.isfinite(multibox_loss(out["detection"], batch))
    sum(tasks[t].weight * v for t, v in losses.items()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    for k in range(6):  # every level's predictors learn
        assert model.ssd.cls_convs[k].weight.grad.abs().sum() > 0, f"level {k}"
        assert model.ssd.box_convs[k].weight.grad.abs().sum() > 0 or k > 3, f"level {k}"


# ------------------------------------------------------------------ coverage of the benchmark's objects
def test_priors_cover_the_benchmark_validation_objects(tmp_path):
    """At the chosen setting >= 90 % of the validation objects have a prior at IoU >= 0.5 (the first
    48 validation scenes, rendered at 128x128: the relative box statistics are those of every size);
    the 64x64 images with a dilated 1/16 map (the former setting) leave most objects without one."""
    val = SyntheticScenes("val", 48, size=SIZE, root=tmp_path, progress=False)
    boxes = ds.gt_boxes(val)
    assert len(boxes) > 150
    model = build_model("ssd", ["detection"], backbone="cnn", backbone_options=OPTIONS)
    coverage = ds.prior_coverage(boxes, SIZE, models={"SSD": model})
    assert coverage.loc["SSD", "priors"] == 6132
    assert coverage.loc["SSD", "objects with a prior ≥ 0.5"] >= 0.9
    # the same objects at 1/16 (an 8x8 base map): far fewer fit
    coarse = ds.prior_coverage(boxes, SIZE, strides=(16,))
    assert coarse.loc["1/16", "objects with a prior ≥ 0.5"] < 0.5
    stats = ds.box_statistics(boxes, SIZE)
    assert 0.15 < stats.loc["50%", "size / shorter side"] < 0.4
    assert stats.loc["5%", "aspect ratio w/h"] < 0.5 < 1.5 < stats.loc["95%", "aspect ratio w/h"]


def test_quick_and_full_train_the_detectors_on_one_schedule():
    """04's quick profile is full's main comparison at the same schedule (one seed): the same runs, so a
    quick run is reused by full and the two profiles never rank detectors trained for different lengths.
    The dense studies' data size does not leak into the detectors' (2000 images) or back."""
    from mtl_core import experiments
    from mtl_core.runs import config_hash

    quick = experiments.planned_runs("04_rock_ablation", "quick")
    full = experiments.planned_runs("04_rock_ablation", "full")
    assert sorted(quick) == ["ROCK", "SSD", "flat MTL"]
    for label, configs in quick.items():
        assert config_hash(configs[0]) == config_hash(full[label][0])
        assert configs[0].num_train == 2000 and configs[0].epochs == 16 and configs[0].size == SIZE
    assert len(full["SSD"]) == 3 and len(full) > len(quick)
    dense = experiments.base_config("quick", model="mtl_baseline")
    assert dense.num_train == experiments.study("quick")["num_train"] != 2000
