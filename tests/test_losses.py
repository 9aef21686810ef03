"""Masked task losses (mtl_core.tasks) and deep supervision (mtl_core.losses.task_losses).

The dense losses reproduce the official MTI-Net code (losses/loss_functions.py of
Multi-Task-Learning-PyTorch); the known-answer tests work their expected values out by hand from the
official formulas. Detection is left out: its loss is tested with the detector.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from mtl_core.losses import task_losses
from mtl_core.tasks import make_tasks

DENSE = ["semseg", "depth", "normals", "edge", "sal", "human_parts"]
ALL = DENSE + ["scene"]
TASKS = make_tasks(ALL)
B, H, W = 2, 16, 16


def make_batch(seed=0):
    """A fully annotated batch following the batch-dict conventions."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(B, 3, H, W, generator=g),
        "semseg": torch.randint(0, TASKS["semseg"].channels, (B, H, W), generator=g),
        "depth": torch.rand(B, 1, H, W, generator=g) * 5 + 0.5,
        "normals": F.normalize(torch.randn(B, 3, H, W, generator=g), dim=1),
        "edge": (torch.rand(B, 1, H, W, generator=g) > 0.8).float(),
        "sal": (torch.rand(B, 1, H, W, generator=g) > 0.5).float(),
        "human_parts": torch.randint(0, TASKS["human_parts"].channels, (B, H, W), generator=g),
        "scene": torch.randint(0, TASKS["scene"].channels, (B,), generator=g),
    }


def make_pred(task, seed=1, scale=1):
    """A leaf prediction tensor for `task` (dense ones at 1/scale resolution)."""
    g = torch.Generator().manual_seed(seed)
    c = TASKS[task].channels
    shape = (B, c) if task == "scene" else (B, c, H // scale, W // scale)
    pred = torch.randn(shape, generator=g)
    if task == "depth":
        pred = pred.abs() * 3
    return pred.requires_grad_(True)


def mark_missing(batch, task, where):
    """Mark the annotations of `task` missing where the (B, H, W) / (B,) bool mask `where` is set."""
    batch = dict(batch)
    target = batch[task].clone()
    if task in ("semseg", "human_parts"):
        target[where] = 255
    elif task == "scene":
        target[where] = -1
    elif task in ("depth", "normals"):  # depth 0, normals all-zero vector
        target.masked_fill_(where[:, None], 0.0)
    else:  # edge, sal
        target.masked_fill_(where[:, None], 255.0)
    batch[task] = target
    return batch


def loss_and_grad(task, pred, batch):
    loss = TASKS[task].loss(pred, batch)
    loss.backward()
    return loss, pred.grad


def pixel_grad(grad):
    """Gradient magnitude per pixel (B, H, W), or per sample (B,) for scene, summed over channels."""
    return grad.abs().sum(dim=1)


@pytest.mark.parametrize("task", ALL)
def test_all_missing_gives_exact_zero_and_zero_gradient(task):
    where = torch.ones(B, dtype=torch.bool) if task == "scene" else torch.ones(B, H, W, dtype=torch.bool)
    batch = mark_missing(make_batch(), task, where)
    pred = make_pred(task)
    loss, grad = loss_and_grad(task, pred, batch)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    assert grad is not None and torch.equal(grad, torch.zeros_like(pred))


@pytest.mark.parametrize("task", ALL)
def test_a_missing_sample_is_as_if_absent(task):
    # sample 1 entirely unannotated: the loss is that of sample 0 alone, sample 1 gets no gradient
    where = torch.tensor([False, True])
    if task != "scene":
        where = where[:, None, None].expand(B, H, W)
    batch = mark_missing(make_batch(), task, where)
    pred = make_pred(task)
    loss, grad = loss_and_grad(task, pred, batch)
    alone = TASKS[task].loss(pred[:1], {k: v[:1] for k, v in batch.items()})
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    assert (pixel_grad(grad[:1]) > 0).all()


def restrict(tensor, valid):
    """The valid pixels of a (B, C, H, W) map (or (B, H, W) semseg labels) as a one-row image
    (1, C, 1, N): the same batch restricted to its annotated pixels."""
    if tensor.dim() == 3:
        return tensor[valid].reshape(1, 1, -1)
    return tensor.movedim(1, -1)[valid].T.reshape(1, tensor.shape[1], 1, -1)


@pytest.mark.parametrize("task", DENSE)
def test_partially_missing_pixels(task):
    where = torch.rand(B, H, W, generator=torch.Generator().manual_seed(2)) < 0.4
    batch = mark_missing(make_batch(), task, where)
    pred = make_pred(task)
    loss, grad = loss_and_grad(task, pred, batch)

    # the same as the loss on the annotated pixels only
    valid = ~where
    restricted_batch = {task: restrict(batch[task], valid)}
    restricted = TASKS[task].loss(restrict(pred.detach(), valid), restricted_batch)
    assert loss.item() == pytest.approx(restricted.item(), rel=1e-5)

    # predictions at missing pixels do not matter
    other = pred.detach() + torch.where(where[:, None], 7.0 * torch.randn_like(pred), 0.0)
    assert TASKS[task].loss(other, batch).item() == pytest.approx(loss.item(), rel=1e-6)

    # gradient: exactly zero at the missing pixels, nonzero at every annotated one
    magnitude = pixel_grad(grad)
    assert torch.equal(magnitude[where], torch.zeros_like(magnitude[where]))
    assert (magnitude[valid] > 0).all()


def test_partially_missing_scene_labels():
    batch = mark_missing(make_batch(), "scene", torch.tensor([True, False]))
    pred = make_pred("scene")
    loss, grad = loss_and_grad("scene", pred, batch)
    assert loss.item() == pytest.approx(F.cross_entropy(pred[1:], batch["scene"][1:]).item(), rel=1e-6)
    assert torch.equal(grad[0], torch.zeros_like(grad[0])) and (grad[1].abs() > 0).all()


def test_depth_loss_is_the_mean_absolute_error_of_valid_pixels():
    # official DepthLoss (L1): |2-1| + |2-2| + |1-4| over the 3 valid pixels; depth 0 is missing
    gt = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]])
    pred = torch.tensor([[[[2.0, 2.0], [1.0, 9.0]]]])
    assert TASKS["depth"].loss(pred, {"depth": gt}).item() == pytest.approx((1 + 0 + 3) / 3)


