"""ROCK's reference losses (github vita-epfl/rock-pytorch, rock/model/losses.py) for task sets with
detection, the unchanged MTI-Net losses of the dense studies, and the detectors' run version.

The known-answer tests work their expected values out by hand from the reference's formulas.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from mtl_core import tasks as task_module
from mtl_core.data.collate import collate_batch
from mtl_core.data.synthetic import LOSS_WEIGHTS, RenderSpec, SyntheticScenes, render_sample, to_tensors
from mtl_core.losses import task_losses
from mtl_core.models import build_model
from mtl_core.models.detection import multibox_loss
from mtl_core.runs import MODEL_VERSIONS, STORE_VERSION, config_hash
from mtl_core.tasks import (
    log_depth_huber_loss,
    loss_convention,
    make_task,
    make_tasks,
    normals_cosine_l2_loss,
    scene_loss,
)
from mtl_core.train import TrainConfig

ROCK_NAMES = ["detection", "scene", "depth", "normals"]
ROCK = make_tasks(ROCK_NAMES)
AUX = ["scene", "depth", "normals"]


# tiny models: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------- the switch and weights
def test_detection_task_sets_take_rocks_losses_and_weights():
    assert loss_convention(ROCK_NAMES) == "rock" and loss_convention(["detection"]) == "rock"
    assert {n: s.weight for n, s in ROCK.items()} == {"detection": 1.0, "scene": 3.0, "depth": 3.0,
                                                      "normals": 30.0}
    assert ROCK["depth"].loss is log_depth_huber_loss and ROCK["normals"].loss is normals_cosine_l2_loss
    assert ROCK["scene"].loss is scene_loss
    # the synthetic benchmark's own weights were tuned for the MTI-Net losses: not applied here
    synthetic = SyntheticScenes.__new__(SyntheticScenes)
    assert {n: s.weight for n, s in make_tasks(ROCK_NAMES, dataset=synthetic).items()} == \
        {n: s.weight for n, s in ROCK.items()}
    # an explicit weight still wins; a subset of the auxiliary tasks keeps the convention
    given = make_tasks(["detection", "depth"], dataset=synthetic, weights={"depth": 0.5})
    assert given["depth"].weight == 0.5 and given["depth"].loss is log_depth_huber_loss


def test_dense_study_specs_are_unchanged():
    names = ["semseg", "depth", "normals", "edge", "sal", "scene", "human_parts"]
    specs = make_tasks(names)
    assert loss_convention(names) == "mtinet"
    expected_losses = {"semseg": task_module.semseg_loss, "depth": task_module.depth_loss,
                       "normals": task_module.normals_loss, "edge": task_module.edge_loss,
                       "sal": task_module.sal_loss, "scene": task_module.scene_loss,
                       "human_parts": task_module.human_parts_loss}
    assert {n: s.loss for n, s in specs.items()} == expected_losses
    assert {n: s.weight for n, s in specs.items()} == {"semseg": 1.0, "depth": 1.0, "normals": 10.0,
                                                       "edge": 50.0, "sal": 5.0, "scene": 1.0,
                                                       "human_parts": 2.0}
    assert specs == {n: make_task(n) for n in names}
    # on the synthetic benchmark its own weights still apply to the dense tasks
    synthetic = make_tasks(names, dataset=SyntheticScenes.__new__(SyntheticScenes))
    assert {n: synthetic[n].weight for n in LOSS_WEIGHTS} == LOSS_WEIGHTS == \
        {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}


# ------------------------------------------------------------------------------------- known answers
def test_depth_log_huber_known_answer():
    # pixels: |log p - log t| = 0.5 (quadratic: 0.5 * 0.5^2), label 20 m clamped to 10 m
    # (|3 - ln 10| < 1: quadratic), |-2 - 0| = 2 (linear: 2 - 0.5), and a missing label (depth 0)
    pred = torch.tensor([math.exp(0.5), math.exp(3.0), math.exp(-2.0), 5.0]).reshape(1, 1, 1, 4)
    label = torch.tensor([1.0, 20.0, 1.0, 0.0]).reshape(1, 1, 1, 4)
    expected = (0.5 * 0.5 ** 2 + 0.5 * (3 - math.log(10)) ** 2 + (2 - 0.5)) / 3
    assert log_depth_huber_loss(pred, {"depth": label}).item() == pytest.approx(expected, rel=1e-5)


def test_normals_cosine_l2_known_answer():
    # per pixel (1 - p.n) + |p - n|^2 with p = pred / |pred|:
    #   (2, 0, 0) vs (0, 1, 0): 1 + 2 = 3;  (0, 0, -3) vs (0, 0, 1): 2 + 4 = 6;
    #   (1, 1, 0) vs (1, 0, 0): (1 - 1/sqrt 2) + ((1/sqrt 2 - 1)^2 + 1/2) = 3 - 3/sqrt 2;
    #   a zero prediction vs (0, 1, 0): 1 + 1 = 2;  a missing label (all zero): left out
    pred = torch.tensor([[2.0, 0, 0], [0, 0, -3], [1, 1, 0], [0, 0, 0], [5, 1, 2]]).T.reshape(1, 3, 1, 5)
    label = torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]]).T.reshape(1, 3, 1, 5)
    expected = (3 + 6 + (3 - 3 / math.sqrt(2)) + 2) / 4
    assert normals_cosine_l2_loss(pred, {"normals": label}).item() == pytest.approx(expected, rel=1e-6)


def test_scene_known_answer():
    # softmax of (0, 0, ln 2) gives class 2 the probability 2/4; of (0, 0, 0) class 0 1/3; label -1 missing
    pred = torch.tensor([[0.0, 0.0, math.log(2)], [0.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
    loss = ROCK["scene"].loss(pred, {"scene": torch.tensor([2, 0, -1])})
    assert loss.item() == pytest.approx((math.log(2) + math.log(3)) / 2, rel=1e-6)


def tiny_detector_output():
    """5 disjoint 0.2 x 0.2 priors on a 100 x 100 image, one class (logits: background, object)."""
    centres = [(0.1, 0.1), (0.5, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)]
    priors = torch.tensor([[x, y, 0.2, 0.2] for x, y in centres])
    logits = torch.zeros(3, 5, 2)
    deltas = torch.full((3, 5, 4), 9.0)  # only the positives' offsets may count
    # image 0: prior 0 positive; negatives 1-4 with object logit ln k, k = 1..4: background CE ln(1 + k)
    logits[0, 1:, 1] = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    deltas[0, 0] = torch.tensor([0.5, 0.0, 2.0, 0.0])
    # image 1: no box; confident wrong logits that would count if its negatives were mined
    logits[1, :, 1] = 5.0
    # image 2: priors 0 and 1 positive, all logits 0 (every CE ln 2)
    deltas[2, 0] = torch.tensor([-3.0, 0.0, 0.0, 0.0])
    deltas[2, 1] = 0.0
    pred = {"logits": logits.requires_grad_(), "deltas": deltas.requires_grad_(), "priors": priors,
            "image_size": (100, 100)}
    batch = {"boxes": [torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.zeros(0, 4),
                       torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 0.0, 60.0, 20.0]])],
             "labels": [torch.tensor([0]), torch.zeros(0, dtype=torch.int64), torch.tensor([0, 0])]}
    return pred, batch


def test_multibox_known_answer():
    pred, batch = tiny_detector_output()
    loss = multibox_loss(pred, batch)
    # image 0, 1 positive: smooth L1 of (0.5, 0, 2, 0) = 0.125 + 1.5; CE: ln 2 (positive) + the 3 hardest
    # of the 4 negatives, ln 3 + ln 4 + ln 5 (ln 2 is left out)
    image0 = (6 * 1.625 + math.log(2 * 3 * 4 * 5)) / 1
    # image 1, no positive: mines nothing and contributes 0
    # image 2, 2 positives: smooth L1 of (-3, 0, 0, 0) = 2.5; CE: 2 positives + min(3 * 2, 3) negatives
    image2 = (6 * 2.5 + 5 * math.log(2)) / 2
    assert loss.item() == pytest.approx((image0 + 0 + image2) / 3, rel=1e-6)  # mean over all 3 images
    loss.backward()
    assert torch.equal(pred["logits"].grad[1], torch.zeros(5, 2))
    assert torch.equal(pred["deltas"].grad[1], torch.zeros(5, 4))
    assert pred["logits"].grad[0, 1].abs().sum() == 0  # the easiest negative of image 0 is not mined
    assert torch.equal(pred["deltas"].grad[0, 1:], torch.zeros(4, 4))  # negatives' offsets: no loss


def test_multibox_batch_without_positives_is_zero():
    pred, batch = tiny_detector_output()
    batch = {"boxes": [torch.zeros(0, 4)] * 3, "labels": [torch.zeros(0, dtype=torch.int64)] * 3}
    loss = multibox_loss(pred, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred["logits"].grad, torch.zeros_like(pred["logits"]))


# ----------------------------------------------------------------------------- missing annotations
def aux_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"scene": torch.randint(0, 6, (2,), generator=g),
            "depth": 0.5 + 4 * torch.rand(2, 1, 8, 8, generator=g),
            "normals": F.normalize(torch.randn(2, 3, 8, 8, generator=g), dim=1)}


def aux_pred(task, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = {"scene": (2, 6), "depth": (2, 1, 2, 2), "normals": (2, 3, 2, 2)}[task]
    pred = torch.randn(shape, generator=g)
    return (pred.exp() if task == "depth" else pred).requires_grad_()


def mark_missing(batch, task, sample):
    batch = {k: v.clone() for k, v in batch.items()}
    batch[task][sample] = -1 if task == "scene" else 0
    return batch


@pytest.mark.parametrize("task", AUX)
def test_rock_losses_mask_a_missing_sample(task):
    pred = aux_pred(task)
    missing_all = mark_missing(mark_missing(aux_batch(), task, 0), task, 1)
    loss = ROCK[task].loss(pred, missing_all)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))

    pred.grad = None
    batch = mark_missing(aux_batch(), task, 1)
    loss = ROCK[task].loss(pred, batch)
    loss.backward()
    alone = ROCK[task].loss(pred[:1], {task: batch[task][:1]})
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)
    assert torch.equal(pred.grad[1], torch.zeros_like(pred.grad[1])) and pred.grad[0].abs().sum() > 0


def test_sensor_domain_missing_annotations_with_rock_losses():
    # the sensor domain's missing_fraction path: a sample without its auxiliary annotations (1.0) next to
    # one with them (0.0, with the sensor's depth holes and invalid normals)
    size = (64, 64)
    present = to_tensors(render_sample(0, RenderSpec(size=size, domain="sensor", missing_fraction=0.0)))
    missing = to_tensors(render_sample(1, RenderSpec(size=size, domain="sensor", missing_fraction=1.0)))
    assert missing["scene"] == -1 and missing["depth"].eq(0).all() and missing["normals"].eq(0).all()
    assert present["depth"].eq(0).any() and present["depth"].gt(0).any()  # holes
    batch = collate_batch([present, missing])
    preds = {t: aux_pred(t) for t in AUX}
    losses = task_losses(preds, batch, {t: ROCK[t] for t in AUX})
    sum(ROCK[t].weight * loss for t, loss in losses.items()).backward()
    for t in AUX:
        alone = ROCK[t].loss(preds[t][:1].detach(), {t: batch[t][:1]})
        assert losses[t].item() == pytest.approx(alone.item(), rel=1e-6), t
        assert torch.equal(preds[t].grad[1], torch.zeros_like(preds[t].grad[1])), t
        assert preds[t].grad[0].abs().sum() > 0, t


# ---------------------------------------------------------------------------------------------- model
def test_rock_model_regresses_log_depth():
    torch.manual_seed(0)
    model = build_model("rock", ROCK, extra_layers=1).eval()
    out = model(torch.randn(2, 3, 64, 64), return_features=True)
    log_depth = out["features"]["task_features"]["depth"].mean(dim=1, keepdim=True)  # intensive pooling
    torch.testing.assert_close(out["depth"], log_depth.exp())
    # the loss sees the log-depth itself (upsampled); a 1 m label has log 0
    upsampled = F.interpolate(log_depth, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(log_depth_huber_loss(out["depth"], {"depth": torch.ones(2, 1, 64, 64)}),
                               F.smooth_l1_loss(upsampled, torch.zeros(2, 1, 64, 64)))


# ------------------------------------------------------------------------------------------- run hashes
def test_run_hash_versions_the_detectors_only(monkeypatch):
    # hashes pinned when the synthetic benchmark's own loss weights entered them (normals 10, edge 50):
    # bumping a detector's model version must not move any other model's
    import mtl_core.train as train

    # as a machine that trains "auto" in fp32 computes them (bf16 adds itself to the hash)
    monkeypatch.setattr(train, "autocast_dtype", lambda precision, device: None)
    assert STORE_VERSION == 6
    assert config_hash(TrainConfig()) == "6f3c93eb8651"
    dense = TrainConfig(model="mtinet", tasks=("semseg", "depth", "normals", "edge"), backbone="hrnet",
                        backbone_options={"widths": (8, 16, 32, 64)},
                        model_options={"task_widths": (8, 16, 16, 16)}, num_train=1000, lr=2e-3, epochs=12,
                        eval_every=3)
    assert config_hash(dense) == "23c024e1a633"
    rock = TrainConfig(model="rock", tasks=tuple(ROCK_NAMES))
    assert set(MODEL_VERSIONS) == {"ssd", "flat_mtl", "rock"}
    assert config_hash(rock) != "8c003987f0db"  # its hash before: stale detector runs are not reused
    before = config_hash(rock)
    monkeypatch.setitem(MODEL_VERSIONS, "rock", MODEL_VERSIONS["rock"] + 1)
    assert config_hash(rock) != before and config_hash(dense) == "23c024e1a633"


def test_run_hash_records_the_resolved_precision_only_when_it_is_not_fp32(monkeypatch):
    """"auto" is fp32 on a CPU and bf16 autocast on a bf16 GPU: the same config must not share one
    stored run between the two, while every fp32 run keeps the hash it had."""
    import mtl_core.train as train

    config = TrainConfig()  # precision "auto"
    monkeypatch.setattr(train, "autocast_dtype", lambda precision, device: None)  # a CPU that chose fp32
    assert train.resolved_precision("auto") == "fp32" and config_hash(config) == "6f3c93eb8651"
    monkeypatch.setattr(train, "autocast_dtype", lambda precision, device: torch.bfloat16)
    assert train.resolved_precision("auto") == "bf16"
    assert config_hash(config) != "6f3c93eb8651"


def test_run_hash_follows_the_synthetic_benchmarks_own_loss_weights(monkeypatch):
    """A config that leaves a task's weight to the dataset (loss_weights {}) trains with LOSS_WEIGHTS:
    changing them must change the hash of exactly the runs that use them, so stored runs trained with
    the old weights are not reused."""
    dense = TrainConfig(model="mtl_baseline", tasks=("semseg", "depth", "normals", "edge"))
    explicit = TrainConfig(model="mtl_baseline", tasks=("semseg", "depth", "normals", "edge"),
                           loss_weights={"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0})
    partly = TrainConfig(model="mtl_baseline", tasks=("semseg", "normals"), loss_weights={"normals": 2.0})
    single_edge = TrainConfig(model="single_task", tasks=("edge",))
    single_depth = TrainConfig(model="single_task", tasks=("depth",))
    rock = TrainConfig(model="rock", tasks=tuple(ROCK_NAMES))  # ROCK's losses keep ROCK's weights
    nyud = TrainConfig(model="mtl_baseline", tasks=("semseg", "normals"), dataset="nyud_mt")
    configs = [dense, explicit, partly, single_edge, single_depth, rock, nyud]
    before = [config_hash(c) for c in configs]
    monkeypatch.setattr(SyntheticScenes, "loss_weights", {**SyntheticScenes.loss_weights, "normals": 3.0,
                                                          "edge": 20.0})
    moved = [config_hash(c) != h for c, h in zip(configs, before, strict=True)]
    assert moved == [True, False, False, False, False, False, False]  # a single task trains at weight 1
    # and what the hash records is what training uses
    assert {n: s.weight for n, s in make_tasks(dense.tasks, dataset=SyntheticScenes).items()} == \
        {"semseg": 1.0, "depth": 1.0, "normals": 3.0, "edge": 20.0}


def test_a_single_task_trains_its_loss_at_weight_one():
    """As the official code's SingleTaskLoss: one loss has no balance to strike, so neither the dataset's
    weights nor the spec's scale it (with Adam the scale is nearly irrelevant, but not under gradient
    clipping or weight decay); an explicit weight still wins, and a task set of two keeps the weights."""
    for name in ("normals", "edge", "semseg"):
        assert make_tasks([name], dataset=SyntheticScenes)[name].weight == 1.0
        assert make_tasks([name])[name].weight == 1.0
    assert make_tasks(["scene"])["scene"].weight == 1.0  # ROCK's scene weight 3 is a balance, too
    assert make_tasks(["edge"], weights={"edge": 7.0})["edge"].weight == 7.0
    pair = make_tasks(["normals", "edge"], dataset=SyntheticScenes)
    assert (pair["normals"].weight, pair["edge"].weight) == (LOSS_WEIGHTS["normals"], LOSS_WEIGHTS["edge"])
