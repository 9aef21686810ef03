"""Known-answer tests of mtl_core.metrics: every meter on perfect, all-wrong and hand-computed cases."""

import math

import pytest
import torch

from mtl_core.metrics import (
    DepthMeter,
    DetectionMeter,
    EdgeMeter,
    MetricSuite,
    NormalsMeter,
    SaliencyMeter,
    SceneMeter,
    SemsegMeter,
    delta_m,
    make_meter,
)
from mtl_core.tasks import TASK_NAMES, make_task, make_tasks

approx = pytest.approx


def one_hot_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) labels -> (B, C, H, W) logits whose argmax is the label."""
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float() * 10


def binary_logits(mask: torch.Tensor) -> torch.Tensor:
    """{0, 1} map -> logits with sigmoid ~1 on the ones and ~0 elsewhere."""
    return torch.where(mask > 0.5, 10.0, -10.0)


def meter_result(meter, pred, batch):
    meter.update(pred, batch)
    return meter.compute()


# ---------------------------------------------------------------------------------------- semseg

SEG_GT = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
SEG_PRED = torch.tensor([[[0, 1, 1], [1, 2, 0]]])


def test_semseg_hand_computed_confusion():
    # confusion (rows gt, cols pred): gt0 -> [1, 1, 0], gt1 -> [0, 2, 0], gt2 -> [1, 0, 1]
    # IoU0 = 1 / (2 + 2 - 1) = 1/3, IoU1 = 2 / (2 + 3 - 2) = 2/3, IoU2 = 1 / (2 + 1 - 1) = 1/2
    # mIoU = (1/3 + 2/3 + 1/2) / 3 = 50 %; pixel accuracy = 4/6.
    # num_classes = 4: class 3 is absent from both gt and prediction and must not count as IoU 0
    # (which would give 37.5 %).
    meter = SemsegMeter(4)
    result = meter_result(meter, one_hot_logits(SEG_PRED, 4), {"semseg": SEG_GT})
    assert result == approx({"miou": 50.0, "pixel_acc": 400 / 6})
    assert meter.confusion[:3, :3].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    iou = meter.per_class()["iou"]
    assert [iou[str(c)] for c in range(3)] == approx([100 / 3, 200 / 3, 50.0])
    assert math.isnan(iou["3"])


def test_semseg_perfect_and_all_wrong():
    gt = torch.randint(0, 5, (2, 8, 8))
    assert meter_result(SemsegMeter(5), one_hot_logits(gt, 5), {"semseg": gt}) == {"miou": 100.0,
                                                                                    "pixel_acc": 100.0}
    wrong = one_hot_logits((gt + 1) % 5, 5)
    assert meter_result(SemsegMeter(5), wrong, {"semseg": gt}) == {"miou": 0.0, "pixel_acc": 0.0}


def test_semseg_ignores_255_and_accepts_low_resolution_and_labels():
    gt = SEG_GT.clone()
    gt[0, 1, 2] = 255  # the pixel predicted wrong (gt 2, pred 0) becomes ignored
    logits = one_hot_logits(SEG_PRED, 3)
    base = meter_result(SemsegMeter(3), logits, {"semseg": gt})
    changed = logits.clone()
    changed[0, :, 1, 2] = torch.tensor([0.0, 0.0, 50.0])  # another prediction at the ignored pixel
    assert meter_result(SemsegMeter(3), changed, {"semseg": gt}) == base
    assert base["pixel_acc"] == approx(80.0)  # 4 of the 5 remaining pixels
    # integer label maps are accepted as predictions
    assert meter_result(SemsegMeter(3), SEG_PRED, {"semseg": gt}) == base
    # a constant 1/4-resolution prediction upsamples to a constant map
    gt8 = torch.full((1, 8, 8), 2)
    low = one_hot_logits(torch.full((1, 2, 2), 2), 3)
    assert meter_result(SemsegMeter(3), low, {"semseg": gt8})["miou"] == 100.0


def test_semseg_rejects_labels_beyond_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        SemsegMeter(2).update(one_hot_logits(SEG_PRED, 3), {"semseg": SEG_GT})


def test_semseg_is_pooled_over_batches():
    # the same pixels split across two updates give the same confusion matrix
    meter = SemsegMeter(3)
    meter.update(SEG_PRED[:, :1], {"semseg": SEG_GT[:, :1]})
    meter.update(SEG_PRED[:, 1:], {"semseg": SEG_GT[:, 1:]})
    assert meter.compute() == approx({"miou": 50.0, "pixel_acc": 400 / 6})


# ----------------------------------------------------------------------------------------- depth


def test_depth_hand_computed():
    gt = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])  # the 0 is missing
    pred = torch.tensor([[[[2.0, 2.0], [2.0, 5.0]]]])
    # errors 1, 0, -2 -> RMSE sqrt(5/3); abs-rel (1/1 + 0/2 + 2/4) / 3 = 0.5;
    # max(p/g, g/p) = 2, 1, 2 -> one pixel of three under 1.25
    expected = {"rmse": math.sqrt(5 / 3), "abs_rel": 0.5, "delta1": 100 / 3}
    assert meter_result(DepthMeter(), pred, {"depth": gt}) == approx(expected)
    pred[..., 1, 1] = -7.0  # the prediction at the missing pixel does not matter
    assert meter_result(DepthMeter(), pred, {"depth": gt}) == approx(expected)


def test_depth_perfect_and_all_wrong():
    gt = torch.rand(2, 1, 4, 4) + 0.5
    assert meter_result(DepthMeter(), gt.clone(), {"depth": gt}) == {"rmse": 0.0, "abs_rel": 0.0,
                                                                      "delta1": 100.0}
    wrong = meter_result(DepthMeter(), gt * 2, {"depth": gt})
    assert wrong["delta1"] == 0.0 and wrong["abs_rel"] == approx(1.0)
    # a non-positive prediction is clamped for the ratio instead of dividing by zero
    assert meter_result(DepthMeter(), torch.zeros_like(gt), {"depth": gt})["delta1"] == 0.0


def test_depth_pooled_differs_from_mean_of_per_image():
    # image A: 1 valid pixel, error 3; image B: 3 valid pixels, error 1 each
    gt = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    pred = torch.tensor([[[[4.0, 9.0], [9.0, 9.0]]], [[[2.0, 2.0], [2.0, 9.0]]]])
    per_image_mean = (3.0 + 1.0) / 2
    pooled = math.sqrt((9 + 1 + 1 + 1) / 4)  # sqrt(3) = 1.73
    assert pooled != approx(per_image_mean)
    assert meter_result(DepthMeter(), pred, {"depth": gt})["rmse"] == approx(pooled)
    # one image per update: still pooled
    meter = DepthMeter()
    for i in range(2):
        meter.update(pred[i:i + 1], {"depth": gt[i:i + 1]})
    assert meter.compute()["rmse"] == approx(pooled)


def test_depth_bf16_and_low_resolution():
    gt = torch.full((1, 1, 8, 8), 2.0)
    pred = torch.full((1, 1, 2, 2), 2.5, dtype=torch.bfloat16)
    assert meter_result(DepthMeter(), pred, {"depth": gt})["rmse"] == approx(0.5)


# --------------------------------------------------------------------------------------- normals


def normals_batch(*vectors):
    """(1, 3, 1, N) map from a list of 3-vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, 3, 1, len(vectors))


