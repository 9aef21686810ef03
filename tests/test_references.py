"""Trivial predictors: the reference rows that make the networks' metrics readable."""

import numpy as np
import pytest

from mtl_core.data.synthetic import SyntheticScenes
from mtl_core.references import trivial_metrics

TASKS = ("semseg", "depth", "normals", "edge", "sal", "scene")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return (SyntheticScenes("train", 12, root=root, workers=1, progress=False),
            SyntheticScenes("val", 6, root=root, workers=1, progress=False))


def test_a_predictor_fitted_on_one_image_is_perfect_on_that_image(data, tmp_path):
    one = SyntheticScenes("train", 1, root=tmp_path, workers=1, progress=False)
    m = trivial_metrics(one, one, TASKS)
    assert m["semseg"]["miou"] == pytest.approx(100) and m["depth"]["rmse"] == pytest.approx(0, abs=1e-5)
    assert m["normals"]["mean_angle"] == pytest.approx(0, abs=0.1) and m["edge"]["odsF"] == pytest.approx(100)
    assert m["sal"]["maxF"] == pytest.approx(100) and m["scene"]["accuracy"] == pytest.approx(100)


def test_constant_depth_rmse_is_the_spread_around_the_per_pixel_training_mean(data):
    train, val = data
    m = trivial_metrics(train, val, ("depth",))
    depth = np.stack([train[i]["depth"].numpy() for i in range(len(train))])
    mean = (depth * (depth > 0)).sum(0) / np.maximum((depth > 0).sum(0), 1)
    target = np.stack([val[i]["depth"].numpy() for i in range(len(val))])
    valid = target > 0
    expected = np.sqrt(np.mean((np.broadcast_to(mean, target.shape)[valid] - target[valid]) ** 2))
    assert m["depth"]["rmse"] == pytest.approx(expected, rel=1e-4)
    # and it is a real reference: far from perfect on other images
    assert m["depth"]["rmse"] > 0.1


def test_unknown_task_is_refused_by_name(data):
    with pytest.raises(ValueError, match="normal'"):  # misspelt
        trivial_metrics(*data, ("depth", "normal"))
    with pytest.raises(ValueError, match="human_parts"):  # a task the dataset does not annotate
        trivial_metrics(*data, ("depth", "human_parts"))


class _Boxes:
    """Two images of two classes: a fake dataset in the synthetic items' format (xyxy pixels, 0-based)."""

    det_classes = ("chair", "lamp")

    def __init__(self):
        import torch

        self.items = [{"image": torch.zeros(3, 64, 64),
                       "boxes": torch.tensor([[10., 10., 30., 30.], [0., 0., 8., 8.]]),
                       "labels": torch.tensor([0, 1])},
                      {"image": torch.zeros(3, 64, 64),
                       "boxes": torch.tensor([[10., 10., 30., 30.], [40., 40., 60., 60.]]),
                       "labels": torch.tensor([0, 1])}]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_trivial_detector_puts_each_class_mean_box_on_every_image():
    # class 0: the same box on both images -> its mean box is exact: AP@0.5 = 100.
    # class 1: boxes at opposite corners -> mean box [20, 20, 34, 34] overlaps neither with IoU >= 0.5
    # (IoU with [40,40,60,60] is 0; with [0,0,8,8] is 0): AP = 0. mAP@0.5 = (100 + 0) / 2.
    data = _Boxes()
    m = trivial_metrics(data, data, ("detection",))["detection"]
    assert m["map50"] == pytest.approx(50.0, abs=0.01)