LN3 = math.log(3.0)


def known(loss, pred, batch):
    """The loss value, after checking it is finite and has a finite gradient."""
    pred = pred.clone().requires_grad_(True)
    value = loss(pred, batch)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
    return value.item()


def test_semseg_loss_known_answer():
    # official SoftMaxwithLoss: mean over non-255 pixels of -log softmax(logits)[label]. Two classes,
    # a 2x2 map:
    #   (0, 0)     label 0: p = 1/2 -> ln 2
    #   (ln 3, 0)  label 1: p = 1/4 -> ln 4
    #   (0, ln 3)  label 1: p = 3/4 -> ln(4/3)
    #   (9, -9)    label 255: ignored
    # mean over 3 pixels = (ln 2 + ln 4 + ln(4/3)) / 3 = ln(32/3) / 3
    logits = torch.tensor([[[0.0, LN3], [0.0, 9.0]],
                           [[0.0, 0.0], [LN3, -9.0]]])[None]
    labels = torch.tensor([[[0, 1], [1, 255]]])
    semseg = make_tasks(["semseg"])["semseg"]
    padded = torch.cat([logits, torch.full((1, semseg.channels - 2, 2, 2), -1e4)], dim=1)
    assert known(semseg.loss, padded, {"semseg": labels}) == pytest.approx(math.log(32 / 3) / 3, rel=1e-6)


@pytest.mark.parametrize("classes", [13, 40])  # the synthetic benchmark's, NYUD's
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_semseg_loss_and_gradient_match_the_official_formula_in_either_layout(classes, layout):
    # the loss resizes with mtl_core.resize (not F.interpolate) and lays out its inputs for speed; value
    # and gradient must be the official formula's (F.interpolate bilinear to the label size, then the
    # mean over labelled pixels of -log_softmax over dim 1 at the label) in either layout
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, classes, 4, 5, generator=g)
    labels = torch.randint(0, classes, (2, 8, 10), generator=g)
    labels[0, :3] = 255
    spec = make_tasks(["semseg"])["semseg"]

    reference = logits.clone().requires_grad_(True)
    up = F.interpolate(reference, size=(8, 10), mode="bilinear", align_corners=False)
    picked = -F.log_softmax(up, dim=1).gather(1, labels.clamp(max=classes - 1)[:, None])[:, 0]
    expected = picked[labels != 255].mean()
    expected.backward()

    pred = logits.contiguous(memory_format=layout).requires_grad_(True)
    value = spec.loss(pred, {"semseg": labels})
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(pred.grad, reference.grad, rtol=1e-5, atol=1e-7)