def test_normals_known_angles():
    z = (0.0, 0.0, 1.0)
    gt = normals_batch(z, z, z, (0.0, 0.0, 0.0))  # the last pixel is missing
    # 0 deg, 45 deg (prediction not unit length: normalised first), 90 deg; anything at the missing pixel
    pred = normals_batch((0.0, 0.0, 3.0), (1.0, 0.0, 1.0), (1.0, 0.0, 0.0), (5.0, -1.0, 2.0))
    result = meter_result(NormalsMeter(), pred, {"normals": gt})
    assert result == approx({"mean_angle": 45.0, "median_angle": 45.0, "within_11.25": 100 / 3,
                             "within_22.5": 100 / 3, "within_30": 100 / 3}, abs=1e-4)


def test_normals_exact_median_of_even_count():
    z = (0.0, 0.0, 1.0)
    gt = normals_batch(z, z, z, z)
    pred = normals_batch(z, (1.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # 0, 45, 90, 90
    result = meter_result(NormalsMeter(), pred, {"normals": gt})
    assert result["median_angle"] == approx(67.5, abs=1e-4)  # mean of the middle pair, not 45
    assert result["mean_angle"] == approx(56.25, abs=1e-4)


def test_normals_perfect_and_opposite():
    gt = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    perfect = meter_result(NormalsMeter(), gt * 2.5, {"normals": gt})
    assert perfect["mean_angle"] == approx(0.0, abs=1e-3) and perfect["median_angle"] == approx(0.0, abs=1e-3)
    assert perfect["within_11.25"] == perfect["within_22.5"] == perfect["within_30"] == 100.0
    opposite = meter_result(NormalsMeter(), -gt, {"normals": gt})
    assert opposite["mean_angle"] == approx(180.0, abs=1e-3)
    assert opposite["within_11.25"] == opposite["within_22.5"] == opposite["within_30"] == 0.0


def test_normals_angles_kept_across_updates():
    z = (0.0, 0.0, 1.0)
    meter = NormalsMeter()
    meter.update(normals_batch((1.0, 0.0, 0.0)), {"normals": normals_batch(z)})  # 90
    meter.update(normals_batch(z, z), {"normals": normals_batch(z, z)})  # 0, 0
    assert meter.compute()["median_angle"] == approx(0.0, abs=1e-4)
    assert meter.compute()["mean_angle"] == approx(30.0, abs=1e-4)


# -------------------------------------------------------------------------------------- saliency


def test_saliency_hand_computed_with_beta2():
    gt = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    prob = torch.tensor([0.9, 0.4, 0.6, 0.1]).reshape(1, 1, 1, 4)
    # t = 0.3: predicted {0.9, 0.4, 0.6}: P = 2/3, R = 1 -> F = 1.3 * 2/3 / (0.3 * 2/3 + 1) = 0.7222
    # t = 0.5: predicted {0.9, 0.6}:      P = 1/2, R = 1/2 -> F = 0.5
    # t = 0.7: predicted {0.9}:           P = 1,   R = 1/2 -> F = 1.3 * 0.5 / (0.3 + 0.5) = 0.8125
    # (with beta = 1 the best would be t = 0.3, F1 = 0.8: beta^2 = 0.3 favours precision)
    # MAE = (0.1 + 0.6 + 0.6 + 0.1) / 4 = 0.35
    meter = SaliencyMeter(thresholds=[0.3, 0.5, 0.7])
    result = meter_result(meter, torch.logit(prob), {"sal": gt})
    assert result == approx({"maxF": 81.25, "mae": 0.35})


def test_saliency_perfect_all_wrong_and_ignore():
    gt = (torch.rand(2, 1, 8, 8) > 0.6).float()
    perfect = meter_result(SaliencyMeter(), binary_logits(gt), {"sal": gt})
    assert perfect["maxF"] == approx(100.0) and perfect["mae"] == approx(0.0, abs=1e-4)
    wrong = meter_result(SaliencyMeter(), binary_logits(1 - gt), {"sal": gt})
    assert wrong["maxF"] == 0.0 and wrong["mae"] == approx(1.0, abs=1e-4)
    # wrong predictions at ignored pixels change nothing
    ignored = gt.clone()
    ignored[:, :, :4] = 255
    pred = binary_logits(gt)
    pred[:, :, :4] = -pred[:, :, :4]
    assert meter_result(SaliencyMeter(), pred, {"sal": ignored}) == approx(perfect, abs=1e-4)


# ----------------------------------------------------------------------------------------- edges


def line_map(columns, size=8):
    m = torch.zeros(1, 1, size, size)
    m[..., list(columns)] = 1.0
    return m


def test_edge_shift_by_one_pixel_needs_tolerance():
    gt = line_map([3])
    shifted = binary_logits(line_map([4]))
    assert meter_result(EdgeMeter(tolerance=1), shifted, {"edge": gt}) == approx({"odsF": 100.0})
    assert meter_result(EdgeMeter(tolerance=0), shifted, {"edge": gt})["odsF"] < 100.0
    assert meter_result(EdgeMeter(tolerance=0), binary_logits(gt), {"edge": gt}) == approx({"odsF": 100.0})


def test_edge_hand_computed_precision_recall():
    gt = line_map([3])  # 8 label pixels
    pred = binary_logits(line_map([3, 6]))  # 16 predicted pixels, the 8 of column 6 are 3 px away
    # P = 8/16, R = 8/8 -> F = 2 * 0.5 * 1 / 1.5
    assert meter_result(EdgeMeter(tolerance=1), pred, {"edge": gt}) == approx({"odsF": 200 / 3})
    # far from every edge: 0
    assert meter_result(EdgeMeter(tolerance=1), binary_logits(line_map([6])), {"edge": gt}) == {"odsF": 0.0}


def test_edge_ignored_pixels_are_neither_predictions_nor_labels():
    gt = line_map([3])
    gt[..., 6:] = 255
    pred = line_map([3, 6, 7])  # spurious predictions only inside the ignored region
    assert meter_result(EdgeMeter(tolerance=1), binary_logits(pred), {"edge": gt}) == approx({"odsF": 100.0})
    # predictions at ignored pixels next to a label edge must not make a missed edge look found
    gt2 = line_map([3, 6])
    gt2[..., 4] = 255
    pred2 = line_map([4, 6])  # column 6 found; column 3 only "found" by the ignored column 4
    # P = 8/8 (column 6), R = 8/16 -> F = 2 * 0.5 / 1.5
    result = meter_result(EdgeMeter(tolerance=1), binary_logits(pred2), {"edge": gt2})
    assert result == approx({"odsF": 200 / 3})


def test_edge_ods_picks_one_threshold_for_the_split():
    # image 1 is right at probability 0.8, image 2 only at 0.3; a single threshold serves both
    gt = torch.cat([line_map([2]), line_map([5])])
    prob = torch.cat([line_map([2]) * 0.8, line_map([5]) * 0.3]) + 0.05
    meter = EdgeMeter(tolerance=0, thresholds=[0.2, 0.5])
    # t = 0.2: all 16 label pixels found, nothing else predicted -> F = 100
    assert meter_result(meter, torch.logit(prob), {"edge": gt}) == approx({"odsF": 100.0})


# ----------------------------------------------------------------------------------------- scene


def test_scene_accuracy_ignores_missing():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    scene = torch.tensor([0, 1, 2, -1])  # third wrong, fourth missing -> 2/3
    assert meter_result(SceneMeter(), logits, {"scene": scene}) == approx({"accuracy": 200 / 3})
    logits[3] = torch.tensor([0.0, 9.0, 0.0])
    assert meter_result(SceneMeter(), logits, {"scene": scene}) == approx({"accuracy": 200 / 3})
    assert meter_result(SceneMeter(), logits[:2], {"scene": scene[:2]}) == {"accuracy": 100.0}
    assert meter_result(SceneMeter(), logits[:2], {"scene": torch.tensor([2, 2])}) == {"accuracy": 0.0}
    assert math.isnan(meter_result(SceneMeter(), logits[:2], {"scene": torch.tensor([-1, -1])})["accuracy"])


# ------------------------------------------------------------------------------------- detection

GT_BOXES = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]]),
            torch.tensor([[5.0, 5.0, 30.0, 30.0]])]
