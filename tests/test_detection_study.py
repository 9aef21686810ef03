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


# tiny models: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


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
    # one 1x1 level (stride 64 on 64x64, no extra layer) with SSD's own rule (scales 0.2 ... 0.9, ratios
    # {1, 2, 1/2}): 4 priors centred at (32, 32); the first is a square of side min_scale * 64 = 12.8 px
    exact = [32 - 6.4, 32 - 6.4, 32 + 6.4, 32 + 6.4]
    corner = [0, 0, 4, 4]  # far from every prior: IoU 0
    table = ds.prior_coverage(torch.tensor([exact, corner]), (64, 64), strides=(64,), extra_layers=0,
                              first_scale=None, min_scale=0.2, max_scale=0.9, aspect_ratios=(2.0,))
    row = table.loc["1/64"]
    assert row["priors"] == 4
    assert row["SSD maps"] == "1×1"
    assert row["objects with a prior ≥ 0.5"] == pytest.approx(0.5)
    # the exact box overlaps its own prior (IoU 1) and the 2:1 / 1:2 boxes of the same scale
    # (IoU 1/sqrt(2) ~ 0.71), not the extra square sqrt(0.2 * 0.9) (IoU 0.2 / 0.9 < 0.5): 3 priors >= 0.5
    assert row["priors ≥ 0.5 per object"] == pytest.approx(3 / 2)


def test_prior_coverage_finer_base_maps_help_small_objects():
    # 12 px objects tiled over a 64x64 image: with the head's default boxes (ROCK's reference), a 1/4
    # base map (16x16) places priors near far more of them than a 1/16 map (4x4): the default boxes
    # start at 0.07 of the image and need a fine first grid
    xs = torch.arange(2, 52, 6.0)
    boxes = torch.stack([torch.tensor([x, y, x + 12, y + 12]) for x in xs for y in xs])
    table = ds.prior_coverage(boxes, (64, 64), strides=(16, 4))
    share = table["objects with a prior ≥ 0.5"]
    assert share["1/4"] > 0.4 > share["1/16"]
    assert table.loc["1/16", "priors"] == 16 * 4 + 4 * 6 + 1 * 6  # 4 or 6 boxes per cell, by level
    assert table.loc["1/4", "priors"] == 256 * 4 + (64 + 16 + 4) * 6 + 1 * 4
    assert table.loc["1/4", "SSD maps"] == "16×16 → 8×8 → 4×4 → 2×2 → 1×1"


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


def test_map_table_records_seeds_and_bars_draw_error_bars_only_with_a_spread(tmp_path):
    one = {"SSD": fake([{"detection/map50": 10.0, "detection/map": 4.0}]),
           "ROCK": fake([{"detection/map50": 12.0, "detection/map": 5.0}])}
    table = ds.map_table(one)
    assert table.attrs["seeds"] == {"SSD": 1, "ROCK": 1}
    fig = ds.map_bars(table, "one seed", reference="SSD", save_to=tmp_path / "one.png")
    ax = fig.axes[0]
    assert ax.get_title() == "one seed (1 seed)"
    assert all(c.errorbar is None for c in ax.containers if hasattr(c, "errorbar"))

    three = {"SSD": fake([{"detection/map50": v, "detection/map": 4.0} for v in (9.0, 10.0, 11.0)]),
             "ROCK": fake([{"detection/map50": v, "detection/map": 5.0} for v in (11.0, 12.0, 13.0)])}
    fig = ds.map_bars(ds.map_table(three), "three seeds")
    ax = fig.axes[0]
    assert ax.get_title() == "three seeds (mean ± std over 3 seeds)"
    assert sum(c.errorbar is not None for c in ax.containers if hasattr(c, "errorbar")) == 2
    # a table without the seed counts (e.g. rebuilt by hand) must be given them
    bare = ds.map_table(three)
    bare.attrs.clear()
    with pytest.raises(ValueError, match="n_seeds"):
        ds.map_bars(bare, "?")
    assert ds.map_bars(bare, "given", n_seeds=3).axes[0].get_title().endswith("(mean ± std over 3 seeds)")
    assert ds.seed_note({"a": 1, "b": 3}) == "mean ± std over 1–3 seeds, no error bar with 1 seed"
    assert ds.seed_note({"a": 2, "b": 2}, spread=False) == "mean over 2 seeds"


def seeds_of(**variants) -> dict:
    return {name: fake([{"detection/map50": v, "detection/map": v / 2} for v in values])
            for name, values in variants.items()}


def test_compare_map_uses_seeds_then_bootstrap_else_says_not_separable():
    several = seeds_of(ROCK=[29.0, 30.0, 31.0], SSD=[19.0, 20.0, 21.0])
    verdict = ds.compare_map(several, "ROCK", "SSD")
    assert verdict.separable and verdict.better == "ROCK" and "Welch" in verdict.text
    assert ds.compare_map(several, "ROCK", "SSD", metric="mAP@[.5:.95]").difference == pytest.approx(5.0)

    single = seeds_of(ROCK=[30.0], SSD=[29.9])
    verdict = ds.compare_map(single, "ROCK", "SSD")
    assert not verdict.separable and "not separable at this budget" in verdict.text
    spread = np.linspace(0, 1, 50)
    boot = {"ROCK": 30.0 + spread, "SSD": 20.0 + spread}
    verdict = ds.compare_map(single, "ROCK", "SSD", boot)
    assert verdict.separable and verdict.better == "ROCK" and "bootstrap" in verdict.text
    # the bootstrap is of mAP@0.5: another metric with one seed stays undecided
    assert not ds.compare_map(single, "ROCK", "SSD", boot, metric="mAP@[.5:.95]").separable
    # overlapping replicates: not separable
    noisy = {"ROCK": np.linspace(-5, 5, 50), "SSD": np.linspace(5, -5, 50)}
    assert not ds.compare_map(single, "ROCK", "SSD", noisy).separable
    with pytest.raises(ValueError, match="metric"):
        ds.compare_map(single, "ROCK", "SSD", metric="AP")
    with pytest.raises(ValueError, match="YOLO"):
        ds.compare_map(single, "ROCK", "YOLO")


