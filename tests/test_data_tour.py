"""The data-tour notebook (executed through papermill) and the plotting / widget helpers it calls."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: tests never open windows

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
import torch

from mtl_core import plots, suite
from mtl_core.data.synthetic import SyntheticScenes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_data_tour.ipynb"
FIGURES = ("semseg_legend.png", "gallery.png", "statistics.png", "domains.png", "sensor.png")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def render_ds(tmp_path_factory):
    return SyntheticScenes("train", 24, root=tmp_path_factory.mktemp("data"), workers=1, progress=False)


@pytest.fixture(scope="module")
def sensor_ds(tmp_path_factory):
    return SyntheticScenes("train", 24, domain="sensor", root=tmp_path_factory.mktemp("data"), workers=1,
                           progress=False)


# ---------------------------------------------------------------- the notebook


def test_notebook_is_committed_clean_with_one_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == suite.KERNEL
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("profile", "seed", "output_dir", "data_dir", "num_gallery"):
        assert f"\n{name} = " in "\n" + tagged[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear outputs before committing"


@pytest.mark.slow
def test_notebook_executes_and_saves_its_figures(tmp_path, monkeypatch):
    # the kernel inherits the environment: no cache is ever written into the repository's data/
    monkeypatch.setenv("MTL_CORE_DATA", str(tmp_path / "env-data"))
    monkeypatch.setenv("MTL_CORE_PROGRESS", "0")
    result = suite.run_notebook("00_data_tour", "ci", tmp_path, {"data_dir": str(tmp_path / "data")})
    assert result.status == "passed", result.error
    out, executed = tmp_path / "00_data_tour", result.output
    assert (out / "summary.md").read_text().startswith("### 00")
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    for name in FIGURES:
        assert (out / name).stat().st_size > 5_000, name
    assert any((tmp_path / "data").iterdir()), "data_dir is where the datasets are cached"
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "median angle between normals-from-depth and rendered normals" in text


# ---------------------------------------------------------------- colours


def test_colorize_semseg_fixed_palette_and_ignore_is_black():
    labels = torch.tensor([[0, 1, 2], [12, 255, 3]])
    rgb = plots.colorize_semseg(labels, 13)
    assert rgb.shape == (2, 3, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.array_equal(rgb[1, 1], [0, 0, 0])
    assert np.array_equal(rgb, plots.colorize_semseg(labels.numpy(), 13))  # same colours every time
    palette = plots.semseg_palette(13)
    assert len({tuple(c) for c in palette}) == 13 and not np.any(np.all(palette == 0, axis=1))
    assert np.array_equal(plots.colorize_semseg(np.array([[40, 39]]), 40)[0, 0], [0, 0, 0])


def test_colorize_depth_missing_is_black_and_valid_is_not():
    depth = torch.tensor([[[0.0, 1.0], [2.5, 6.0]]])  # (1, H, W) as in a dataset item
    rgb = plots.colorize_depth(depth)
    assert rgb.shape == (2, 2, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.array_equal(rgb[0, 0], [0, 0, 0])
    assert (rgb.reshape(-1, 3)[1:].max(axis=1) > 0.2).all()  # no valid depth looks like a hole
    assert not np.allclose(rgb[0, 1], rgb[1, 1])
    assert np.allclose(plots.colorize_depth(depth, vmin=0, vmax=12)[1, 1], plots.colorize_depth(
        np.array([[6.0, 12.0]]), vmin=0, vmax=12)[0, 0])  # a fixed scale compares images


def test_colorize_normals_channel_first_or_last_and_missing_is_grey():
    n = np.zeros((2, 2, 3), dtype=np.float32)
    n[0, 0] = (0, 0, -1)
    n[1, 1] = (1, 0, 0)
    rgb = plots.colorize_normals(n)
    assert np.allclose(rgb[0, 0], (0.5, 0.5, 0.0)) and np.allclose(rgb[1, 1], (1.0, 0.5, 0.5))
    assert np.allclose(rgb[0, 1], plots.MISSING_GREY)
    assert np.allclose(plots.colorize_normals(torch.from_numpy(n).permute(2, 0, 1)), rgb)


# ---------------------------------------------------------------- samples and gallery


def test_show_sample_with_missing_scene_depth_and_no_boxes(sensor_ds, tmp_path):
    sample = sensor_ds[0]
    sample["scene"] = torch.tensor(-1)
    sample["depth"] = torch.zeros_like(sample["depth"])
    sample["boxes"], sample["labels"] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    fig = plots.show_sample(sample, sensor_ds.classes, sensor_ds.det_classes, sensor_ds.scene_classes,
                            save_to=tmp_path / "a" / "b.png")
    assert "missing" in fig.axes[0].get_title()
    assert len(fig.axes) == 6 and not fig.axes[0].patches
    assert any("missing" in t.get_text() for t in fig.axes[2].texts)  # the depth panel is marked
    assert (tmp_path / "a" / "b.png").stat().st_size > 0


def test_show_sample_draws_one_named_box_per_object(render_ds):
    sample = render_ds[1]
    for overlay in plots.OVERLAYS:
        fig = plots.show_sample(sample, render_ds.classes, render_ds.det_classes, render_ds.scene_classes,
                                overlay=overlay, tasks=["depth"])
        assert len(fig.axes) == 2
        if overlay == "boxes":
            names = sorted(t.get_text() for t in fig.axes[0].texts)
            assert names == sorted(render_ds.det_classes[int(k)] for k in sample["labels"])


def test_gallery_and_domain_comparison(render_ds, sensor_ds, tmp_path):
    fig = plots.sample_gallery(render_ds, [0, 1, 2], save_to=tmp_path / "g.png")
    assert len(fig.axes) == 3 * 6 and (tmp_path / "g.png").stat().st_size > 0
    fig = plots.domain_comparison(render_ds, sensor_ds, [0, 1], save_to=tmp_path / "d.png")
    assert len(fig.axes) == 2 * 6 and (tmp_path / "d.png").stat().st_size > 0


def test_normals_agreement_render_normals_are_the_depth_surface(render_ds):
    assert all(plots.normals_agreement(render_ds[i]) < 1.0 for i in range(5))


# ---------------------------------------------------------------- statistics


def test_benchmark_statistics_match_a_direct_count(render_ds, tmp_path):
    fig, stats = plots.benchmark_statistics(render_ds, save_to=tmp_path / "s.png")
    objects, pixels = stats["objects"], stats["pixels"]
    labels = np.concatenate([render_ds.raw(i)["labels"] for i in range(len(render_ds))])
    direct = {c: int((labels == k).sum()) for k, c in enumerate(render_ds.det_classes)}
    counted = objects[objects["boxed"]]["class"].value_counts()
    assert {c: int(counted.get(c, 0)) for c in render_ds.det_classes} == direct
    instances = sum(len(np.unique(render_ds.raw(i)["instance"])) - 1 for i in range(len(render_ds)))
    assert len(objects) == instances
    assert np.allclose(pixels[list(render_ds.classes)].sum(axis=1), 1.0)  # no ignore pixels in renders
    scenes = [render_ds.scene_classes[int(render_ds.raw(i)["scene"])] for i in range(len(render_ds))]
    assert list(pixels["scene"]) == scenes
    presence = stats["presence"]
    assert presence.shape[1] == len(render_ds.det_classes) and ((presence >= 0) & (presence <= 1)).all().all()
    valid_depth = sum(int((render_ds.raw(i)["depth"] > 0).sum()) for i in range(len(render_ds)))
    assert stats["depth_hist"].sum() == valid_depth
    assert (tmp_path / "s.png").stat().st_size > 0
    assert len(plots.benchmark_statistics(render_ds, max_samples=5)[1]["pixels"]) == 5


def test_annotation_coverage_counts_dropped_annotations(render_ds, tmp_path):
    dropped = SyntheticScenes("val", 4, domain="sensor", missing_fraction=1.0, root=tmp_path, workers=1)
    kept = SyntheticScenes("val", 4, domain="sensor", missing_fraction=0.0, root=tmp_path, workers=1)
    table = plots.annotation_coverage({"render": render_ds, "dropped": dropped, "kept": kept})
    assert (table.loc["render"] == 0).all()
    samples = ["samples without depth", "samples without normals", "samples without scene"]
    assert (table.loc["dropped", samples] == 1).all() and (table.loc["kept", samples] == 0).all()
    assert 0 < table.loc["kept", "depth pixels missing"] < table.loc["kept", "normal pixels missing"] < 1


def test_fully_annotated_counts_samples_that_keep_all_three_auxiliary_annotations(render_ds, tmp_path):
    dropped = SyntheticScenes("val", 4, domain="sensor", missing_fraction=1.0, root=tmp_path, workers=1)
    kept = SyntheticScenes("val", 4, domain="sensor", missing_fraction=0.0, root=tmp_path, workers=1)
    some = SyntheticScenes("val", 12, domain="sensor", missing_fraction=0.5, root=tmp_path, workers=1)
    assert plots.fully_annotated(render_ds) == plots.fully_annotated(kept) == 1.0
    assert plots.fully_annotated(dropped) == 0.0
    raws = [some.raw(i) for i in range(len(some))]
    direct = np.mean([r["depth"].any() and r["normals"].any() and r["scene"] >= 0 for r in raws])
    assert plots.fully_annotated(some) == pytest.approx(direct)
    assert plots.fully_annotated(some, max_samples=1) in (0.0, 1.0)


def test_the_missing_fraction_drops_annotations_but_drills_the_same_holes(tmp_path):
    kept = SyntheticScenes("val", 6, domain="sensor", missing_fraction=0.0, root=tmp_path, workers=1)
    some = SyntheticScenes("val", 6, domain="sensor", missing_fraction=0.5, root=tmp_path, workers=1)
    compared, identical = plots.same_holes(kept, some)
    with_depth = sum(bool(some.raw(i)["depth"].any()) for i in range(len(some)))
    assert compared == with_depth and identical == compared
    render = SyntheticScenes("val", 6, root=tmp_path, workers=1)  # no holes at all: masks differ
    assert plots.same_holes(kept, render, max_samples=3) == (3, 0)


def test_furniture_table_matches_the_boxes_and_pixels_of_the_split(render_ds):
    _, stats = plots.benchmark_statistics(render_ds)
    table = plots.furniture_table(stats, render_ds)
    assert set(table.index) == set(render_ds.det_classes)
    labels = np.concatenate([render_ds.raw(i)["labels"] for i in range(len(render_ds))])
    assert table["boxes per image"].sum() * len(render_ds) == pytest.approx(len(labels))
    sized = table["box area (px)"].dropna()
    assert list(sized) == sorted(sized)  # sorted by box area, smallest first
    assert ((table["fill (%)"].dropna() > 0) & (table["fill (%)"].dropna() <= 100)).all()
    k = render_ds.classes.index("chair")
    share = np.mean([np.mean(render_ds.raw(i)["semseg"] == k) for i in range(len(render_ds))]) * 100
    assert table.loc["chair", "pixel share (%)"] == pytest.approx(share)


def test_sensor_statistics_pairs_the_same_pixels(render_ds, sensor_ds):
    fig, df = plots.sensor_statistics(render_ds, sensor_ds, max_samples=8)
    assert len(fig.axes) == 3
    assert ((df["hole"] == 100) == (df["sensor_depth"] == 0)).all()
    kept = df[df["hole"] == 0]
    assert (kept["error_mm"] < 50).all()  # the sensor measures the same room as the render
    assert df["incidence"].between(0, 90.01).mean() > 0.99


# ---------------------------------------------------------------- the widget


def test_sample_browser_builds_and_redraws(render_ds, sensor_ds):
    from mtl_core.widgets import sample_browser

    box = sample_browser({"render": render_ds, "sensor": sensor_ds})
    controls, out = box.children
    index, domain, overlay = controls.children
    assert index.max == len(render_ds) - 1 and list(domain.options) == ["render", "sensor"]
    first = bytes(out.value)
    assert first.startswith(b"\x89PNG")  # the first view is drawn at once
    index.value, domain.value, overlay.value = 3, "sensor", "normals"  # each change redraws
    assert bytes(out.value).startswith(b"\x89PNG") and bytes(out.value) != first
    assert not plt.get_fignums()  # figures are closed once turned into the widget's PNG
    with pytest.raises(ValueError):
        sample_browser({})