GT_LABELS = [torch.tensor([0, 1]), torch.tensor([0])]
DET_BATCH = {"boxes": GT_BOXES, "labels": GT_LABELS, "image": torch.zeros(2, 3, 64, 64)}


def detections(boxes, labels, scores=None):
    return [{"boxes": b, "labels": l, "scores": torch.linspace(0.9, 0.5, len(l)) if scores is None else s}
            for b, l, s in zip(boxes, labels, scores or [None] * len(boxes), strict=True)]


def test_detection_perfect():
    meter = DetectionMeter(3, class_names=["chair", "table", "lamp"])
    assert meter_result(meter, detections(GT_BOXES, GT_LABELS), DET_BATCH) == approx({"map50": 100.0,
                                                                                     "map": 100.0})
    per_class = meter.per_class()
    assert per_class["ap"]["chair"] == approx(100.0) and per_class["ap50"]["table"] == approx(100.0)
    assert math.isnan(per_class["ap"]["lamp"]) and math.isnan(per_class["ap50"]["lamp"])  # no label


def test_detection_iou_064_counts_at_05_only_up_to_060():
    # GT 10x10, detection 10x6.4 inside it: IoU 64/100 = 0.64 passes IoU thresholds 0.50, 0.55, 0.60
    # of the ten 0.50 ... 0.95 -> AP 1 at 3 of them, 0 at the rest: mAP = 30 %, mAP@0.5 = 100 %
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    det = detections([torch.tensor([[0.0, 0.0, 10.0, 6.4]])], [torch.tensor([0])])
    meter = DetectionMeter(2)
    result = meter_result(meter, det, {"boxes": gt, "labels": [torch.tensor([0])]})
    assert result == approx({"map50": 100.0, "map": 30.0}, abs=1e-4)
    assert meter.per_class()["ap50"]["0"] == approx(100.0) and meter.per_class()["ap"]["0"] == approx(30.0)


