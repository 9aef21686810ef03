"""The bootstrap over validation images: a network's metrics on a resample, pooled from per-image meter
states weighted by how often each image was drawn, are what its meters compute on the drawn images, for
every task with pooled counts; the resamples are paired; the stored-run bootstrap checks its inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_core.bootstrap import DenseBootstrap, ImageMetrics, resample_counts, verdict
from mtl_core.metrics import make_meter
from mtl_core.models import build_model
from mtl_core.tasks import make_tasks

TASKS = ["semseg", "depth", "normals", "edge", "sal", "scene"]


def images(n=6, size=(16, 16), seed=0):
    """Random predictions and labels, one entry per image, with some missing annotations."""
    g = torch.Generator().manual_seed(seed)
    specs = make_tasks(TASKS)
    labels = {"semseg": torch.randint(0, specs["semseg"].channels, (n, *size), generator=g),
              "depth": 0.5 + 5 * torch.rand(n, 1, *size, generator=g),
              "normals": F.normalize(torch.randn(n, 3, *size, generator=g), dim=1),
              "edge": (torch.rand(n, 1, *size, generator=g) < 0.2).float(),
              "sal": (torch.rand(n, 1, *size, generator=g) < 0.4).float(),
              "scene": torch.randint(0, specs["scene"].channels, (n,), generator=g)}
    labels["semseg"][0, :4] = 255
    labels["depth"][1, ..., :3] = 0
    preds = {t: torch.randn(n, spec.channels, *size, generator=g) if spec.kind == "dense"
             else torch.randn(n, spec.channels, generator=g) for t, spec in specs.items()}
    return specs, preds, labels


def as_dataset(labels):
    """The labels as dataset items whose image tells `Replay` which prediction is theirs."""
    return [{"image": torch.full((3, 4, 4), float(i)), **{k: v[i] for k, v in labels.items()}}
            for i in range(len(labels["scene"]))]


class Replay(torch.nn.Module):
    """A 'network' that returns fixed predictions: image i is a constant map of value i."""

    def __init__(self, preds):
        super().__init__()
        self.preds = preds

    def forward(self, image):
        index = image[:, 0, 0, 0].long()
        return {t: p[index] for t, p in self.preds.items()}


@pytest.mark.parametrize("protocol", ["default", "official"])
@pytest.mark.parametrize("task", TASKS)
def test_a_resample_pools_like_the_meter_on_the_drawn_images(task, protocol):
    specs, preds, labels = images()
    scores = ImageMetrics(Replay(preds), as_dataset(labels), {task: specs[task]}, protocol, batch_size=4)
    for order in (np.arange(6), np.array([2, 2, 5, 0, 0, 0])):
        direct = make_meter(specs[task], protocol)
        direct.update(preds[task][order], {k: v[order] for k, v in labels.items()})
        expected = direct.compute()
        pooled = scores.compute(np.bincount(order, minlength=6))[task]
        assert pooled.keys() == expected.keys()
        for name, value in expected.items():
            assert pooled[name] == pytest.approx(value, rel=1e-6, nan_ok=True), name
    assert scores.compute() == scores.compute(np.ones(6, dtype=int))  # None: every image once


def test_a_network_is_scored_as_validation_scores_it():
    from mtl_core.data import collate_batch
    from mtl_core.metrics import MetricSuite

    tasks = make_tasks(("semseg", "depth", "normals", "edge"))
    torch.manual_seed(0)
    net = build_model("mtl_baseline", tasks, backbone_options={"widths": (8, 16, 24, 32)}).eval()
    gen = torch.Generator().manual_seed(1)
    data = [{"image": torch.rand(3, 32, 32, generator=gen),
             "semseg": torch.randint(0, 13, (32, 32), generator=gen),
             "depth": torch.rand(1, 32, 32, generator=gen) * 3 + 0.5,
             "normals": torch.nn.functional.normalize(torch.randn(3, 32, 32, generator=gen), dim=0),
             "edge": (torch.rand(1, 32, 32, generator=gen) > 0.9).float()} for _ in range(5)]
    per_image = ImageMetrics(net, data, tasks, batch_size=2)

    def pooled(indices):
        suite = MetricSuite(tasks)
        batch = collate_batch([data[i] for i in indices])
        with torch.no_grad():
            suite.update(net(batch["image"]), batch)
        return suite.compute()

    def close(a, b):
        return all(a[t][m] == pytest.approx(b[t][m], rel=1e-6, abs=1e-9) for t in b for m in b[t])

    assert close(per_image.compute(), pooled(range(5)))
    counts = [2, 0, 1, 3, 0]  # a bootstrap resample: image 0 twice, image 3 three times
    assert close(per_image.compute(counts), pooled([0, 0, 2, 3, 3, 3]))
    with pytest.raises(ValueError, match="one per image"):
        per_image.compute([1, 1])
    with pytest.raises(ValueError, match="none negative"):
        per_image.compute([2, -1, 1, 2, 1])


def test_tasks_without_an_output_are_left_out_and_detection_is_refused():
    specs, preds, labels = images(n=3)
    data = as_dataset(labels)
    scores = ImageMetrics(Replay({"depth": preds["depth"]}), data, {t: specs[t] for t in ("depth", "edge")})
    assert list(scores.tasks) == ["depth"] and list(scores.compute()) == ["depth"]
    with pytest.raises(ValueError, match="mAP"):
        ImageMetrics(Replay({}), data, make_tasks(["detection"]))


def test_resamples_are_counts_fixed_by_the_seed():
    resamples = resample_counts(5, 7, seed=2)
    assert resamples.shape == (7, 5) and resamples.dtype == np.int64 and (resamples.sum(axis=1) == 5).all()
    assert np.array_equal(resamples, resample_counts(5, 7, seed=2))
    assert not np.array_equal(resamples, resample_counts(5, 7, seed=3))
    assert resample_counts(5, 0).shape == (0, 5)


def test_replicates_must_be_positive():
    with pytest.raises(ValueError, match="replicates"):
        DenseBootstrap(0)


def test_verdict_uses_the_replicates_with_one_seed_and_welch_with_several(recwarn):
    rng = np.random.default_rng(0)
    boot_a, boot_b = 2.0 + 0.1 * rng.standard_normal(200), 1.0 + 0.1 * rng.standard_normal(200)
    one = verdict([2.0], [1.0], "A", "B", boot_a, boot_b)
    assert one.separable and one.better == "A" and one.method.startswith("bootstrap")
    lower = verdict([2.0], [1.0], "A", "B", boot_a, boot_b, higher_is_better=False)
    assert lower.better == "B"
    # no replicates, or a NaN among them (a single-task metric of 0 on a resample): no spread measured
    for reps in (None, np.r_[boot_b[:-1], np.nan]):
        v = verdict([2.0], [1.0], "A", "B", boot_a, reps)
        assert not v.separable and "no spread measured" in v.text
    assert verdict([np.nan], [1.0], "A", "B", boot_a, boot_b) is None  # an undefined Δ: no verdict
    # several seeds: Welch's t over them, the replicates ignored; an exact reference raises no warning
    several = verdict([2.0, 2.1, 1.9], [0.3, 0.3, 0.3], "A", "reference", boot_a, np.zeros(200))
    assert several.separable and several.method.startswith("Welch")
    assert not [w for w in recwarn if "Precision loss" in str(w.message)]


def test_the_trivial_predictor_is_a_model_the_bootstrap_scores_like_any_network(tmp_path):
    """The trivial predictor (references.TrivialPredictor) scored by ImageMetrics on the full validation
    set gives exactly references.trivial_metrics; on a resample it changes, as a network's score does."""
    from mtl_core.data.synthetic import SyntheticScenes
    from mtl_core.references import TrivialPredictor, trivial_metrics

    tasks = ("semseg", "depth", "normals", "edge")
    train = SyntheticScenes("train", 8, root=tmp_path, workers=1, progress=False)
    val = SyntheticScenes("val", 5, root=tmp_path, workers=1, progress=False)
    scores = ImageMetrics(TrivialPredictor(train, tasks), val, make_tasks(tasks, dataset=train), batch_size=2)
    exact = trivial_metrics(train, val, tasks)
    once = scores.compute()
    for t in tasks:
        for name, value in exact[t].items():
            assert once[t][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (t, name)
    assert scores.compute([3, 0, 0, 1, 1])["depth"]["rmse"] != pytest.approx(once["depth"]["rmse"])
