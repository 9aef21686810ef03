"""Known-answer tests of mtl_core.metrics: every meter on perfect, all-wrong and hand-computed cases."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_core.metrics import (
    OFFICIAL_PRIMARY,
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
    metric_names,
    primary_metrics,
    thin_edges,
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


def test_semseg_official_averages_over_all_classes():
    # MTI-Net's eval_semseg (SemsegMeter.get_score in evaluation/eval_semseg.py) divides tp by
    # max(tp + fp + fn, 1e-8) for every class: class 3, absent from labels and prediction, counts 0.
    # mIoU = (1/3 + 2/3 + 1/2 + 0) / 4 = 37.5 %
    meter = SemsegMeter(4, protocol="official")
    assert meter_result(meter, one_hot_logits(SEG_PRED, 4), {"semseg": SEG_GT}) == approx(
        {"miou": 37.5, "pixel_acc": 400 / 6})
    assert meter.per_class()["iou"]["3"] == 0.0
    assert math.isnan(SemsegMeter(4, protocol="official").compute()["miou"])  # nothing seen yet


def test_human_parts_official_skips_background_only_images():
    # eval_human_parts (evaluation/eval_human_parts.py) skips an image whose labels are all 0 or
    # all 255: how it stores an image without a person. Image 0 is all background, predicted as
    # part 1 everywhere; image 1 is [[0, 1], [1, 1]], predicted right.
    gt = torch.tensor([[[0, 0], [0, 0]], [[0, 1], [1, 1]]])
    pred = torch.tensor([[[1, 1], [1, 1]], [[0, 1], [1, 1]]])
    spec = make_task("human_parts")  # 7 classes
    official = make_meter(spec, "official")
    # only image 1: classes 0 and 1 have IoU 1, the other five 0 -> 2/7
    assert meter_result(official, one_hot_logits(pred, 7), {"human_parts": gt})["miou"] == approx(200 / 7)
    # without the skip: class 0 tp 1, fn 4 -> 1/5; class 1 tp 3, fp 4 -> 3/7; mean over 7 classes
    kept = SemsegMeter(7, key="human_parts", protocol="official")
    assert meter_result(kept, one_hot_logits(pred, 7), {"human_parts": gt})["miou"] == approx(
        (1 / 5 + 3 / 7) / 7 * 100)
    assert not make_meter(spec).skip_background_images  # default protocol: every image counts


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


def test_depth_official_clamps_non_positive_predictions_and_adds_log_rmse():
    # MTI-Net's eval_depth (evaluation/eval_depth.py): pred[pred <= 0] = 1e-9, then RMSE and
    # log-RMSE (natural log) summed over all valid pixels of the split.
    gt = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])  # the 0 is missing
    pred = torch.tensor([[[[2.0, -0.5], [4.0, 7.0]]]])
    # clamped predictions 2, 1e-9, 4 -> squared errors 1, (2 - 1e-9)^2, 0
    # log errors (ln 1 - ln 2)^2, (ln 2 - ln 1e-9)^2, 0
    rmse = math.sqrt((1 + (2 - 1e-9) ** 2) / 3)
    log_rmse = math.sqrt((math.log(2) ** 2 + (math.log(2) - math.log(1e-9)) ** 2) / 3)
    result = meter_result(DepthMeter(protocol="official"), pred, {"depth": gt})
    assert result["rmse"] == approx(rmse) and result["log_rmse"] == approx(log_rmse)
    assert list(result) == ["rmse", "abs_rel", "delta1", "log_rmse"]
    # the default protocol keeps the raw -0.5: sqrt((1 + 2.5^2) / 3), and reports no log-RMSE
    default = meter_result(DepthMeter(), pred, {"depth": gt})
    assert default["rmse"] == approx(math.sqrt(7.25 / 3)) and "log_rmse" not in default


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


def logits_8bit(levels) -> torch.Tensor:
    """Logits whose sigmoid, written as an 8-bit PNG (floor(255 p)), reads back as level / 255."""
    return torch.logit(torch.tensor((np.asarray(levels, dtype=np.float64) + 0.5) / 255)).float()


def test_saliency_official_known_answer():
    # MTI-Net's eval_sal (evaluation/eval_sal.py, with jaccard / precision_recall of
    # evaluation/jaccard.py): thresholds 0.20, 0.25, ..., 0.90, salient = value > t (strict),
    # precision / recall / IoU per image, averaged over images, F1 of the averages, best over t.
    # Image A: labels [1, 1, 0, 0], values [230, 102, 153, 25] / 255 = [0.902, 0.4, 0.6, 0.098]
    # Image B: no salient label, values [0, 0, 60, 0] / 255 (60 / 255 = 0.235)
    gt = torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]]).reshape(2, 1, 1, 4)
    logits = logits_8bit([[230, 102, 153, 25], [0, 0, 60, 0]]).reshape(2, 1, 1, 4)
    # t = 0.20:        A predicts {0.902, 0.4, 0.6}: P 2/3, R 1, IoU 2/3; B predicts 0.235: P 0, R 0, IoU 0
    #                  -> mean P 1/3, R 1/2 -> F = (1/3) / (5/6) = 0.4; mean IoU 1/3
    # t = 0.25 - 0.35: A the same; B predicts nothing and has no label: IoU 1 (P = R = 0)
    #                  -> F 0.4; mean IoU (2/3 + 1) / 2 = 5/6
    # t = 0.40 - 0.55: 0.4 is not > 0.4: A predicts {0.902, 0.6}: P 1/2, R 1/2, IoU 1/3
    #                  -> mean P 1/4, R 1/4 -> F 1/4; mean IoU 2/3
    # t = 0.60 - 0.90: A predicts {0.902}: P 1, R 1/2, IoU 1/2 -> mean P 1/2, R 1/4 -> F 1/3; IoU 3/4
    # maxF = 40 %, mIoU = 5/6 = 83.3 %
    result = meter_result(SaliencyMeter(protocol="official"), logits, {"sal": gt})
    assert result["maxF"] == approx(40.0) and result["miou"] == approx(250 / 3)
    assert list(result) == ["maxF", "mae", "miou"]
    # pooling the pixels instead (default protocol, beta^2 = 0.3, >=) gives another number
    assert meter_result(SaliencyMeter(), logits, {"sal": gt})["maxF"] == approx(81.25)


def test_saliency_official_reads_8_bits_and_thresholds_strictly():
    gt = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    # sigmoid 0.6015 is written as level 153 (floor of 153.4) and read back as 153 / 255 = 0.6
    # exactly, which is not > 0.6: nothing salient -> P = R = 0, IoU 0 (the label is not empty)
    just_above = torch.logit(torch.tensor([0.6015, 0.001])).reshape(1, 1, 1, 2)
    official = meter_result(SaliencyMeter(thresholds=[0.6], protocol="official"), just_above, {"sal": gt})
    assert official["maxF"] == 0.0 and official["miou"] == 0.0
    # level 154 (0.604) is above: P = R = IoU = 1 (F = 2 / (2 + 1e-12))
    above = torch.logit(torch.tensor([0.6045, 0.001])).reshape(1, 1, 1, 2)
    official = meter_result(SaliencyMeter(thresholds=[0.6], protocol="official"), above, {"sal": gt})
    assert official["maxF"] == approx(100.0) and official["miou"] == approx(100.0)
    # the default protocol compares the raw probability with >=: 0.6015 counts
    assert meter_result(SaliencyMeter(thresholds=[0.6]), just_above, {"sal": gt})["maxF"] == approx(100.0)


def test_saliency_official_void_pixels_and_unlabelled_images():
    gt = torch.tensor([[1.0, 0.0, 255.0], [255.0, 255.0, 255.0]]).reshape(2, 1, 1, 3)
    # image 0: right on its two valid pixels, a wrong prediction on the void one;
    # image 1 has no valid pixel at all and is left out (else its IoU 1 would enter the mean)
    logits = logits_8bit([[250, 0, 250], [250, 250, 250]]).reshape(2, 1, 1, 3)
    result = meter_result(SaliencyMeter(protocol="official"), logits, {"sal": gt})
    assert result["maxF"] == approx(100.0) and result["miou"] == approx(100.0)
    assert math.isnan(SaliencyMeter(protocol="official").compute()["miou"])


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


def test_thin_edges_known_shapes():
    # MATLAB bwmorph(..., 'thin', Inf) (Guo & Hall 1989), the example of scikit-image's `thin`
    square = np.zeros((7, 7), dtype=bool)
    square[1:-1, 2:-2] = True
    square[0, 1] = True
    expected = np.zeros((7, 7), dtype=bool)
    expected[[0, 1, 2, 3, 4], [1, 2, 3, 3, 3]] = True
    assert np.array_equal(thin_edges(square), expected)
    # a one-pixel line is already thin (its end pixels have a single neighbour: G2 keeps them)
    line = line_map([3], size=8)[0, 0].bool().numpy()
    assert np.array_equal(thin_edges(line), line)
    # a 3-wide band becomes its centre line, eroded by one pixel at each end
    band = np.zeros((8, 10), dtype=bool)
    band[:, 2:5] = True
    assert np.array_equal(np.argwhere(thin_edges(band)), [[r, 3] for r in range(1, 7)])
    # any leading shape; rows wider than one 64-bit word
    wide = np.zeros((2, 3, 5, 130), dtype=bool)
    wide[..., 1:4, 60:70] = True
    thinned = thin_edges(torch.from_numpy(wide))
    assert thinned.shape == wide.shape and np.array_equal(thinned[1, 2], thin_edges(wide[0, 0]))


def test_thin_edges_agrees_with_pyedgeeval_bwmorph_thin(monkeypatch):
    # pyEdgeEval ships a port of bwmorph 'thin' (its preprocess/thin/bwmorph_thin.py); the package's
    # preprocess/__init__ also imports OpenCV, which this project does not use, so load the file alone.
    # (Its other `binary_thin`, used by its own evaluator, can stop one sub-iteration early.)
    import pyEdgeEval as pyedgeeval
    path = Path(pyedgeeval.__file__).parent / "preprocess" / "thin" / "bwmorph_thin.py"
    spec = importlib.util.spec_from_file_location("bwmorph_thin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(np, "in1d", np.isin, raising=False)  # removed from numpy 2.4, still used there
    rng = np.random.default_rng(0)
    maps = rng.random((60, 23, 70)) < rng.uniform(0.1, 0.9, (60, 1, 1))
    ours = thin_edges(maps)
    for m, t in zip(maps, ours, strict=True):
        assert np.array_equal(module.bwmorph_thin(m.astype(np.uint8)).astype(bool), t)


def bsds(**kwargs):
    return EdgeMeter(protocol="official", **kwargs)


def test_edge_bsds_perfect_thin_edge():
    # at 64 x 64 the tolerance (0.0075 x diagonal = 0.68 px) only lets a pixel match itself: counted
    # directly; at 100 x 100 (1.06 px) pyEdgeEval's assignment runs. Either way P = R = 1.
    for size in (64, 100):
        gt = line_map([size // 2], size=size)
        assert meter_result(bsds(), binary_logits(gt), {"edge": gt}) == approx({"odsF": 100.0})


def test_edge_bsds_one_pixel_shift_depends_on_max_dist_and_size():
    # a pair may match when at most max_dist x diagonal apart (seism's eval_cont, BSDS correspondPixels)
    for size, max_dist, expected in [(64, 0.0075, 0.0),  # 0.0075 * 90.5 = 0.68 px < 1: no pair
                                     (64, 0.011, 0.0),  # 0.011 * 90.5 = 0.996 px: still none
                                     (100, 0.0075, 100.0),  # 0.0075 * 141.4 = 1.06 px: every pixel pairs
                                     (64, 0.0111, 100.0)]:  # 1.005 px
        gt = line_map([size // 2], size=size)
        shifted = binary_logits(line_map([size // 2 + 1], size=size))
        result = meter_result(bsds(max_dist=max_dist), shifted, {"edge": gt})
        assert result == approx({"odsF": expected}), (size, max_dist)
    # the default protocol's 1-pixel tolerance accepts the shift at any size
    gt = line_map([32], size=64)
    assert meter_result(EdgeMeter(), binary_logits(line_map([33], size=64)), {"edge": gt}) == approx(
        {"odsF": 100.0})


def test_edge_bsds_parallel_responses_lose_precision():
    # A blurred edge that peaks on both sides of the label (columns 49 and 51 around the label at 50):
    # the default tolerance credits every one of the 200 predicted pixels (P = 1, F = 100). BSDS
    # thinning leaves both one-pixel lines, and the one-to-one matching (1.06 px at 100 x 100) gives
    # each of the 100 label pixels a single partner: P = 100 / 200, R = 1, F = 2 * 0.5 / 1.5 = 66.7 %.
    gt = line_map([50], size=100)
    pred = binary_logits(line_map([49, 51], size=100))
    assert meter_result(EdgeMeter(), pred, {"edge": gt}) == approx({"odsF": 100.0})
    assert meter_result(bsds(), pred, {"edge": gt}) == approx({"odsF": 200 / 3})


def test_edge_bsds_thick_band_is_thinned_to_its_centre():
    # A solid 3-pixel band centred on the label: thinning turns it into the centre column without its
    # first and last rows (98 pixels), all matched: P = 98 / 98, R = 98 / 100, F = 2 * 0.98 / 1.98.
    # The band is scored by where its centre line lies, not by how many of its pixels are near a label.
    gt = line_map([50], size=100)
    pred = binary_logits(line_map([49, 50, 51], size=100))
    assert meter_result(bsds(), pred, {"edge": gt}) == approx({"odsF": 2 * 0.98 / 1.98 * 100})
    # 64 x 64 keeps the band's centre on the label: exact matches only, same shape of answer
    gt64 = line_map([32], size=64)
    pred64 = binary_logits(line_map([31, 32, 33], size=64))
    recall = 62 / 64
    assert meter_result(bsds(), pred64, {"edge": gt64}) == approx({"odsF": 2 * recall / (1 + recall) * 100})


def test_edge_bsds_same_position_shortcut_and_the_reference_assignment():
    # Below one pixel of tolerance only coinciding pixels may pair, so the largest one-to-one matching
    # is the intersection of the two maps, which the meter counts directly. BSDS's correspondPixels
    # (pyEdgeEval's port) solves the assignment on a sparse, randomly drawn outlier graph (seeded by
    # the clock, as in the original) and now and then leaves a coinciding pair unmatched: its counts
    # are one-to-one, never above the intersection and, on these dense random maps, within 2 % of it.
    from pyEdgeEval import correspond_pixels

    rng = np.random.default_rng(1)
    pairs = matched = 0
    for _ in range(20):
        pred, gt = rng.random((2, 20, 30)) < 0.3
        match_pred, match_gt, _, _ = correspond_pixels(pred, gt, max_dist=0.0075)  # 0.27 px
        n = np.count_nonzero(match_pred)
        assert n == np.count_nonzero(match_gt) <= np.count_nonzero(pred & gt)
        pairs, matched = pairs + np.count_nonzero(pred & gt), matched + n
    assert matched >= 0.98 * pairs
    # the meter: both maps thinned first, then the intersection
    meter = bsds(thresholds=[0.5])
    meter.update(binary_logits(torch.from_numpy(pred)[None, None].float()),
                 {"edge": torch.from_numpy(gt)[None, None].float()})
    assert int(meter.tp_p[0]) == int(meter.tp_r[0]) == np.count_nonzero(thin_edges(pred) & thin_edges(gt))


def test_edge_bsds_official_thresholds_read_8_bits_with_ge():
    # seism reads the PNG (level / 255) and keeps value >= t (read_one_cont_png); the thresholds are
    # the 99 values 0.01 ... 0.99 eval_edge writes. Sigmoid 0.2015 is written as level 51 = 0.2 exactly.
    gt = line_map([4], size=8)
    logits = torch.where(gt > 0, torch.logit(torch.tensor(0.2015)), -10.0)
    # 0.2 >= 0.2: the line is predicted at every t <= 0.20 (and nothing else, level 0) -> F = 100
    assert meter_result(bsds(), logits, {"edge": gt}) == approx({"odsF": 100.0})
    assert bsds().thresholds.tolist() == [k / 100 for k in range(1, 100)]
    # at t = 0.201 the 8-bit value 0.2 is below, although the raw probability 0.2015 is not
    assert meter_result(bsds(thresholds=[0.201]), logits, {"edge": gt}) == {"odsF": 0.0}
    raw = EdgeMeter(matching="bsds", thresholds=[0.201])  # BSDS matching without the 8-bit reading
    assert meter_result(raw, logits, {"edge": gt}) == approx({"odsF": 100.0})


def test_edge_bsds_ignored_pixels_and_pooling():
    gt = line_map([3])
    gt[..., 6:] = 255
    pred = line_map([3, 6, 7])  # spurious predictions only inside the ignored region
    assert meter_result(bsds(), binary_logits(pred), {"edge": gt}) == approx({"odsF": 100.0})
    # counts are pooled over the split: image 1 found (8 of 8), image 2 missed (its 8 predictions 3 px
    # off) -> P = 8 / 16, R = 8 / 16 -> 50 %; an image without a valid pixel changes nothing
    gt2 = torch.cat([line_map([3]), line_map([3]), torch.full((1, 1, 8, 8), 255.0)])
    pred2 = binary_logits(torch.cat([line_map([3]), line_map([6]), line_map([3])]))
    assert meter_result(bsds(), pred2, {"edge": gt2}) == approx({"odsF": 50.0})
    # nothing predicted, or no label edge anywhere: F = 0 (seism's P = 1, R = 0 and P = 0, R = 1)
    assert meter_result(bsds(), binary_logits(torch.zeros(1, 1, 8, 8)), {"edge": line_map([3])}) == {
        "odsF": 0.0}
    assert meter_result(bsds(), binary_logits(line_map([3])), {"edge": torch.zeros(1, 1, 8, 8)}) == {
        "odsF": 0.0}


def test_edge_meter_arguments():
    assert EdgeMeter().matching == "tolerance" and bsds().matching == "bsds"
    assert bsds(max_dist=0.011).max_dist == 0.011
    with pytest.raises(ValueError, match="matching"):
        EdgeMeter(matching="nms")
    with pytest.raises(ValueError, match="max_dist"):
        EdgeMeter(matching="bsds", max_dist=0.0)
    with pytest.raises(ValueError, match="protocol"):
        EdgeMeter(protocol="bsds")


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
    assert tuple(make_meter(spec).compute()) == spec.metrics == metric_names(spec)
    # the official protocol appends its extra metrics (depth log_rmse, saliency miou) and renames none
    official = tuple(make_meter(spec, "official").compute())
    assert official == metric_names(spec, "official") and official[:len(spec.metrics)] == spec.metrics


def test_protocol_is_checked():
    with pytest.raises(ValueError, match="protocol"):
        make_meter(make_task("depth"), "mtinet")
    with pytest.raises(ValueError, match="protocol"):
        MetricSuite(make_tasks(["depth"]), protocol="Official")
    with pytest.raises(ValueError, match="not among"):
        MetricSuite(make_tasks(["depth"]), options={"edge": {"max_dist": 0.011}})


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


def test_metric_suite_official_protocol():
    tasks = make_tasks(["semseg", "depth", "edge", "sal"])
    batch = fake_batch()
    outputs = {"semseg": one_hot_logits(batch["semseg"], 13), "depth": batch["depth"].clone(),
               "edge": binary_logits(batch["edge"]), "sal": binary_logits(batch["sal"])}
    suite = MetricSuite(tasks, protocol="official", options={"edge": {"max_dist": 0.011}})
    assert suite.meters["edge"].matching == "bsds" and suite.meters["edge"].max_dist == 0.011
    suite.update(outputs, batch)
    result = suite.compute()
    assert result["semseg"]["miou"] == approx(100.0)  # all 13 classes occur in the fake labels
    assert result["depth"]["rmse"] == 0.0 and result["depth"]["log_rmse"] == 0.0
    assert result["edge"] == approx({"odsF": 100.0})  # the same random map, thinned the same way
    assert result["sal"]["maxF"] == approx(100.0) and result["sal"]["miou"] == approx(100.0)


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


def test_delta_m_official_uses_mtinet_primary_metrics():
    # calculate_multi_task_performance (evaluation/evaluate_utils.py): one metric per task, saliency
    # by its mIoU, the mean over tasks of the signed relative change (a fraction there, % here).
    tasks = make_tasks(["semseg", "depth", "normals", "edge", "sal", "human_parts"])
    baselines = {"semseg": {"miou": 40.0, "pixel_acc": 70.0}, "depth": {"rmse": 0.5, "log_rmse": 0.2},
                 "normals": {"mean_angle": 20.0}, "edge": {"odsF": 50.0},
                 "sal": {"maxF": 70.0, "miou": 60.0}, "human_parts": {"miou": 50.0}}
    results = {"semseg": {"miou": 44.0, "pixel_acc": 35.0}, "depth": {"rmse": 0.45, "log_rmse": 0.3},
               "normals": {"mean_angle": 22.0}, "edge": {"odsF": 55.0},
               "sal": {"maxF": 63.0, "miou": 63.0}, "human_parts": {"miou": 50.0}}
    # semseg +10, depth rmse +10 (lower), normals -10 (higher angle), edge +10, sal mIoU +5, parts 0
    assert delta_m(results, baselines, tasks, protocol="official") == approx((10 + 10 - 10 + 10 + 5 + 0) / 6)
    assert {t: [m] for t, m in OFFICIAL_PRIMARY.items()} == primary_metrics(tasks, "official")
    # the same through explicit metrics; the default protocol's primaries put sal maxF (-10) instead
    assert delta_m(results, baselines, tasks, primary_metrics(tasks, "official")) == approx(25 / 6)
    assert delta_m(results, baselines, tasks, primary_metrics(tasks)) == approx((10 + 10 - 10 + 10 - 10) / 6)
    # an explicit choice still wins; tasks MTI-Net does not score keep the default choice
    assert delta_m(results, baselines, tasks, {"sal": ["maxF"]}, protocol="official") == approx(10 / 6)
    scene = make_tasks(["scene"])
    assert delta_m({"scene": {"accuracy": 55.0}}, {"scene": {"accuracy": 50.0}}, scene,
                   protocol="official") == approx(10.0)
    with pytest.raises(ValueError, match="sal/miou is missing from the results"):
        delta_m({**results, "sal": {"maxF": 63.0}}, baselines, tasks, protocol="official")


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