def test_human_parts_loss_known_answer():
    # official SoftMaxwithLoss again, 3 classes on a 1x2 map:
    #   (0, 0, 0)    label 2: p = 1/3 -> ln 3
    #   (ln 2, 0, 0) label 0: p = 2/4 -> ln 2
    # mean = (ln 3 + ln 2) / 2 = ln(6) / 2
    spec = make_tasks(["human_parts"])["human_parts"]
    logits = torch.full((1, spec.channels, 1, 2), -1e4)
    logits[0, :3, 0, 0] = 0.0
    logits[0, :3, 0, 1] = torch.tensor([math.log(2.0), 0.0, 0.0])
    labels = torch.tensor([[[2, 0]]])
    assert known(spec.loss, logits, {"human_parts": labels}) == pytest.approx(math.log(6) / 2, rel=1e-6)

    # a second image without a person (all 255, as the official pipeline makes it) changes nothing
    pair = torch.cat([logits, torch.randn_like(logits)]).requires_grad_(True)
    both = torch.cat([labels, torch.full_like(labels, 255)])
    loss = spec.loss(pair, {"human_parts": both})
    loss.backward()
    assert loss.item() == pytest.approx(math.log(6) / 2, rel=1e-6)
    assert torch.equal(pair.grad[1], torch.zeros_like(pair.grad[1]))


def test_normals_loss_known_answer():
    # official NormalsLoss(normalize=True, L1): L1 between pred / |pred| and the label, summed over the
    # valid elements and divided by their number (3 per valid pixel). A 1x3 map:
    #   pred (3, 0, 4) -> (0.6, 0, 0.8), label (0, 0, 1): 0.6 + 0 + 0.2 = 0.8
    #   label (0, 0, 0): missing, whatever the prediction
    #   pred (0, 2, 0) -> (0, 1, 0),     label (1, 0, 0): 1 + 1 + 0 = 2
    # (0.8 + 2) / 6 valid elements = 2.8 / 6 (a per-pixel sum over components would be 3x that)
    pred = torch.tensor([[3.0, 5.0, 0.0], [0.0, -1.0, 2.0], [4.0, 7.0, 0.0]])[None, :, None]
    label = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])[None, :, None]
    assert known(TASKS["normals"].loss, pred, {"normals": label}) == pytest.approx(2.8 / 6, rel=1e-6)


def bce(logit, label):
    """Binary cross-entropy of one logit, for the hand computations."""
    p = 1 / (1 + math.exp(-logit))
    return -math.log(p if label else 1 - p)


# A 2x2 map for the balanced BCE: logits and labels, one pixel ignored (255). Per-pixel BCE:
#   logit  ln 3, label 1: -ln(3/4) = ln(4/3)
#   logit  0,    label 0: ln 2
#   logit -ln 3, label 0: -ln(1 - 1/4) = ln(4/3)
#   logit  5,    label 255: ignored, so numel = 3 annotated pixels
BCE_LOGITS = torch.tensor([[[[LN3, 0.0], [-LN3, 5.0]]]])
BCE_LABELS = torch.tensor([[[[1.0, 0.0], [0.0, 255.0]]]])
POS = math.log(4 / 3)
NEG = math.log(2) + math.log(4 / 3)


def test_bce_hand_values():
    assert bce(LN3, 1) == pytest.approx(math.log(4 / 3)) and bce(-LN3, 0) == pytest.approx(math.log(4 / 3))
    assert bce(0.0, 0) == pytest.approx(math.log(2))


def test_edge_loss_known_answer():
    # official BalancedCrossEntropyLoss(pos_weight=0.95): (0.95 * sum_pos + 0.05 * sum_neg) / numel
    expected = (0.95 * POS + 0.05 * NEG) / 3
    assert known(TASKS["edge"].loss, BCE_LOGITS, {"edge": BCE_LABELS}) == pytest.approx(expected, rel=1e-6)


def test_sal_loss_known_answer():
    # official BalancedCrossEntropyLoss without pos_weight: w = #negatives / #pixels = 2/3 here
    expected = (2 / 3 * POS + 1 / 3 * NEG) / 3
    assert known(TASKS["sal"].loss, BCE_LOGITS, {"sal": BCE_LABELS}) == pytest.approx(expected, rel=1e-6)


def test_sal_balance_is_computed_over_the_batch():
    # image 0 all salient, image 1 all background, logits 0 (BCE ln 2 everywhere): over the batch
    # w = 2/4, so loss = (1/2 * 2 ln 2 + 1/2 * 2 ln 2) / 4 = ln(2) / 2. Balancing each image on its
    # own would weight each image's only class by 0 and give 0.
    labels = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 0.0]]]])
    assert known(TASKS["sal"].loss, torch.zeros(2, 1, 1, 2), {"sal": labels}) == pytest.approx(
        math.log(2) / 2, rel=1e-6)


