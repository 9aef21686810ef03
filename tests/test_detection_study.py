"""detection_study: SSD map sizes, prior coverage, mAP tables, the computed verdict, and the
evaluation of stored detectors (it must reproduce the metrics the training loop stored)."""

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from mtl_core import detection_study as ds
from mtl_core.models.detection import SSDHead
from mtl_core.runs import RunResult, train_or_load
from mtl_core.train import TrainConfig

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def isolated_data(tmp_path_factory, monkeypatch):
    data = tmp_path_factory.getbasetemp() / "data"  # generated once per session, never in the project
    monkeypatch.setenv("MTL_CORE_DATA", str(data))
    monkeypatch.setenv("MTL_CORE_PROGRESS", "0")
    return data


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()  # tiny models: one thread is as fast and robust to shared cores
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ SSD maps and priors


@pytest.mark.parametrize(("size", "stride", "extra", "expected"), [
    ((64, 64), 32, 3, [(2, 2), (1, 1)]),
    ((64, 64), 16, 3, [(4, 4), (2, 2), (1, 1)]),
    ((64, 64), 16, 1, [(4, 4), (2, 2)]),
    ((96, 128), 16, 3, [(6, 8), (3, 4), (2, 2), (1, 1)]),
    ((96, 128), 32, 3, [(3, 4), (2, 2), (1, 1)]),
])
def test_ssd_feature_sizes_match_the_head(size, stride, extra, expected):
    assert ds.ssd_feature_sizes(size, stride, extra) == expected
    head = SSDHead(8, 3, extra_layers=extra).eval()
    base = torch.zeros(1, 8, size[0] // stride, size[1] // stride)
    assert [tuple(s) for s in head(base, size)["feature_sizes"]] == expected


def test_prior_coverage_known_boxes():
    # one 1x1 level (stride 64 on 64x64, no extra layer): 4 priors centred at (32, 32); the first is
    # a square of side min_scale * 64 = 12.8 px
    exact = [32 - 6.4, 32 - 6.4, 32 + 6.4, 32 + 6.4]
    corner = [0, 0, 4, 4]  # far from every prior: IoU 0
    table = ds.prior_coverage(torch.tensor([exact, corner]), (64, 64), strides=(64,), extra_layers=0)
    row = table.loc["1/64"]
    assert row["priors"] == 4
    assert row["SSD maps"] == "1×1"
    assert row["objects with a prior ≥ 0.5"] == pytest.approx(0.5)
    # the exact box overlaps its own prior (IoU 1) and the 2:1 / 1:2 boxes of the same scale
    # (IoU 1/sqrt(2) ~ 0.71) and the extra square sqrt(0.2) (IoU 0.2 / 1 < 0.5): 3 priors >= 0.5
    assert row["priors ≥ 0.5 per object"] == pytest.approx(3 / 2)


def test_prior_coverage_dilation_helps_small_objects():
    # 12 px objects tiled over a 64x64 image: the stride-16 map (4x4) places priors near far more
    # of them than the stride-32 map (2x2)
    xs = torch.arange(2, 52, 6.0)
    boxes = torch.stack([torch.tensor([x, y, x + 12, y + 12]) for x in xs for y in xs])
    table = ds.prior_coverage(boxes, (64, 64), strides=(32, 16))
    share = table["objects with a prior ≥ 0.5"]
    assert share["1/16"] > share["1/32"]
    assert table.loc["1/16", "priors"] == (16 + 4 + 1) * 4
    assert table.loc["1/32", "priors"] == (4 + 1) * 4


def test_prior_coverage_without_objects_is_nan():
    table = ds.prior_coverage(torch.zeros(0, 4), (64, 64), strides=(32,))
    assert math.isnan(table.loc["1/32", "median best IoU"])


# ------------------------------------------------------------------ tables and the verdict


def fake(metrics_per_seed: list[dict]) -> list[RunResult]:
    return [RunResult(TrainConfig(), Path("."), m, pd.DataFrame(), False) for m in metrics_per_seed]


def test_map_table_mean_std_and_aux_columns():
    results = {
        "SSD": fake([{"detection/map50": 10.0, "detection/map": 4.0},
                     {"detection/map50": 14.0, "detection/map": 6.0}]),
        "ROCK": fake([{"detection/map50": 20.0, "detection/map": 8.0, "scene/accuracy": 50.0},
                      {"detection/map50": 20.0, "detection/map": 8.0, "scene/accuracy": 70.0}]),
    }
    table = ds.map_table(results, aux_tasks=("scene",))
    assert table.loc["SSD", ("mAP@0.5", "mean")] == 12.0
    assert table.loc["SSD", ("mAP@0.5", "std")] == 2.0  # population std over seeds
    assert table.loc["ROCK", ("mAP@[.5:.95]", "std")] == 0.0
    assert table.loc["ROCK", ("scene/accuracy", "mean")] == 60.0
    assert math.isnan(table.loc["SSD", ("scene/accuracy", "mean")])  # SSD has no scene head

    diff = ds.difference_table(table, "SSD")
    assert diff.loc["ROCK", "Δ mAP@0.5 vs SSD"] == 8.0
    assert diff.loc["ROCK", "Δ mAP@[.5:.95] vs SSD"] == 3.0
    assert diff.loc["SSD", "Δ mAP@0.5 vs SSD"] == 0.0
    with pytest.raises(ValueError, match="reference"):
        ds.difference_table(table, "YOLO")


def verdict_table(means: dict, stds: dict) -> pd.DataFrame:
    table = pd.DataFrame({("mAP@0.5", "mean"): means, ("mAP@0.5", "std"): stds})
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def test_ranking_verdict_holds_and_measures_noise():
    table = verdict_table({"ROCK": 30.0, "flat": 25.0, "SSD": 24.5}, {"ROCK": 1.0, "flat": 1.0, "SSD": 1.0})
    holds, text = ds.ranking_verdict(table, ["ROCK", "flat", "SSD"])
    assert holds
    assert "**holds**" in text
    assert "ROCK − flat = +5.00 (beyond seed noise)" in text
    assert "flat − SSD = +0.50 (within seed noise)" in text


def test_ranking_verdict_fails_and_flags_single_seed():
    table = verdict_table({"ROCK": 20.0, "flat": 25.0, "SSD": 10.0}, {"ROCK": 0.0, "flat": 0.0, "SSD": 0.0})
    holds, text = ds.ranking_verdict(table, ["ROCK", "flat", "SSD"])
    assert not holds
    assert "**does not hold**" in text
    assert "ROCK − flat = -5.00" in text
    assert "One seed" in text
    # a tie is not an ordering
    assert not ds.ranking_verdict(verdict_table({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}), ["a", "b"])[0]
    with pytest.raises(ValueError, match="not in the table"):
        ds.ranking_verdict(table, ["ROCK", "YOLO"])


def test_top_detections_keeps_the_best_above_threshold():
    det = {"boxes": torch.arange(16.0).reshape(4, 4), "scores": torch.tensor([0.9, 0.5, 0.2, 0.01]),
           "labels": torch.tensor([3, 1, 2, 0])}
    top = ds.top_detections(det, k=3, min_score=0.1)
    assert top["labels"].tolist() == [3, 1, 2]
    assert ds.top_detections(det, k=2)["labels"].tolist() == [3, 1]
    assert len(ds.top_detections(det, k=5, min_score=0.95)["scores"]) == 0


# ------------------------------------------------------------------ stored detectors


@pytest.fixture(scope="module")
def ssd_run(tmp_path_factory):
    data = tmp_path_factory.getbasetemp() / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTL_CORE_DATA", str(data))
        config = TrainConfig(model="ssd", tasks=("detection",), num_train=32, num_val=16, epochs=2,
                             batch_size=8, lr=2e-3, augment=False,
                             backbone_options={"widths": [8, 16, 24, 32], "dilated": True})
        yield train_or_load(config, root=tmp_path_factory.mktemp("runs"), progress=False)


def test_evaluate_detector_reproduces_the_stored_metrics(ssd_run):
    meter = ds.evaluate_detector(ssd_run)
    metrics = meter.compute()
    assert metrics["map50"] == pytest.approx(ssd_run.metrics["detection/map50"], abs=1e-6)
    assert metrics["map"] == pytest.approx(ssd_run.metrics["detection/map"], abs=1e-6)
    # COCO's mAP@0.5 is the mean AP@0.5 of the classes that have ground truth
    per_class = pd.Series(meter.per_class()["ap50"])
    assert per_class.mean(skipna=True) == pytest.approx(metrics["map50"], abs=1e-4)


def test_per_class_ap_averages_seeds(ssd_run):
    val = ds.validation_set(ssd_run)
    one = ds.per_class_ap({"SSD": [ssd_run]}, dataset=val)
    two = ds.per_class_ap({"SSD": [ssd_run, ssd_run], "again": [ssd_run]}, dataset=val)
    assert list(one.index) == list(val.det_classes)
    pd.testing.assert_series_equal(one["SSD"], two["SSD"])
    pd.testing.assert_series_equal(two["SSD"], two["again"], check_names=False)
    # classes absent from the validation boxes are NaN, the others are percentages
    present = {val.det_classes[int(c)] for i in range(len(val)) for c in val.raw(i)["labels"]}
    assert set(one["SSD"].dropna().index) == present
    assert ((one["SSD"].dropna() >= 0) & (one["SSD"].dropna() <= 100)).all()


def test_predict_and_gallery(ssd_run, tmp_path):
    val = ds.validation_set(ssd_run)
    indices = ds.busy_images(val, 2)
    assert len(indices) == 2
    assert all(len(val.raw(i)["labels"]) >= 2 for i in indices)
    model = ssd_run.load_model()
    preds = ds.predict(model, val, indices, score_thresh=0.0, max_detections=7)
    assert len(preds) == 2
    assert all(len(p["scores"]) <= 7 for p in preds)
    assert all(bool((p["scores"][:-1] >= p["scores"][1:]).all()) for p in preds)  # sorted
    assert all(float(p["boxes"].min()) >= 0 and float(p["boxes"].max()) <= 64 for p in preds)
    fig = ds.detection_gallery(val, {"SSD": preds}, indices, save_to=tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
    assert np.shape(fig.axes) == (4,)  # 2 images x (ground truth, SSD)
    assert fig.axes[0].get_title().endswith("objects")


def test_rock_anatomy_shapes_and_parameter_split():
    from mtl_core.models import build_model
    from mtl_core.tasks import make_tasks

    tasks = make_tasks(("detection", "scene", "depth", "normals"))
    options = {"widths": [8, 16, 24, 32], "dilated": True}
    rock = build_model("rock", tasks, backbone="cnn", backbone_options=options)
    shapes, params = ds.rock_anatomy(rock, (64, 64))
    # base map: 32 channels at 1/16; trunk width min(512, 32) = 32, groups of 32 // 4 = 8 channels
    assert shapes.loc["base map B (backbone's last map)", "shape"] == (32, 4, 4)
    assert shapes.loc["task features F_scene", "shape"] == (6, 4, 4)  # one map per room type
    assert shapes.loc["task features F_depth", "shape"] == (8, 4, 4)
    assert shapes.loc["task features F_normals", "shape"] == (24, 4, 4)  # 3 groups of 8
    assert shapes.loc["refined map R (into the SSD head)", "shape"] == (32, 4, 4)
    assert shapes.loc["prediction scene", "shape"] == (6,)
    assert shapes.loc["prediction normals", "shape"] == (3, 4, 4)
    assert shapes.loc["SSD default boxes", "shape"] == (16 + 4 + 1) * 4  # 4 boxes per cell
    assert params["auxiliary predictors"] == 0  # intensive pooling has no weights
    assert params["ROCK decoders (fusion)"] > 0

    flat = build_model("flat_mtl", tasks, backbone="cnn", backbone_options=options)
    _, flat_params = ds.rock_anatomy(flat, (64, 64))
    assert flat_params["ROCK decoders (fusion)"] == 0  # nothing fused back
    plain = build_model("rock", tasks, backbone="cnn", backbone_options=options, intensive_pooling=False)
    assert ds.rock_anatomy(plain, (64, 64))[1]["auxiliary predictors"] > 0
    ssd = build_model("ssd", make_tasks(("detection",)), backbone="cnn", backbone_options=options)
    ssd_shapes, ssd_params = ds.rock_anatomy(ssd, (64, 64))
    assert ssd_params["ROCK trunk"] == 0
    assert ssd_shapes.loc["refined map R (into the SSD head)", "shape"] == (32, 4, 4)  # = the base map
