"""SSD pieces (priors, box coding, matching, multibox loss, NMS) and the ROCK / SSD / flat-MTL models."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torchvision.ops import box_convert, box_iou

from mtl_core.losses import task_losses
from mtl_core.models import build_model
from mtl_core.models.detection import (
    PriorBoxes,
    SSDHead,
    decode,
    encode,
    hard_negative_mining,
    match,
    multibox_loss,
    postprocess,
)
from mtl_core.tasks import make_tasks

ALL_TASKS = ["detection", "scene", "depth", "normals"]


# tiny models: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def random_boxes(n: int, generator: torch.Generator, min_size: float = 0.02) -> torch.Tensor:
    """(n, 4) normalised xyxy boxes inside [0, 1]."""
    xy = torch.rand(n, 2, generator=generator) * (1 - min_size)
    wh = min_size + torch.rand(n, 2, generator=generator) * (1 - min_size - xy)
    return torch.cat([xy, xy + wh], dim=1)


def random_batch(size=(64, 64), batch_size=3, num_classes=10, seed=0) -> dict:
    """A batch in the conventions, with gaps: image 1 has no boxes, no scene, no depth; image 2 no normals."""
    assert batch_size >= 3, "the gaps need three images"
    g = torch.Generator().manual_seed(seed)
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    counts = [3, 0, 1] + [2] * (batch_size - 3)
    depth = 0.5 + 4 * torch.rand(batch_size, 1, h, w, generator=g)
    depth[depth < 1.0] = 0  # scattered holes
    depth[1] = 0
    normals = torch.nn.functional.normalize(torch.randn(batch_size, 3, h, w, generator=g), dim=1)
    normals[2] = 0
    scene = torch.randint(0, 6, (batch_size,), generator=g)
    scene[1] = -1
    return {"image": torch.randn(batch_size, 3, h, w, generator=g),
            "boxes": [random_boxes(n, g, 0.1) * scale for n in counts[:batch_size]],
            "labels": [torch.randint(0, num_classes, (n,), generator=g) for n in counts[:batch_size]],
            "scene": scene, "depth": depth, "normals": normals}


# ---------------------------------------------------------------------------------------- box coding
def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    centres, sizes = torch.rand(2, 500, 2, generator=g), 0.05 + 0.95 * torch.rand(2, 500, 2, generator=g)
    priors = torch.cat([centres, sizes], dim=-1)
    boxes = random_boxes(1000, g).reshape(2, 500, 4)
    assert torch.allclose(decode(encode(boxes, priors), priors), boxes, atol=1e-5)
    assert torch.allclose(decode(encode(boxes, priors, (0.2, 0.5)), priors, (0.2, 0.5)), boxes, atol=1e-5)
    # a box equal to its prior encodes to zero offsets
    zero = encode(box_convert(priors, "cxcywh", "xyxy"), priors)
    assert torch.allclose(zero, torch.zeros(2, 500, 4), atol=1e-4)


SSD_RULE = {"first_scale": None, "min_scale": 0.2, "max_scale": 0.9, "aspect_ratios": (2.0,)}  # SSD's paper


@pytest.mark.parametrize("image_size, sizes", [((64, 64), [(4, 4), (2, 2), (1, 1)]),
                                               ((64, 96), [(4, 6), (2, 3), (1, 2), (1, 1)]),
                                               ((480, 640), [(30, 40), (15, 20), (8, 10), (4, 5), (2, 3)])])
def test_prior_count_range_and_shapes(image_size, sizes):
    # SSD's own rule (linear scales 0.2 ... 0.9, ratios {1, 2, 1/2} everywhere): still available as options
    gen = PriorBoxes(**SSD_RULE)
    priors = gen(sizes, image_size)
    assert [gen.num_per_location(k) for k in range(len(sizes))] == [4] * len(sizes)  # + sqrt(s_k s_k+1)
    assert priors.shape == (sum(h * w for h, w in sizes) * 4, 4) == (gen.count(sizes), 4)
    assert priors.min() >= 0 and priors.max() <= 1  # clip=True: cx, cy, w, h all in [0, 1]
    assert gen(sizes, image_size) is priors  # cached per (sizes, image size, device)
    # scales: linear from min_scale to max_scale; the first box of a location is the square of scale s_k
    h, w = image_size
    short = min(h, w)
    first = priors[0]
    assert first[2] * w == pytest.approx(0.2 * short) and first[3] * h == pytest.approx(0.2 * short)
    last_level = priors[-4:]
    assert last_level[0, 2] * w == pytest.approx(min(0.9 * short, w))
    assert gen.scales(len(sizes))[:-1] == pytest.approx(torch.linspace(0.2, 0.9, len(sizes)).tolist())
    # first location's centre is the centre of the first cell
    assert priors[0, :2].tolist() == pytest.approx([0.5 / sizes[0][1], 0.5 / sizes[0][0]])


def test_default_priors_are_the_references_on_its_own_maps():
    # rock-pytorch, pboxes_rock: NYUv2 480x640, maps 30x40 ... 1x1, 7228 priors (rock/model/detection.py)
    sizes = [(30, 40), (15, 20), (8, 10), (4, 5), (2, 3), (1, 1)]
    gen = PriorBoxes()
    priors = gen(sizes, (480, 640))
    assert len(priors) == gen.count(sizes) == 7228
    assert gen.scales(6) == pytest.approx([0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05])
    # the reference sizes boxes per axis (s * sqrt(a) of the width, s / sqrt(a) of the height); here in
    # units of the shorter side, the height: the heights are the reference's, the widths 480 / 640 of it
    first = priors[:4]  # the 4 boxes of the first location: s, sqrt(s s'), 2:1, 1:2
    s, s1, r = 0.07, 0.15, math.sqrt(2)
    assert first[:, 3].tolist() == pytest.approx([s, math.sqrt(s * s1), s / r, s * r])
    assert first[:, 2].tolist() == pytest.approx([0.75 * v for v in (s, math.sqrt(s * s1), s * r, s / r)])


def test_head_output_order_matches_priors():
    """A logit switched on at one (location, anchor) of the head lands on the prior with that centre/shape."""
    torch.manual_seed(0)
    head = SSDHead(in_channels=4, num_classes=3, extra_layers=0)
    anchors, k = head.priors.num_per_location(0), 4  # classes + background
    conv = head.cls_convs[0]
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    anchor, cls = 2, 1
    conv.weight.data[anchor * k + cls, 0, 1, 1] = 1.0  # centre tap of input channel 0
    base = torch.zeros(1, 4, 3, 5)
    i, j = 1, 3
    base[0, 0, i, j] = 1.0
    out = head(base, (96, 160))
    flat = out["logits"][0].nonzero()
    assert flat.tolist() == [[(i * 5 + j) * anchors + anchor, cls]]
    prior = out["priors"][flat[0, 0]]
    sw, sh = head.priors.shapes(0, 1)[anchor]
    assert prior.tolist() == pytest.approx([(j + 0.5) / 5, (i + 0.5) / 3, sw * 96 / 160, sh])


# ----------------------------------------------------------------------------------------- matching
def test_match_gt_equal_to_prior_is_positive():
    priors = PriorBoxes()([(4, 4), (2, 2), (1, 1)], (64, 64))
    k = 37
    gt = box_convert(priors[k:k + 1], "cxcywh", "xyxy")
    labels, targets = match(gt, torch.tensor([6]), priors)
    assert labels[k] == 7
    assert torch.allclose(targets[k], torch.zeros(4), atol=1e-5)


def shifted_prior(iou: float) -> list[float]:
    """A 0.5x0.5 prior shifted right from the GT [0, 0, 0.5, 0.5] so that IoU = (0.5 - d) / (0.5 + d)."""
    d = 0.5 * (1 - iou) / (1 + iou)
    return [0.25 + d, 0.25, 0.5, 0.5]


def test_match_iou_thresholds():
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], shifted_prior(0.6), shifted_prior(0.45),
                           shifted_prior(0.3)])
    ious = box_iou(gt, box_convert(priors, "cxcywh", "xyxy"))[0]
    assert ious.tolist() == pytest.approx([1.0, 0.6, 0.45, 0.3], abs=1e-5)
    labels, _ = match(gt, torch.tensor([2]), priors)
    assert labels.tolist() == [3, 3, -1, 0]  # positive, positive, ignored, background
    # without the perfect prior, the GT still claims its best one (IoU 0.6); 0.45 stays ignored
    labels, _ = match(gt, torch.tensor([2]), priors[1:])
    assert labels.tolist() == [3, -1, 0]
    # ... and a GT whose best prior has only IoU 0.3 gets that prior as a forced positive
    labels, _ = match(gt, torch.tensor([2]), priors[3:])
    assert labels.tolist() == [3]
    # custom thresholds
    labels, _ = match(gt, torch.tensor([0]), priors, pos_iou=0.7, neg_iou=0.5)
    assert labels.tolist() == [1, -1, 0, 0]


def test_every_gt_is_matched():
    g = torch.Generator().manual_seed(1)
    priors = PriorBoxes()([(4, 4), (2, 2), (1, 1)], (64, 64))
    gt = torch.cat([random_boxes(12, g, 0.03), torch.tensor([[0.1, 0.1, 0.3, 0.3]] * 2),  # two identical GTs
                    torch.tensor([[0.50, 0.50, 0.51, 0.52]])])  # tiny: overlaps almost nothing
    gt_labels = torch.arange(len(gt)) % 5
    labels, targets = match(gt, gt_labels, priors)
    decoded = decode(targets, priors)
    for j in range(len(gt)):
        hits = (labels == gt_labels[j] + 1) & (box_iou(gt[j:j + 1], decoded)[0] > 0.999)
        assert hits.any(), f"GT {j} has no positive prior"
    # the identical pair: two different priors
    pair = [((labels > 0) & (box_iou(gt[j:j + 1], decoded)[0] > 0.999)).nonzero().flatten().tolist()
            for j in (12, 13)]
    assert len(set(pair[0]) | set(pair[1])) >= 2


def test_match_without_boxes():
    priors = PriorBoxes()([(2, 2)], (64, 64))
    labels, targets = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), priors)
    assert (labels == 0).all() and targets.shape == priors.shape


# ------------------------------------------------------------------------------------------------ loss
def test_hard_negative_mining_count_and_choice():
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(5, 200, generator=g)
    r = torch.rand(5, 200, generator=g)
    positive = r < torch.tensor([0.01, 0.1, 0.4, 0.0, 0.3])[:, None]
    negative = ~positive & (r > 0.35)  # some priors ignored
    negative[4] &= r[4] > 0.97  # few negatives: the negatives run out
    mask = hard_negative_mining(loss, positive, negative, neg_pos_ratio=3)
    assert not (mask & ~negative).any()
    for i in range(5):
        num_pos, num_neg = int(positive[i].sum()), int(negative[i].sum())
        expected = min(3 * num_pos, num_neg)  # an image without positives mines none (ROCK's reference)
        assert int(mask[i].sum()) == expected
        if 0 < expected < num_neg:  # the chosen are the hardest
            assert loss[i][mask[i]].min() >= loss[i][negative[i] & ~mask[i]].max()
    assert int(positive[3].sum()) == 0 and int(mask[3].sum()) == 0


def test_loss_without_boxes_is_zero():
    # as in ROCK's reference: an image without positives contributes 0, so a batch without boxes gives 0
    torch.manual_seed(0)
    model = build_model("ssd", ["detection"])
    batch = random_batch()
    batch["boxes"] = [torch.zeros(0, 4)] * 3
    batch["labels"] = [torch.zeros(0, dtype=torch.int64)] * 3
    out = model(batch["image"])
    loss = multibox_loss(out["detection"], batch)
    assert loss.ndim == 0 and loss.item() == 0.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    # mixed batch with an empty image: finite and positive
    mixed = multibox_loss(model(batch["image"])["detection"], random_batch())
    assert torch.isfinite(mixed) and mixed > 0


def test_ssd_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model("ssd", ["detection"], extra_layers=1)
    batch = random_batch(batch_size=4, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = multibox_loss(model(batch["image"])["detection"], batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses


# ------------------------------------------------------------------------------------ postprocess / NMS
def det_out_for(boxes_xyxy: torch.Tensor, classes: list[int], num_classes: int = 3, image_size=(64, 64)):
    """Raw outputs whose priors are `boxes_xyxy` (normalised) themselves, zero deltas, confident logits."""
    priors = box_convert(boxes_xyxy, "xyxy", "cxcywh")
    logits = torch.zeros(1, len(classes), num_classes + 1)
    logits[0, torch.arange(len(classes)), torch.tensor(classes) + 1] = 10.0
    return {"logits": logits, "deltas": torch.zeros(1, len(classes), 4), "priors": priors,
            "image_size": image_size}


def test_nms_same_class_keeps_one_different_classes_keep_both():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]])
    (same,) = postprocess(det_out_for(boxes, [1, 1]))
    assert len(same["boxes"]) == 1 and same["labels"].tolist() == [1]
    assert same["boxes"][0].tolist() == pytest.approx([6.4, 6.4, 32.0, 32.0])
    assert same["scores"][0] > 0.99
    (different,) = postprocess(det_out_for(boxes, [0, 2]), image_size=(64, 64))
    assert sorted(different["labels"].tolist()) == [0, 2]
    with pytest.raises(ValueError, match="image_size"):
        postprocess({k: v for k, v in det_out_for(boxes, [0, 2]).items() if k != "image_size"})
    (capped,) = postprocess(det_out_for(boxes, [0, 2]), max_detections=1)
    assert len(capped["boxes"]) == 1


def test_perfect_detector_decodes_to_ground_truth():
    image_size = (64, 96)
    h, w = image_size
    priors = PriorBoxes()([(4, 6), (2, 3), (1, 2), (1, 1)], image_size)
    batch = {"image": torch.zeros(2, 3, h, w),
             "boxes": [torch.tensor([[4.0, 6.0, 30.0, 40.0], [50.0, 10.0, 90.0, 60.0]]),
                       torch.tensor([[10.0, 20.0, 26.0, 30.0]])],
             "labels": [torch.tensor([0, 4]), torch.tensor([2])]}
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    logits, deltas = [], []
    for boxes, labels in zip(batch["boxes"], batch["labels"], strict=True):
        target_labels, targets = match(boxes / scale, labels, priors)
        logits.append(10 * torch.nn.functional.one_hot(target_labels.clamp_min(0), 6).float())
        deltas.append(targets)
    det_out = {"logits": torch.stack(logits), "deltas": torch.stack(deltas), "priors": priors,
               "image_size": image_size}
    # an exact detector has (almost) zero loss
    assert multibox_loss(det_out, batch) < 1e-3
    for result, boxes, labels in zip(postprocess(det_out), batch["boxes"], batch["labels"], strict=True):
        assert len(result["boxes"]) == len(boxes)  # duplicates of one GT are suppressed
        iou = box_iou(boxes, result["boxes"])
        best = iou.argmax(dim=1)
        assert (iou.max(dim=1).values > 0.99).all()
        assert result["labels"][best].tolist() == labels.tolist()
    if importlib.util.find_spec("mtl_core.metrics") is not None:
        from mtl_core.metrics import DetectionMeter

        meter = DetectionMeter(5)
        meter.update(det_out, batch)
        assert meter.compute()["map50"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------- models
CONFIGS = [("ssd", {}), ("rock", {"fusion": "add"}), ("rock", {"fusion": "multiply"}),
           ("rock", {"fusion": "concat"}), ("rock", {"intensive_pooling": False}), ("flat_mtl", {})]

CONFIG_IDS = [f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CONFIGS]


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
@pytest.mark.parametrize("name, options", CONFIGS, ids=CONFIG_IDS)
def test_models_forward_backward(name, options, size):
    torch.manual_seed(0)
    task_names = ["detection"] if name == "ssd" else ALL_TASKS
    tasks = make_tasks(task_names)
    # extra_layers=1: at these sizes every layer is used, so every parameter must receive a gradient
    model = build_model(name, tasks, extra_layers=1, **options)
    batch = random_batch(size)
    out = model(batch["image"], return_features=True)
    h, w = size
    base_hw = (h // 32, w // 32)
    det = out["detection"]
    assert det["logits"].shape[:2] == det["deltas"].shape[:2] and det["logits"].shape[-1] == 11
    assert det["priors"].shape == (det["logits"].shape[1], 4) and det["image_size"] == size
    assert out["deep"] == [] and out["features"]["base"].shape[-2:] == base_hw
    if name != "ssd":
        assert out["scene"].shape == (3, 6)
        assert out["depth"].shape == (3, 1, *base_hw) and out["normals"].shape == (3, 3, *base_hw)
        assert set(out["features"]["task_features"]) == {"scene", "depth", "normals"}
    losses = task_losses(out, batch, tasks)
    assert set(losses) == set(task_names) and all(torch.isfinite(v) for v in losses.values())
    sum(tasks[t].weight * v for t, v in losses.items()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


def test_model_children_and_fusion_none():
    rock = build_model("rock", ALL_TASKS)
    flat = build_model("flat_mtl", ALL_TASKS)
    ssd = build_model("ssd", ["detection"])
    assert [n for n, _ in rock.named_children()] == ["backbone", "rock", "aux_heads", "ssd"]
    assert [n for n, _ in ssd.named_children()] == ["backbone", "aux_heads", "ssd"]
    assert not any("decoders" in n for n, _ in flat.named_parameters())  # flat MTL: no decoders at all
    assert any("decoders" in n for n, _ in rock.named_parameters())
    assert flat.fusion == "none" and rock.fusion == "add"
    # parameter budget: flat MTL = rock without the decoders and the fusion BN
    decoder_params = sum(p.numel() for n, p in rock.named_parameters() if "decoders" in n or "rock.norm" in n)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(rock) - decoder_params == count(flat)
    assert sum(p.numel() for p in rock.aux_heads.parameters()) == 0  # intensive pooling has no weights
    # the detection loss of flat MTL does not reach the auxiliary branch; ROCK's does
    batch = random_batch()
    for model, reaches in ((flat, False), (rock, True)):
        multibox_loss(model(batch["image"])["detection"], batch).backward()
        grads = [p.grad for p in model.rock.encoders.parameters()]
        assert all(g is not None for g in grads) == reaches and any(g is not None for g in grads) == reaches


def test_missing_auxiliary_annotations_give_zero_loss():
    torch.manual_seed(0)
    tasks = make_tasks(ALL_TASKS)
    model = build_model("rock", tasks, extra_layers=1)
    batch = random_batch()
    batch["scene"][:] = -1
    batch["depth"][:] = 0
    batch["normals"][:] = 0
    losses = task_losses(model(batch["image"]), batch, tasks)
    assert losses["scene"] == 0 and losses["depth"] == 0 and losses["normals"] == 0
    assert torch.isfinite(losses["detection"]) and losses["detection"] > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dilated_resnet18_base_and_skipped_extra_levels():
    torch.manual_seed(0)
    tasks = make_tasks(ALL_TASKS)
    model = build_model("rock", tasks, backbone="resnet18", backbone_options={"dilated": True})
    batch = random_batch((64, 64), batch_size=3)
    out = model(batch["image"])
    # stride-16 base map: 4x4 -> 2x2 -> 1x1; the last three of the 5 extra layers are not used at this size
    assert out["detection"]["feature_sizes"] == [(4, 4), (2, 2), (1, 1)]
    assert out["depth"].shape == (3, 1, 4, 4)
    assert out["detection"]["priors"].shape[0] == 16 * 4 + (4 + 1) * 6  # 4, then 6 boxes per cell
    sum(task_losses(out, batch, tasks).values()).backward()
    skipped = tuple(f"ssd.extras.{k}." for k in (2, 3, 4))  # levels 3 ... 5 and their predictors
    skipped += tuple(f"ssd.{part}.{k}." for k in (3, 4, 5) for part in ("cls_convs", "box_convs"))
    for pname, p in model.named_parameters():
        if pname.startswith(skipped):
            assert p.grad is None
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_bad_options_raise():
    with pytest.raises(ValueError, match="'sum'"):
        build_model("rock", ALL_TASKS, fusion="sum")
    with pytest.raises(ValueError, match="semseg"):
        build_model("rock", ["detection", "depth", "semseg"])
    with pytest.raises(ValueError, match="depth"):
        build_model("ssd", ["detection", "depth"])
    with pytest.raises(ValueError, match="detection"):
        build_model("rock", ["depth", "normals"])
    with pytest.raises(ValueError, match="fusion"):
        build_model("flat_mtl", ALL_TASKS, fusion="add")
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model("ssd", ["detection"])(torch.zeros(1, 3, 60, 64))
