"""The run inspector (mtl_core.inspector): error maps on constructed inputs with known answers, the
views of MTI-Net / ROCK / baseline models with random weights, and finding and loading stored runs."""

import math
import os

import matplotlib

matplotlib.use("Agg")  # before pyplot: tests never open windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mtl_core import inspector
from mtl_core.models import build_model
from mtl_core.runs import RunStore, load_results, run_directory
from mtl_core.train import TrainConfig

TASKS = ("semseg", "depth", "normals", "edge")
SMALL = {"widths": [8, 16, 24, 32]}  # a tiny backbone: the views do not depend on the width


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_sample(h: int = 64, w: int = 64, seed: int = 0) -> dict:
    """A dataset item with every dense label, some of each marked missing, and two boxes."""
    g = torch.Generator().manual_seed(seed)
    semseg = torch.randint(0, 13, (h, w), generator=g)
    semseg[0] = 255
    depth = torch.rand(1, h, w, generator=g) * 4 + 0.5
    depth[:, :2] = 0
    normals = F.normalize(torch.randn(3, h, w, generator=g), dim=0)
    normals[:, :, :3] = 0
    edge = (torch.rand(1, h, w, generator=g) > 0.9).float()
    edge[:, -1] = 255
    return {"image": torch.rand(3, h, w, generator=g), "semseg": semseg, "depth": depth, "normals": normals,
            "edge": edge, "sal": (torch.rand(1, h, w, generator=g) > 0.5).float(), "scene": torch.tensor(2),
            "boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0], [34.0, 10.0, 60.0, 30.0]]),
            "labels": torch.tensor([1, 3]), "index": 7}


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


# ---------------------------------------------------------------- error maps


def test_depth_error_is_the_absolute_difference_and_nan_without_depth():
    target = torch.tensor([[[1.0, 2.0], [0.0, 4.0]]])
    pred = torch.tensor([[[1.5, 2.0], [3.0, 3.0]]])
    np.testing.assert_allclose(inspector.error_map("depth", pred, target), [[0.5, 0.0], [np.nan, 1.0]])


def test_normals_error_is_the_angle_in_degrees_of_the_normalised_prediction():
    x, y = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    target = torch.stack([x, x, torch.zeros(3), x], dim=-1)[:, None]  # (3, 1, 4); pixel 2 has no normal
    pred = torch.stack([y, 2 * x, y, -x], dim=-1)[:, None]  # 90°, 0° (length does not matter), -, 180°
    np.testing.assert_allclose(inspector.error_map("normals", pred, target), [[90.0, 0.0, np.nan, 180.0]],
                               atol=1e-4)


def test_semseg_error_marks_wrong_argmax_pixels_and_ignores_255():
    target = torch.tensor([[0, 1], [255, 2]])
    pred = torch.zeros(3, 2, 2)
    pred[0, 0, 0] = pred[2, 0, 1] = pred[1, 1, 0] = pred[2, 1, 1] = 5.0  # arg-max [[0, 2], [1, 2]]
    np.testing.assert_array_equal(inspector.error_map("semseg", pred, target), [[0.0, 1.0], [np.nan, 0.0]])


def test_edge_error_is_the_distance_between_probability_and_label():
    target = torch.tensor([[[1.0, 1.0], [0.0, 255.0]]])
    pred = torch.tensor([[[0.0, 20.0], [-20.0, 0.0]]])  # probabilities 0.5, ~1, ~0, (ignored)
    np.testing.assert_allclose(inspector.error_map("edge", pred, target), [[0.5, 0.0], [0.0, np.nan]],
                               atol=1e-6)


def test_a_low_resolution_prediction_is_upsampled_to_the_label():
    error = inspector.error_map("depth", torch.full((1, 2, 2), 2.0), torch.full((1, 8, 8), 3.0))
    assert error.shape == (8, 8)
    np.testing.assert_allclose(error, 1.0)


def test_error_map_rejects_a_task_without_a_map():
    with pytest.raises(ValueError, match="scene"):
        inspector.error_map("scene", torch.zeros(6), torch.tensor(1))


def test_image_errors_are_zero_for_a_perfect_prediction():
    sample = make_sample()
    perfect = {"semseg": F.one_hot(sample["semseg"].clamp_max(12), 13).permute(2, 0, 1)[None].float(),
               "depth": sample["depth"][None], "normals": sample["normals"][None] * 3.0}
    errors = inspector.image_errors(sample, perfect)
    assert list(errors) == ["semseg wrong class", "depth |error| (m)", "normals angle (°)"]  # no edge output
    assert all(abs(v) < 1e-3 for v in errors.values())