def test_detection_wrong_class_scores_zero():
    wrong = detections(GT_BOXES, [(l + 2) % 3 for l in GT_LABELS])  # right boxes, wrong classes
    assert meter_result(DetectionMeter(3), wrong, DET_BATCH) == {"map50": 0.0, "map": 0.0}


def test_detection_decodes_raw_outputs_lazily(monkeypatch):
    import mtl_core.models.detection as detection

    calls = []

    def fake_postprocess(det_out, image_size):
        calls.append(tuple(image_size))
        return detections(GT_BOXES, GT_LABELS)

    monkeypatch.setattr(detection, "postprocess", fake_postprocess, raising=False)
    raw = {"logits": torch.zeros(2, 5, 4), "deltas": torch.zeros(2, 5, 4), "priors": torch.zeros(5, 4)}
    assert meter_result(DetectionMeter(3), raw, DET_BATCH) == approx({"map50": 100.0, "map": 100.0})
    assert calls == [(64, 64)]


# ------------------------------------------------------------------------------- suite and specs


@pytest.mark.parametrize("name", TASK_NAMES)
def test_meter_keys_are_the_spec_metrics(name):
    spec = make_task(name)
    assert tuple(make_meter(spec).compute()) == spec.metrics


def fake_batch(b=2, h=16, w=16):
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
    normals[1] = 0  # the second sample has no normals
    return {
        "image": torch.rand(b, 3, h, w, generator=g),
        "semseg": torch.randint(0, 13, (b, h, w), generator=g),
        "depth": torch.rand(b, 1, h, w, generator=g) + 1,
        "normals": normals,
        "edge": (torch.rand(b, 1, h, w, generator=g) > 0.9).float(),
        "sal": (torch.rand(b, 1, h, w, generator=g) > 0.5).float(),
        "scene": torch.tensor([3, -1]),
    }