def test_sal_batch_of_one_class_gives_zero_as_officially():
    # every annotated pixel positive: w = 0 negatives / 3 pixels = 0, so both terms vanish (the
    # official balancing gives the same); the gradient is exactly 0 too, consistent with "loss 0 =
    # nothing to learn from this batch"
    labels = torch.tensor([[[[1.0, 1.0], [1.0, 255.0]]]])
    pred = torch.randn(1, 1, 2, 2, requires_grad=True)
    loss = TASKS["sal"].loss(pred, {"sal": labels})
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_balanced_bce_counts_annotated_pixels_only():
    # the ignored pixel is as if absent: the loss equals that of the 3 annotated pixels as a 1x3 map
    row_logits = torch.tensor([[[[LN3, 0.0, -LN3]]]])
    row_labels = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    for task in ("edge", "sal"):
        full = TASKS[task].loss(BCE_LOGITS, {task: BCE_LABELS})
        assert full.item() == pytest.approx(TASKS[task].loss(row_logits, {task: row_labels}).item(), rel=1e-6)
    # fully annotated: numel is every pixel of the batch, as in the official code
    labels = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    expected = (0.95 * POS + 0.05 * (NEG + bce(5.0, 0))) / 4
    assert TASKS["edge"].loss(BCE_LOGITS, {"edge": labels}).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("task", DENSE)
def test_quarter_resolution_predictions_are_upsampled(task):
    batch = make_batch()
    pred = make_pred(task, scale=4)
    loss, grad = loss_and_grad(task, pred, batch)
    upsampled = F.interpolate(pred.detach(), size=(H, W), mode="bilinear", align_corners=False)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(TASKS[task].loss(upsampled, batch).item(), rel=1e-5)
    assert grad.shape == pred.shape and grad.abs().sum() > 0


def test_bf16_predictions_give_a_float32_loss():
    loss = TASKS["depth"].loss(make_pred("depth").detach().bfloat16(), make_batch())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_task_losses_sums_deep_supervision_and_handles_auxiliary_tasks():
    batch = make_batch()
    tasks = {name: TASKS[name] for name in ("depth", "edge")}
    final = make_pred("depth", seed=3)
    deep1, deep2 = make_pred("depth", seed=4, scale=2), make_pred("depth", seed=5, scale=4)
    edge_deep = make_pred("edge", seed=6, scale=4)
    # edge is an auxiliary task: predicted only at an intermediate scale
    outputs = {"depth": final, "deep": [{"depth": deep1}, {"depth": deep2, "edge": edge_deep}]}
    losses = task_losses(outputs, batch, tasks)
    assert set(losses) == {"depth", "edge"}
    expected = sum(TASKS["depth"].loss(p, batch) for p in (final, deep1, deep2))
    assert losses["depth"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["edge"].item() == pytest.approx(TASKS["edge"].loss(edge_deep, batch).item(), rel=1e-6)
    (losses["depth"] + losses["edge"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (final, deep1, deep2, edge_deep))
    # no deep list: just the final prediction
    assert task_losses({"depth": final}, batch, {"depth": TASKS["depth"]})["depth"].item() == pytest.approx(
        TASKS["depth"].loss(final, batch).item())


def test_task_losses_reports_a_task_without_prediction():
    with pytest.raises(KeyError, match="sal"):
        task_losses({"depth": make_pred("depth"), "deep": []}, make_batch(), {"sal": TASKS["sal"]})


def test_loss_weights_come_from_the_dataset_unless_given():
    """The synthetic benchmark's own weights apply to every model trained on it; an explicit weight wins;
    a dataset without weights (the real ones) keeps the spec's official MTI-Net values."""
    from mtl_core.data.synthetic import LOSS_WEIGHTS, SyntheticScenes
    from mtl_core.tasks import make_tasks

    class RealLike:  # a loader without its own weights
        classes = ()

    names = ("semseg", "depth", "normals", "edge")
    synthetic = make_tasks(names, dataset=SyntheticScenes.__new__(SyntheticScenes))
    assert {n: s.weight for n, s in synthetic.items()} == {n: LOSS_WEIGHTS[n] for n in names}
    given = make_tasks(names, dataset=SyntheticScenes.__new__(SyntheticScenes), weights={"edge": 7.0})
    assert given["edge"].weight == 7.0 and given["normals"].weight == LOSS_WEIGHTS["normals"]
    official = make_tasks(names, dataset=RealLike())
    assert [official[n].weight for n in names] == [1.0, 1.0, 10.0, 50.0]