def test_image_errors_is_nan_when_the_label_is_entirely_missing():
    sample = make_sample()
    sample["depth"] = torch.zeros_like(sample["depth"])
    errors = inspector.image_errors(sample, {"depth": torch.ones(1, 1, 64, 64)})
    assert math.isnan(errors["depth |error| (m)"])


# ---------------------------------------------------------------- the views of each model family


@pytest.fixture(scope="module")
def mtinet_outputs():
    torch.manual_seed(0)
    model = build_model("mtinet", TASKS, backbone_options=SMALL)
    return inspector.predict(model, make_sample())


def test_predict_runs_a_batch_of_one_in_eval_mode_with_features():
    model = build_model("mtinet", TASKS, backbone_options=SMALL).train()
    out = inspector.predict(model, make_sample())
    assert not model.training
    assert out["depth"].shape == (1, 1, 64, 64) and "attention" in out["features"]


def test_mtinet_offers_every_dense_view(mtinet_outputs):
    assert inspector.available_views(mtinet_outputs, make_sample()) == [
        "predictions", "per-scale predictions", "distillation attention"]


def test_prediction_figure_has_ground_truth_prediction_and_error_per_task(mtinet_outputs, tmp_path):
    fig = inspector.prediction_figure(make_sample(), mtinet_outputs, save_to=tmp_path / "p.png")
    titles = [ax.get_title() for ax in image_axes(fig)]
    assert len(titles) == 1 + 3 * len(TASKS)  # the image heads the first column only
    assert titles[0] == "image #7"
    assert [t for t in titles if t.endswith("ground truth")] == [f"{t}: ground truth" for t in TASKS]
    assert sum(t.startswith("error: mean") for t in titles) == len(TASKS)
    assert len(fig.axes) == 1 + 4 * len(TASKS)  # + a colour bar per error map
    assert (tmp_path / "p.png").stat().st_size > 0


def test_deep_predictions_figure_has_a_column_per_scale(mtinet_outputs):
    fig = inspector.deep_predictions_figure(make_sample(), mtinet_outputs)
    axes = image_axes(fig)
    assert len(axes) == len(TASKS) * (1 + 4 + 1)  # ground truth, 4 scales, final
    top = [ax.get_title().split(":")[0] for ax in axes[:6]]
    assert top == ["ground truth", "1/4", "1/8", "1/16", "1/32", "final"]


def test_attention_figure_and_table_cover_every_pair_and_scale(mtinet_outputs):
    fig = inspector.attention_figure(mtinet_outputs, (64, 64))
    pairs = len(TASKS) * (len(TASKS) - 1)
    assert len(image_axes(fig)) == pairs * 4
    table = inspector.attention_table(mtinet_outputs, (64, 64))
    assert table.shape == (pairs, 4) and list(table.columns) == ["1/4", "1/8", "1/16", "1/32"]
    assert "depth ← semseg" in table.index
    assert ((table > 0) & (table < 1)).all().all()  # sigmoid gates


def test_auxiliary_mtinet_tasks_have_deep_predictions_but_no_final_one():
    model = build_model("mtinet", TASKS, backbone_options=SMALL, auxiliary_tasks=("edge",))
    out = inspector.predict(model, make_sample())
    fig = inspector.deep_predictions_figure(make_sample(), out)
    assert len(image_axes(fig)) == len(TASKS) * 5 + 3  # no "final" panel for the auxiliary edge task
    assert "(auxiliary: none)" in [ax.get_title() for ax in fig.axes]


def test_padnet_attention_is_one_scale():
    model = build_model("padnet", ("semseg", "depth"), backbone_options=SMALL, width=8)
    out = inspector.predict(model, make_sample())
    assert inspector.attention_table(out, (64, 64)).shape == (2, 1)


def test_the_baseline_has_predictions_only():
    model = build_model("mtl_baseline", TASKS, backbone_options=SMALL)
    out = inspector.predict(model, make_sample())
    assert inspector.available_views(out, make_sample()) == ["predictions"]
    with pytest.raises(ValueError, match="per-scale"):
        inspector.deep_predictions_figure(make_sample(), out)
    with pytest.raises(ValueError, match="attention"):
        inspector.attention_figure(out)


@pytest.fixture(scope="module")
def rock_outputs():
    torch.manual_seed(0)
    model = build_model("rock", ("detection", "scene", "depth", "normals"), backbone_options=SMALL)
    return inspector.predict(model, make_sample())