def test_metric_suite_end_to_end():
    tasks = make_tasks(["semseg", "depth", "normals", "edge", "sal", "scene"])
    batch = fake_batch()
    scene_logits = torch.zeros(2, 6)
    scene_logits[0, 3] = 1.0
    outputs = {  # perfect predictions, in bf16 like an autocast model; edge is auxiliary (deep only)
        "semseg": one_hot_logits(batch["semseg"], 13).bfloat16(),
        "depth": batch["depth"].bfloat16(),
        "normals": batch["normals"] * 3,
        "sal": binary_logits(batch["sal"]),
        "scene": scene_logits,
        "deep": [{"edge": torch.zeros(2, 1, 4, 4)}],
    }
    suite = MetricSuite(tasks)
    suite.update(outputs, batch)
    result = suite.compute()
    assert set(result) == {"semseg", "depth", "normals", "sal", "scene"}  # edge had no final prediction
    assert result["semseg"] == {"miou": 100.0, "pixel_acc": 100.0}
    assert result["depth"]["rmse"] < 0.01 and result["depth"]["delta1"] == 100.0  # bf16 rounding only
    assert result["normals"]["mean_angle"] < 0.01 and result["normals"]["within_11.25"] == 100.0
    assert result["sal"]["maxF"] == approx(100.0)
    assert result["scene"] == {"accuracy": 100.0}
    assert set(suite.per_class()) == {"semseg"}
    suite.reset()
    assert suite.compute() == {}