def test_ranking_verdict_holds_only_when_every_gap_passes_the_test():
    results = seeds_of(ROCK=[29.0, 30.0, 31.0], flat=[24.0, 25.0, 26.0], SSD=[14.0, 15.0, 16.0])
    holds, text = ds.ranking_verdict(results, ["ROCK", "flat", "SSD"])
    assert holds
    assert "**holds**" in text
    assert "ROCK 30.00 ± 0.82, flat 25.00 ± 0.82, SSD 15.00 ± 0.82 (mean ± std over 3 seeds)" in text
    assert "ROCK better than flat (Welch t over 3 and 3 seeds" in text
    assert "flat better than SSD" in text


def test_ranking_verdict_not_established_or_contradicted():
    close = seeds_of(ROCK=[29.0, 30.0, 31.0], flat=[24.0, 25.0, 26.0], SSD=[24.0, 24.5, 25.5])
    holds, text = ds.ranking_verdict(close, ["ROCK", "flat", "SSD"])
    assert not holds
    assert "**not established at this budget**" in text
    assert "flat vs SSD: not separable at this budget" in text

    wrong = seeds_of(ROCK=[19.0, 20.0, 21.0], flat=[24.0, 25.0, 26.0], SSD=[9.0, 10.0, 11.0])
    holds, text = ds.ranking_verdict(wrong, ["ROCK", "flat", "SSD"])
    assert not holds and "**does not hold**" in text and "flat better than ROCK" in text

    # one seed and no bootstrap: nothing can be told apart, whatever the gap
    single = seeds_of(ROCK=[20.0], flat=[25.0], SSD=[10.0])
    holds, text = ds.ranking_verdict(single, ["ROCK", "flat", "SSD"])
    assert not holds
    assert "(1 seed)" in text and "±" not in text
    assert text.count("not separable at this budget") == 2
    # with a bootstrap of each one-seed value
    boot = {k: v + np.linspace(-0.5, 0.5, 40) for k, v in {"ROCK": 30.0, "flat": 25.0, "SSD": 10.0}.items()}
    one_each = seeds_of(ROCK=[30.0], flat=[25.0], SSD=[10.0])
    assert ds.ranking_verdict(one_each, ["ROCK", "flat", "SSD"], boot)[0]
    # a tie is not an ordering
    assert not ds.ranking_verdict(seeds_of(a=[1.0, 1.0], b=[1.0, 1.0]), ["a", "b"])[0]
    with pytest.raises(ValueError, match="not in the results"):
        ds.ranking_verdict(single, ["ROCK", "YOLO"])


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


def test_map50_bootstrap_reproduces_the_metric_and_is_paired(ssd_run):
    meter = ds.evaluate_detector(ssd_run)
    n = meter.n_images
    identity = ds.map50_replicates(meter, np.arange(n)[None])
    assert identity[0] == pytest.approx(ssd_run.metrics["detection/map50"], abs=1e-4)
    # an image drawn twice counts twice: the same as evaluating a set with it repeated
    doubled = np.r_[np.arange(n - 1), 0]
    val = ds.validation_set(ssd_run)
    subset = torch.utils.data.Subset(val, doubled.tolist())
    subset.det_classes = val.det_classes
    direct = ds.evaluate_detector(ssd_run, subset).compute()["map50"]
    assert ds.map50_replicates(meter, doubled[None])[0] == pytest.approx(direct, abs=1e-4)
    with pytest.raises(ValueError, match="resamples"):
        ds.map50_replicates(meter, np.zeros((2, n + 1), dtype=int))

    boot = ds.MapBootstrap(30, seed=1)
    replicates = boot({"SSD": [ssd_run], "again": [ssd_run], "two seeds": [ssd_run, ssd_run]})
    assert set(replicates) == {"SSD", "again"}  # several seeds: Welch's t decides, no bootstrap
    assert replicates["SSD"].shape == (30,) and np.isfinite(replicates["SSD"]).any()
    assert boot.resamples.shape == (30, n)
    np.testing.assert_array_equal(replicates["SSD"], replicates["again"])  # the same images, paired
    assert replicates["SSD"].std() > 0  # the images drawn matter
    verdict = ds.compare_map({"SSD": [ssd_run], "again": [ssd_run]}, "SSD", "again", replicates)
    assert not verdict.separable and "bootstrap" in verdict.text
    # another validation set cannot be paired with the first
    fewer = torch.utils.data.Subset(val, list(range(n - 1)))
    fewer.det_classes = val.det_classes
    boot._cache.clear()
    boot.dataset = fewer
    with pytest.raises(ValueError, match="other images"):
        boot.run(ssd_run)


def test_per_class_ap_averages_seeds(ssd_run):
    val = ds.validation_set(ssd_run)
    one = ds.per_class_ap({"SSD": [ssd_run]}, dataset=val)
    two = ds.per_class_ap({"SSD": [ssd_run, ssd_run], "again": [ssd_run]}, dataset=val)
    assert list(one.index) == list(val.det_classes)
    assert two.attrs["seeds"] == {"SSD": 2, "again": 1}
    fig = ds.per_class_bars(two, "AP@0.5")
    assert fig.axes[0].get_title() == "AP@0.5 (mean over 1–2 seeds)"
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
    assert shapes.loc["SSD default boxes", "shape"] == 16 * 4 + (4 + 1) * 6  # 4, then 6 boxes per cell
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