def test_rock_offers_auxiliary_predictions_and_detections(rock_outputs):
    assert inspector.available_views(rock_outputs, make_sample()) == ["predictions", "detections"]
    fig = inspector.prediction_figure(make_sample(), rock_outputs)
    titles = [ax.get_title() for ax in image_axes(fig)]
    assert len(titles) == 1 + 3 * 2  # depth and normals; scene and detection are not maps
    assert titles.count("prediction (2×2)") == 2  # the 1/32 base map of a 64x64 image, drawn as it is


def test_detections_are_sorted_and_bounded(rock_outputs):
    found = inspector.detections(rock_outputs, score_thresh=0.0, max_boxes=5)
    assert len(found) == 5
    assert list(found["score"]) == sorted(found["score"], reverse=True)
    assert (found[["x0", "y0", "x1", "y1"]].to_numpy() >= 0).all()
    assert (found[["x0", "x1"]].to_numpy() <= 64).all()


def test_detection_figure_draws_truth_detections_and_scene(rock_outputs):
    sample = make_sample()
    fig = inspector.detection_figure(sample, rock_outputs, det_classes=[f"c{k}" for k in range(10)],
                                     scene_classes=[f"s{k}" for k in range(6)], score_thresh=0.99)
    truth, predicted, scene = fig.axes
    assert len(truth.patches) == 2
    # random weights: no box reaches 0.99, so the 3 best are drawn dashed
    assert len(predicted.patches) == 3 and predicted.patches[0].get_linestyle() == "--"
    assert len(scene.patches) == 6 and "label: s2" in scene.get_title()


# ---------------------------------------------------------------- errors over a split


class Constant(torch.nn.Module):
    """A "model" that predicts the same maps for every image."""

    def __init__(self, outputs: dict):
        super().__init__()
        self.outputs = outputs

    def forward(self, images):
        return {t: v.expand(len(images), *v.shape[1:]) for t, v in self.outputs.items()}


def test_boundary_mask_grows_the_edge_label_by_the_radius_and_ignores_missing_labels():
    edge = torch.zeros(1, 9, 9)
    edge[0, 4, 4] = 1
    edge[0, 0, 0] = 255  # missing, not an edge
    mask = inspector.boundary_mask(edge, radius=1)
    assert mask.sum() == 9 and mask[3:6, 3:6].all()
    assert inspector.boundary_mask(edge[0], radius=2).sum() == 25


def test_boundary_errors_split_the_error_between_edges_and_elsewhere():
    edge = torch.zeros(1, 16, 16)
    edge[0, 8, :] = 1  # a horizontal boundary: rows 7-9 are within 1 px of it
    depth = torch.full((1, 16, 16), 2.0)
    depth[0, :, 0] = 0  # a column without depth: left out of both groups
    near = inspector.boundary_mask(edge, 1)
    pred = torch.full((1, 1, 16, 16), 2.0)
    pred[0, 0][torch.from_numpy(near)] = 2.5  # wrong by 0.5 m near the boundary, exact elsewhere
    samples = [{"image": torch.zeros(3, 16, 16), "depth": depth, "edge": edge} for _ in range(3)]
    table = inspector.boundary_errors(Constant({"depth": pred}), samples, "depth", batch_size=2)
    assert list(table.index) == ["boundary", "elsewhere"]
    assert table.iloc[:, 0].tolist() == pytest.approx([0.5, 0.0])
    assert table["pixels (%)"].tolist() == pytest.approx([100 * 3 / 16, 100 * 13 / 16])
    assert table["error (%)"].tolist() == pytest.approx([100.0, 0.0])
    with pytest.raises(ValueError, match="normals"):
        inspector.boundary_errors(Constant({"depth": pred}), samples, "normals")


def test_scale_errors_pool_every_scale_and_the_final_prediction_over_the_split():
    torch.manual_seed(0)
    model = build_model("mtinet", TASKS, backbone_options=SMALL, auxiliary_tasks=("edge",)).eval()
    samples = [make_sample(seed=k) for k in range(3)]
    table = inspector.scale_errors(model, samples, batch_size=2)
    assert list(table.index) == list(TASKS)
    assert list(table.columns) == ["1/4", "1/8", "1/16", "1/32", "final"]
    assert math.isnan(table.loc["edge", "final"]) and not table.drop(index="edge").isna().any().any()
    errors = [inspector.error_map("depth", inspector.predict(model, s)["deep"][1]["depth"][0], s["depth"])
              for s in samples]  # scale 1: stride 8
    assert table.loc["depth", "1/8"] == pytest.approx(np.nanmean(np.stack(errors)), rel=1e-5)
    with pytest.raises(ValueError, match="per-scale"):
        inspector.scale_errors(build_model("mtl_baseline", TASKS, backbone_options=SMALL), samples)