# ------------------------------------------------------------------------------------------- Δm


def test_delta_m_signs_and_averaging_over_a_tasks_metrics():
    tasks = make_tasks(["semseg", "depth"])
    baselines = {"semseg": {"miou": 40.0, "pixel_acc": 50.0},
                 "depth": {"rmse": 0.5, "abs_rel": 0.2, "delta1": 80.0}}
    # a lower-is-better metric improving (rmse going down) gives a positive Δm
    better = {"depth": {"rmse": 0.4, "abs_rel": 0.2, "delta1": 80.0}}
    assert delta_m(better, baselines, {"depth": tasks["depth"]}, metrics={"depth": ["rmse"]}) == approx(20.0)
    assert delta_m(better, baselines, {"depth": tasks["depth"]}) == approx(20.0 / 3)  # other two unchanged
    assert delta_m({"depth": {"rmse": 0.6}}, baselines, {"depth": {"rmse": False}}) == approx(-20.0)
    # higher-is-better going up is positive too
    assert delta_m({"semseg": {"miou": 44.0}}, baselines, {"semseg": {"miou": True}}) == approx(10.0)

    results = {"semseg": {"miou": 44.0, "pixel_acc": 45.0},
               "depth": {"rmse": 0.4, "abs_rel": 0.25, "delta1": 88.0}}
    # semseg: (+10 % miou, -10 % pixel_acc) / 2 = 0
    # depth:  (+20 % rmse, -25 % abs_rel, +10 % delta1) / 3 = +5/3
    # Δm = (0 + 5/3) / 2 = 5/6; a flat mean over the five metrics would be (10 - 10 + 20 - 25 + 10) / 5 = 1
    assert delta_m(results, baselines, tasks) == approx(5 / 6)
    # the direction-dict form gives the same
    directions = {name: spec.higher_is_better for name, spec in tasks.items()}
    assert delta_m(results, baselines, directions) == approx(5 / 6)
    # selecting metrics per task: semseg miou only -> (10 + 5/3) / 2
    assert delta_m(results, baselines, tasks, metrics={"semseg": ["miou"]}) == approx((10 + 5 / 3) / 2)


def test_delta_m_defaults_to_metrics_present_in_both():
    tasks = make_tasks(["depth"])
    base = {"depth": {"rmse": 0.5, "abs_rel": 0.2}}  # no delta1 in the baseline
    res = {"depth": {"rmse": 0.4, "abs_rel": 0.2, "delta1": 90.0}}
    assert delta_m(res, base, tasks) == approx(10.0)  # (20 + 0) / 2


def test_delta_m_errors():
    tasks = make_tasks(["depth"])
    res = {"depth": {"rmse": 0.4}}
    with pytest.raises(ValueError, match="nonzero baseline"):
        delta_m(res, {"depth": {"rmse": 0.0}}, tasks)
    with pytest.raises(ValueError, match="abs_rel is missing from the results"):
        delta_m(res, {"depth": {"rmse": 0.5, "abs_rel": 0.1}}, tasks, metrics={"depth": ["abs_rel"]})
    with pytest.raises(ValueError, match="no metric present"):
        delta_m(res, {"depth": {"abs_rel": 0.1}}, tasks)
    with pytest.raises(ValueError, match="missing from the baselines"):
        delta_m(res, {}, tasks)
    with pytest.raises(ValueError, match="not among"):
        delta_m(res, {"depth": {"rmse": 0.5}}, tasks, metrics={"semseg": ["miou"]})