# ---------------------------------------------------------------- stored runs and the widget


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A runs root holding one complete MTI-Net run (random weights, written as the trainer would)."""
    root = tmp_path_factory.mktemp("runs")
    config = TrainConfig(model="mtinet", tasks=TASKS, backbone_options=SMALL, num_train=16, num_val=2,
                         epochs=1, data_dir=str(tmp_path_factory.mktemp("data")))
    torch.manual_seed(1)
    model = build_model("mtinet", TASKS, backbone_options=SMALL)
    store = RunStore(run_directory(config, root), config)
    store.save_epoch({"epoch": 1, "weight/depth": 1.0}, {"model": model.state_dict()})
    store.save_final({"depth/rmse": 1.0})
    return root, config, model


def test_find_run_prefers_the_exact_config_then_the_same_model_and_data(stored):
    root, config, _ = stored
    table = load_results(root)
    name = run_directory(config, root).name
    assert inspector.find_run(table, config, root) == name
    other_seed = TrainConfig.from_dict({**config.to_dict(), "seed": 5})
    assert inspector.find_run(table, other_seed, root) == name
    for change in ({"model": "padnet"}, {"num_val": 3}):  # another model, other validation images
        assert inspector.find_run(table, TrainConfig.from_dict({**config.to_dict(), **change}), root) is None


def test_find_run_picks_the_full_mtinet_over_its_ablations_whatever_the_row_order(tmp_path):
    """The study's MTI-Net variants all carry the same task_widths in model_options, so "no model options"
    no longer marks the full model: the run whose options are closest to the asked config's must win,
    whichever order the table lists the runs in."""
    widths = {"task_widths": [8, 16, 16, 16]}
    like = TrainConfig(model="mtinet", tasks=TASKS, backbone="hrnet",
                       backbone_options={"widths": [8, 16, 32, 64]}, model_options=widths, num_train=16,
                       num_val=2, epochs=1, seed=0)
    base = {**like.to_dict(), "status": "complete"}
    rows = [{**base, "run": "mtinet-0a", "model_options": {**widths, "fpm": False}},
            {**base, "run": "mtinet-1b", "model_options": {**widths, "num_scales": 3}},
            {**base, "run": "mtinet-2c", "model_options": {**widths, "distillation": False}},
            {**base, "run": "mtinet-3d", "model_options": dict(widths)},  # the full MTI-Net
            {**base, "run": "mtinet-4e", "model_options": dict(widths), "seed": 1}]  # full, another seed
    for order in (rows, rows[::-1], rows[2:] + rows[:2]):
        assert inspector.find_run(pd.DataFrame(order), like, tmp_path) == "mtinet-3d"
    # a run on another backbone (without the study's options) is not preferred either
    rows.append({**base, "run": "mtinet-5f", "model_options": {}, "backbone": "cnn", "backbone_options": {}})
    assert inspector.find_run(pd.DataFrame(rows[::-1]), like, tmp_path) == "mtinet-3d"
    # without that seed's run the other seed's full MTI-Net, still not an ablation or another backbone
    assert inspector.find_run(pd.DataFrame([r for r in rows if r["run"] != "mtinet-3d"]), like, tmp_path) == \
        "mtinet-4e"
    # asked for an ablation, the ablation is found
    no_fpm = TrainConfig.from_dict({**like.to_dict(), "model_options": {**widths, "fpm": False}})
    assert inspector.find_run(pd.DataFrame(rows[::-1]), no_fpm, tmp_path) == "mtinet-0a"


def test_per_scale_views_name_the_strides_of_the_hrnet_backbone():
    """hrnet's pyramid starts at stride 2: at 64x64 its maps are 32, 16, 8 and 4 pixels wide."""
    torch.manual_seed(0)
    model = build_model("mtinet", TASKS, backbone="hrnet", task_widths=(8, 8, 8, 8))
    assert model.backbone.strides == [2, 4, 8, 16]
    out = inspector.predict(model, make_sample())
    fig = inspector.deep_predictions_figure(make_sample(), out)
    top = [ax.get_title().split(":")[0] for ax in image_axes(fig)[:6]]
    assert top == ["ground truth", "1/2", "1/4", "1/8", "1/16", "final"]
    assert list(inspector.attention_table(out, (64, 64)).columns) == ["1/2", "1/4", "1/8", "1/16"]


def test_load_run_restores_the_stored_weights(stored):
    root, config, model = stored
    result = inspector.load_run(run_directory(config, root).name, root)
    assert result.config == config and result.metrics == {"depth/rmse": 1.0}
    loaded = result.load_model()
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="no complete run"):
        inspector.load_run("mtinet-000000000000", root)


@pytest.mark.slow
def test_run_inspector_draws_the_default_run_and_follows_the_view(stored):
    root, config, _ = stored
    widget = inspector.run_inspector(load_results(root), root=root)
    run, controls, message, figure = widget.children
    index, view = controls.children
    assert run.value == run_directory(config, root).name
    assert index.max == 1  # the run's 2 validation images
    assert list(view.options) == ["predictions", "per-scale predictions", "distillation attention"]
    drawn = [bytes(figure.value)]
    view.value = "per-scale predictions"
    drawn.append(bytes(figure.value))
    index.value = 1
    drawn.append(bytes(figure.value))
    assert message.value == ""  # a failure would be shown here instead of raised
    assert all(png.startswith(b"\x89PNG") for png in drawn) and len(set(drawn)) == 3


def test_open_run_keeps_the_model_until_the_run_is_retrained(stored):
    root, config, _ = stored
    name = run_directory(config, root).name
    first = inspector.open_run(name, root)
    assert inspector.open_run(name, root)[1] is first[1]  # the same model object: loaded once
    assert len(first[2]) == 2 and not first[1].training
    checkpoint = run_directory(config, root) / "checkpoint.pt"
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # as if retrained
    assert inspector.open_run(name, root)[1] is not first[1]


def test_run_labels_name_every_field_in_which_runs_of_a_model_differ():
    base = TrainConfig(model="rock", tasks=("detection", "scene", "depth", "normals")).to_dict()
    rows = [{**base, "run": "rock-a"},
            {**base, "run": "rock-b", "train_domains": ("sensor", "render")},
            {**base, "run": "rock-c", "val_domain": "sensor", "missing_fraction": 0.7},
            {**base, "run": "rock-d", "backbone_options": {"dilated": True}},
            {**TrainConfig(model="ssd", tasks=("detection",)).to_dict(), "run": "ssd-a"}]
    labels = inspector.run_labels(pd.DataFrame(rows))
    assert len(set(labels.values())) == 5
    for field in ("train_domains=", "val_domain=", "missing_fraction=", "backbone_options="):
        assert all(field in labels[r] for r in ("rock-a", "rock-b", "rock-c", "rock-d")), field
    assert "train_domains=sensor+render" in labels["rock-b"] and "dilated: True" in labels["rock-d"]
    assert "seed=" not in labels["rock-a"]  # the same in every rock run: not named
    assert labels["ssd-a"] == "ssd · detection — ssd-a"  # alone of its model: nothing to tell apart


@pytest.mark.parametrize("machine_precision", ["bf16", "fp32"])
def test_find_run_prefers_a_run_trained_at_the_precision_auto_resolves_to(tmp_path, monkeypatch,
                                                                          machine_precision):
    """"auto" is bf16 on a CPU where bf16 measured faster and fp32 elsewhere; 06 must show the run the
    notebooks beside it train on this machine, not an older run of the other precision, even when that
    one has the asked seed."""
    monkeypatch.setattr(inspector, "resolved_precision", lambda precision: machine_precision)
    like = TrainConfig(model="mtinet", tasks=TASKS, backbone_options=SMALL, num_train=16, num_val=2,
                       epochs=1, seed=0)
    base = {**like.to_dict(), "status": "complete"}
    rows = [{**base, "run": "mtinet-0a", "trained_precision": "fp32"},
            {**base, "run": "mtinet-1b", "trained_precision": "bf16", "seed": 1}]
    expected = "mtinet-1b" if machine_precision == "bf16" else "mtinet-0a"
    for order in (rows, rows[::-1]):
        assert inspector.find_run(pd.DataFrame(order), like, tmp_path) == expected


def test_load_results_records_the_precision_a_run_trained_at(tmp_path):
    model = build_model("mtinet", TASKS, backbone_options=SMALL)
    for seed, precision in ((0, "bf16"), (1, "fp32"), (2, None)):
        config = TrainConfig(model="mtinet", tasks=TASKS, backbone_options=SMALL, num_train=16, num_val=2,
                             epochs=1, seed=seed)
        store = RunStore(run_directory(config, tmp_path), config)
        record = {"epoch": 1} if precision is None else {"epoch": 1, "precision": precision}
        store.save_epoch(record, {"model": model.state_dict()})
        store.save_final({"depth/rmse": 1.0})
    table = load_results(tmp_path).set_index("seed")
    assert table.loc[0, "trained_precision"] == "bf16"
    assert table.loc[1, "trained_precision"] == "fp32"
    assert pd.isna(table.loc[2, "trained_precision"])  # a history that does not say: unknown, not guessed
