"""Loss weightings (mtl_core.weighting): one known property per method, the shared contract, and the
edge cases every method must survive (identical, opposite, zero and nearly cancelling gradients, a
task without labels)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_core.losses import task_losses
from mtl_core.models import build_model
from mtl_core.tasks import depth_loss, make_tasks, semseg_loss
from mtl_core.weighting import (
    WEIGHTINGS,
    build_weighting,
    cagrad_direction,
    min_norm_weights,
    project_conflicting,
    reached_parameters,
    task_gradients,
    weight_summary,
)

TASKS = ["a", "b"]
LOSS_BASED = ("fixed", "uncertainty", "dwa", "gradnorm")  # one weighted loss: heads get w_t too


def tiny_problem(seed=0):
    """A 2-layer shared trunk with two heads: (shared params, head params, features, losses)."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8))
    heads = nn.ModuleDict({"a": nn.Linear(8, 1), "b": nn.Linear(8, 3)})
    x, ya, yb = torch.randn(16, 4), torch.randn(16), torch.randint(0, 3, (16,))
    features = trunk(x)
    losses = {"a": F.mse_loss(heads["a"](features).squeeze(1), ya),
              "b": F.cross_entropy(heads["b"](features), yb)}
    return list(trunk.parameters()), list(heads.parameters()), features, losses


def hand_problem(g, absent=()):
    """Hand-built task gradients: L_t = 1 + g_t . theta + h_t . phi_t at theta = phi_t = 0, so task t
    has exactly the gradient g_t on the shared theta and h_t = (t + 1, -(t + 1)) on its own head phi_t.
    A task index in `absent` gets instead the masked depth loss of a batch without any depth label
    (mtl_core.tasks): exactly 0 with zero gradient. Returns (tasks, theta, heads, h, losses)."""
    g = torch.as_tensor(g, dtype=torch.float32)
    tasks = [f"t{i}" for i in range(len(g))]
    h = torch.tensor([[i + 1.0, -(i + 1.0)] for i in range(len(g))])
    theta = nn.Parameter(torch.zeros(g.shape[1]))
    heads = {t: nn.Parameter(torch.zeros(2)) for t in tasks}
    losses = {}
    for i, t in enumerate(tasks):
        linear = g[i] @ theta + h[i] @ heads[t]
        if i in absent:
            losses[t] = depth_loss(linear.expand(1, 1, 2, 2), {"depth": torch.zeros(1, 1, 2, 2)})
        else:
            losses[t] = 1 + linear
    return tasks, theta, heads, h, losses


def with_state(name, tasks):
    """A weighting whose weights are not all 1, so that weights and gradients can be told apart."""
    options = {"weights": {tasks[0]: 0.5}} if name == "fixed" else {}
    weighting = build_weighting(name, tasks, **options)
    if name == "uncertainty":
        with torch.no_grad():
            for i, s in enumerate(weighting.parameters()):
                s.fill_(0.4 * i - 0.3)
    if name == "dwa":
        weighting.epoch_end({t: 1.0 for t in tasks})
        weighting.epoch_end({t: 0.5 + 0.3 * i for i, t in enumerate(tasks)})
    return weighting


def small_mtinet(num_scales):
    """A narrow MTI-Net on semseg + depth, a 32x32 batch of 2, and the model's (features, losses),
    the features being the backbone's output maps, collected as the trainer does."""
    specs = make_tasks(["semseg", "depth"])
    torch.manual_seed(0)
    model = build_model("mtinet", specs, backbone="cnn", backbone_options={"widths": (8, 16, 32, 64)},
                        num_scales=num_scales)
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32, generator=gen),
             "semseg": torch.randint(0, 13, (2, 32, 32), generator=gen),
             "depth": 0.5 + torch.rand(2, 1, 32, 32, generator=gen)}
    maps = []
    hook = model.backbone.register_forward_hook(lambda module, args, out: maps.extend(out))
    losses = task_losses(model(batch["image"]), batch, specs)
    hook.remove()
    return model, maps, losses


def grads_of(params):
    return [p.grad.clone() for p in params]


def random_grads(t, p=6, seed=0):
    return torch.randn(t, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def unit(v):
    return v / v.norm()


# the edge cases: (T, P) shared task gradients and the indices of the tasks without labels
V = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5, 3.0])
W = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, 0.0])  # W . V = 0
EDGE_CASES = {
    "identical": ([V, V], ()),
    "opposite": ([V, -V], ()),
    "zero gradient": ([torch.zeros(6), V], ()),
    "tiny gradient": ([1e-3 * W, V], ()),  # shared gradient 1e-3 of the other's
    "nearly cancelling": ([V, -(V + 0.01 * V.norm() * unit(W))], ()),  # cos = -0.99995
    "nearly cancelling 3": ([V, -(V + 1e-4 * V.norm() * unit(W)), 1e-6 * V], ()),
    "without labels": ([V, W, -V], (2,)),
    "none labelled": ([V, W], (0, 1)),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_edge_cases_give_finite_applied_weights_and_unscaled_heads(name, case):
    g, absent = EDGE_CASES[case]
    tasks, theta, heads, h, losses = hand_problem(torch.stack(g), absent)
    weighting = with_state(name, tasks)
    weights = weighting.backward(losses, [theta])

    assert list(weights) == tasks and all(math.isfinite(w) for w in weights.values())
    for p in [theta, *heads.values()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    present = [i for i in range(len(tasks)) if i not in absent]
    g_present = torch.stack([g[i].double() if i in present else torch.zeros(6, dtype=torch.float64)
                             for i in range(len(tasks))])
    w = torch.tensor([weights[t] for t in tasks], dtype=torch.float64)
    # heads: their plain task gradient (gradient methods), or w_t times it (one weighted loss);
    # a task without labels has a zero loss and gets a zero head gradient, as with a plain sum
    for i, t in enumerate(tasks):
        factor = w[i] if name in LOSS_BASED else 1.0
        expected = factor * h[i] if i in present else torch.zeros(2)
        torch.testing.assert_close(heads[t].grad, expected.float())
        if i in present:
            assert heads[t].grad.abs().sum() > 0  # no head starved
    # shared: the weights returned (and logged) are the coefficients actually applied
    scale = float(g_present.norm(dim=1).max()) + 1e-12
    if name == "pcgrad":
        expected = (project_conflicting(g_present[present], torch.Generator().manual_seed(0)).sum(0)
                    if present else torch.zeros(6))
    else:
        expected = w @ g_present
    torch.testing.assert_close(theta.grad.double(), expected.double(), rtol=1e-5, atol=1e-6 * scale)
    if name == "cagrad" and present:  # the update stays in CAGrad's ball around the mean gradient
        c, n = 0.5, len(present)
        g0 = g_present[present].mean(0)
        d = theta.grad.double() * (1 + c ** 2) / n
        assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-5) + 1e-6 * scale


# dwa is left out: its weights are set per epoch and sum to T, which counts every task (its edge
# cases above check that an absent task gets a zero gradient and the others their weighted ones)
@pytest.mark.parametrize("name", [name for name in WEIGHTINGS if name != "dwa"])
def test_a_task_without_labels_changes_nothing_for_the_others(name):
    g = torch.stack([V, W + 0.3 * V, -V + W])
    for steps in (1, 2):  # two steps: the methods' state (GradNorm's Adam, PCGrad's order) evolves alike
        runs = []
        for absent in ((2,), ()):
            full = with_state(name, ["t0", "t1", "t2"] if absent else ["t0", "t1"])
            for _ in range(steps):
                tasks, theta, heads, h, losses = hand_problem(g if absent else g[:2], absent)
                weights = full.backward(losses, [theta])
            runs.append((weights, theta.grad.clone(), [heads[t].grad.clone() for t in ("t0", "t1")]))
        (with_absent, shared, head_grads), (alone, shared_alone, head_grads_alone) = runs
        assert [with_absent["t0"], with_absent["t1"]] == pytest.approx([alone["t0"], alone["t1"]])
        torch.testing.assert_close(shared, shared_alone)
        for a, b in zip(head_grads, head_grads_alone, strict=True):
            torch.testing.assert_close(a, b)
        if name in ("mgda", "cagrad"):
            assert with_absent["t2"] == 0.0  # not part of the combination


def test_uncertainty_leaves_the_log_variance_of_a_task_without_labels_alone():
    tasks, theta, _, _, losses = hand_problem(torch.stack([V, W]))
    uncertainty = build_weighting("uncertainty", tasks, init=0.5)  # L_t = 1: s_t moves towards 0
    optimizer = torch.optim.Adam(uncertainty.parameters(), lr=0.1)
    optimizer.zero_grad()
    uncertainty.backward(losses, [theta])
    optimizer.step()  # Adam now has momentum for both log-variances
    s_before = [s.item() for s in uncertainty.parameters()]
    for _ in range(3):
        tasks, theta, _, _, losses = hand_problem(torch.stack([V, W]), absent=(1,))
        optimizer.zero_grad()
        weights = uncertainty.backward(losses, [theta])
        assert uncertainty.log_vars["t1"].grad is None
        optimizer.step()
    s_after = [s.item() for s in uncertainty.parameters()]
    assert s_after[1] == s_before[1] and s_after[0] != s_before[0]
    assert weights["t1"] == pytest.approx(math.exp(-s_before[1]))  # its weight is kept, not pushed up


def test_gradnorm_keeps_the_weight_of_a_task_without_labels():
    g = torch.stack([V, 0.1 * W, 3 * W])
    gradnorm = build_weighting("gradnorm", ["t0", "t1", "t2"])
    for step in range(6):
        absent = (2,) if step >= 2 else ()
        _, theta, _, _, losses = hand_problem(g, absent)
        before = gradnorm.weights.detach().clone()
        gradnorm.backward(losses, [theta])
        after = gradnorm.weights.detach()
        assert after.sum().item() == pytest.approx(3.0)
        if absent:
            assert after[2] == before[2] and not torch.equal(after[:2], before[:2])


def test_present_tasks_are_those_with_a_labelled_sample():
    pred = torch.randn(2, 13, 4, 4, requires_grad=True)
    unlabelled = semseg_loss(pred, {"semseg": torch.full((2, 4, 4), 255)})
    labelled = semseg_loss(pred, {"semseg": torch.zeros(2, 4, 4, dtype=torch.long)})
    assert unlabelled.item() == 0.0 and labelled.item() > 0
    assert build_weighting("fixed", TASKS).present_tasks({"a": unlabelled, "b": labelled}) == ["b"]


def test_task_gradients_stacks_flat_gradients_with_zeros_for_unused_parameters():
    shared, heads, _, losses = tiny_problem()
    grads = task_gradients(losses, shared + heads[:2])  # heads[:2] = head "a": unused by loss "b"
    assert grads.shape == (2, sum(p.numel() for p in shared + heads[:2]))
    assert grads[1, -9:].abs().sum() == 0 and grads[0, -9:].abs().sum() > 0


def test_reached_parameters_follows_the_graph():
    shared, heads, _, losses = tiny_problem()
    params = shared + heads
    assert reached_parameters(losses["a"], params) == {id(p) for p in shared + heads[:2]}
    assert reached_parameters(losses["b"], params) == {id(p) for p in shared + heads[2:]}
    assert reached_parameters(torch.tensor(1.0), params) == set()


def test_fixed_gives_the_gradients_of_the_weighted_sum():
    shared, heads, _, losses = tiny_problem()
    weights = build_weighting("fixed", TASKS, weights={"a": 2.0}).backward(losses, shared)
    assert weights == {"a": 2.0, "b": 1.0}
    shared2, heads2, _, losses2 = tiny_problem()
    expected = torch.autograd.grad(2 * losses2["a"] + losses2["b"], shared2 + heads2)
    for got, want in zip(grads_of(shared + heads), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_uncertainty_log_variances_move_to_log_of_the_losses():
    weighting = build_weighting("uncertainty", TASKS)
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    losses = {"a": torch.tensor(0.1), "b": torch.tensor(10.0)}
    for _ in range(300):
        optimizer.zero_grad()
        weights = weighting.backward(losses, [])
        optimizer.step()
    s = [p.item() for p in weighting.parameters()]
    assert s == pytest.approx([math.log(0.1), math.log(10.0)], abs=1e-3)  # stationary point s_t = log L_t
    assert weights["a"] == pytest.approx(10.0, rel=1e-2) and weights["b"] == pytest.approx(0.1, rel=1e-2)


def test_dwa_favours_the_task_whose_loss_dropped_least_and_resumes_exactly():
    tasks = ["a", "b", "c"]
    dwa = build_weighting("dwa", tasks)
    losses = {t: torch.tensor(1.0) for t in tasks}
    assert dwa.backward(losses, []) == {t: 1.0 for t in tasks}
    dwa.epoch_end({"a": 1.0, "b": 2.0, "c": 1.0})
    assert dwa.backward(losses, []) == {t: 1.0 for t in tasks}  # still 1 after one epoch
    dwa.epoch_end({"a": 0.5, "b": 1.8, "c": 0.7})  # ratios 0.5, 0.9, 0.7
    weights = dwa.backward(losses, [])
    assert sum(weights.values()) == pytest.approx(3.0)
    assert max(weights, key=weights.get) == "b" and min(weights, key=weights.get) == "a"

    resumed = build_weighting("dwa", tasks)
    resumed.load_state_dict(dwa.state_dict())
    for w in (dwa, resumed):
        w.epoch_end({"a": 0.4, "b": 1.0, "c": 0.6})
    assert resumed.backward(losses, []) == dwa.backward(losses, [])


def test_gradnorm_raises_the_weight_of_the_task_with_small_gradients():
    shared = [nn.Parameter(torch.zeros(5))]
    gradnorm = build_weighting("gradnorm", TASKS, alpha=1.5)
    for _ in range(20):  # constant losses (no model step): the loss ratios stay 1
        losses = {"a": 10 * (shared[0] - 1).square().sum(), "b": 0.1 * (shared[0] + 1).square().sum()}
        shared[0].grad = None
        weights = gradnorm.backward(losses, shared)
        assert all(w > 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(2.0)
    assert weights["b"] > 1.3 > 0.7 > weights["a"]
    assert gradnorm.parameters() == []  # it steps its weights with its own optimizer


@pytest.mark.parametrize("num_scales", [2, 3])
def test_gradnorm_balances_a_layer_the_tasks_use(num_scales):
    # MTI-Net with fewer than 4 scales leaves the backbone's coarsest stages unused: the last shared
    # weight tensor gets no gradient, and balancing its (zero) norms would keep the weights at 1
    gradnorm = build_weighting("gradnorm", ["semseg", "depth"])
    for _ in range(2):
        model, _, losses = small_mtinet(num_scales)  # the same model and batch each time
        shared = list(model.backbone.parameters())
        (layer,) = gradnorm.layer(list(losses.values()), shared)
        gradnorm.backward(losses, shared)
    assert layer.dim() > 1 and layer.grad.abs().sum() > 0
    assert [p for p in shared if p.dim() > 1][-1].grad is None  # the unused coarsest stage
    assert abs(gradnorm.weights[0].item() - 1) > 0.02 and gradnorm.weights.sum().item() == pytest.approx(2.0)


def test_pcgrad_removes_conflicts_and_keeps_agreeing_gradients():
    for seed in range(20):  # two conflicting gradients: the projections never conflict
        g = random_grads(2, seed=seed)
        g[1] -= (g[0] @ g[1] + 1) / g[0].square().sum() * g[0]  # force g0 . g1 = -1
        p = project_conflicting(g, torch.Generator().manual_seed(seed))
        assert p[0] @ p[1] >= -1e-12 and p[0] @ g[1] == pytest.approx(0, abs=1e-12)
    # three mutually conflicting gradients (pairwise dot -0.28). For T >= 3 PCGrad does not guarantee
    # this in general (with eye(3) - 0.4 some projections still conflict), but here it holds in any order.
    g = torch.eye(3, dtype=torch.float64) - 0.2
    for seed in range(10):
        p = project_conflicting(g, torch.Generator().manual_seed(seed))
        assert min(p[i] @ p[j] for i in range(3) for j in range(i + 1, 3)) >= 0
    agreeing = random_grads(3).abs()
    torch.testing.assert_close(project_conflicting(agreeing, torch.Generator()), agreeing)


def test_pcgrad_backward_writes_the_projected_sum_into_the_shared_gradients():
    shared, heads, _, losses = tiny_problem()
    projected = project_conflicting(task_gradients(losses, shared), torch.Generator().manual_seed(3)).sum(0)
    head_grads = torch.autograd.grad(losses["a"] + losses["b"], heads, retain_graph=True)
    for p in shared + heads:
        p.grad = torch.ones_like(p)  # gradients already present are accumulated into
    build_weighting("pcgrad", TASKS, seed=3).backward(losses, shared)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in shared]), projected + 1)
    for p, g in zip(heads, head_grads, strict=True):
        torch.testing.assert_close(p.grad, g + 1)


def test_mgda_min_norm_point():
    for seed in range(10):  # two tasks: the closed form
        g1, g2 = random_grads(2, seed=seed) * torch.tensor([[1.0], [0.2 + seed]], dtype=torch.float64)
        alpha = ((g2 - g1) @ g2 / (g1 - g2).square().sum()).clamp(0, 1)
        gram = torch.stack([g1, g2]) @ torch.stack([g1, g2]).T
        assert min_norm_weights(gram.numpy()) == pytest.approx([float(alpha), 1 - float(alpha)])
    grid = [(i / 200, j / 200) for i in range(201) for j in range(201 - i)]
    for seed in range(5):  # three tasks: Frank-Wolfe against every vertex and a grid over the simplex
        g = random_grads(3, seed=seed).numpy()
        w = min_norm_weights(g @ g.T)
        norm = np.linalg.norm(w @ g)
        best = min(np.linalg.norm(a * g[0] + b * g[1] + (1 - a - b) * g[2]) for a, b in grid)
        assert w.min() >= 0 and w.sum() == pytest.approx(1)
        assert norm <= np.linalg.norm(g, axis=1).min() + 1e-12
        assert norm <= best + 1e-12 and norm == pytest.approx(best, abs=1e-3)
        # the weights do not depend on the gradients' scale, however small
        assert min_norm_weights(1e-14 * (g @ g.T)) == pytest.approx(w, abs=1e-9)


def test_mgda_known_answers_and_heads_get_their_plain_gradients():
    e = torch.eye(3)
    cases = (([e[0], e[1]], [0.5, 0.5]), ([e[0], e[1], e[2]], [1 / 3] * 3), ([e[0], 3 * e[0]], [1, 0]))
    for g, alpha in cases:
        tasks, theta, heads, h, losses = hand_problem(torch.stack(g))
        weights = build_weighting("mgda", tasks).backward(losses, [theta])
        t = len(tasks)
        assert [weights[k] for k in tasks] == pytest.approx([t * a for a in alpha])
        # the shared gradient: T times the min-norm point (orthogonal unit gradients: T times their mean)
        torch.testing.assert_close(theta.grad, t * sum(a * gi for a, gi in zip(alpha, g, strict=True)))
        for i, k in enumerate(tasks):
            torch.testing.assert_close(heads[k].grad, h[i])
    # the official code's variant scales the heads by T alpha_t: the second head gets nothing
    tasks, theta, heads, h, losses = hand_problem(torch.stack([e[0], 3 * e[0]]))
    weights = build_weighting("mgda", tasks, scale_heads=True).backward(losses, [theta])
    assert weights == {"t0": 2.0, "t1": 0.0}
    torch.testing.assert_close(heads["t0"].grad, 2 * h[0])
    assert heads["t1"].grad.abs().sum() == 0
    with pytest.raises(ValueError, match="scale_heads"):
        build_weighting("mgda", tasks, scale_heads="yes")


@pytest.mark.parametrize("use_features", [False, True])
def test_mgda_backward_uses_the_min_norm_weights(use_features):
    shared, heads, features, losses = tiny_problem()
    grads = task_gradients(losses, [features] if use_features else shared)
    mgda = build_weighting("mgda", TASKS)
    weights = mgda.backward(losses, shared, features=features if use_features else None)
    w = torch.tensor(list(weights.values()), dtype=grads.dtype)
    g64 = grads.double()
    alpha = torch.as_tensor(min_norm_weights((g64 @ g64.T).numpy()), dtype=grads.dtype)
    torch.testing.assert_close(w, 2 * alpha)
    # shared: the gradient of sum_t w_t L_t (MGDA-UB: the weights found on the representation);
    # heads: the plain task gradients
    shared2, heads2, _, losses2 = tiny_problem()
    want_shared = torch.autograd.grad(w[0] * losses2["a"] + w[1] * losses2["b"], shared2, retain_graph=True)
    want_heads = torch.autograd.grad(losses2["a"] + losses2["b"], heads2)
    for got, want in zip(grads_of(shared + heads), want_shared + want_heads, strict=True):
        torch.testing.assert_close(got, want)
    if not use_features:  # the shared gradient is the (scaled) min-norm point itself
        torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in shared]), w @ grads)


def test_mgda_on_the_backbone_maps_of_mtinet():
    # as in training: the gradients w.r.t. the backbone's output maps (MTI-Net with 2 scales leaves
    # the coarser maps unused); the backbone gets the gradient of sum_t w_t L_t, the rest sum_t L_t
    model, maps, losses = small_mtinet(num_scales=2)
    shared = list(model.backbone.parameters())
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    weights = build_weighting("mgda", ["semseg", "depth"]).backward(losses, shared, features=maps)
    assert 0 < weights["semseg"] < 2 and weights["semseg"] + weights["depth"] == pytest.approx(2)

    model, _, losses = small_mtinet(num_scales=2)  # the same model again, for the reference gradients
    weighted = weights["semseg"] * losses["semseg"] + weights["depth"] * losses["depth"]
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    want = torch.autograd.grad(weighted, list(model.backbone.parameters()), retain_graph=True,
                               allow_unused=True)
    want += torch.autograd.grad(losses["semseg"] + losses["depth"], heads, allow_unused=True)
    for p, b in zip(shared + rest, want, strict=True):
        assert (p.grad is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(p.grad, b, rtol=1e-4, atol=1e-6)


def test_cagrad_known_answer_for_orthogonal_gradients():
    # g1, g2 orthogonal unit vectors: w = (1/2, 1/2), ||g_w|| = ||g0|| = 1/sqrt(2), lambda = c, so
    # d = (1 + c) g0 / (1 + c^2), times T = 2 on the shared parameters
    e = torch.eye(4)
    for c in (0.0, 0.5, 0.9):
        tasks, theta, heads, h, losses = hand_problem(torch.stack([e[0], e[1]]))
        weights = build_weighting("cagrad", tasks, c=c).backward(losses, [theta])
        factor = (1 + c) / (1 + c ** 2)
        assert weights == pytest.approx({"t0": factor, "t1": factor}, rel=1e-5)
        torch.testing.assert_close(theta.grad, factor * (e[0] + e[1]), rtol=1e-5, atol=1e-6)
        for i, k in enumerate(tasks):
            torch.testing.assert_close(heads[k].grad, h[i])


def test_cagrad_solves_its_primal_problem():
    # brute force: the d on the sphere ||d - g0|| = c ||g0|| that maximises min_t <g_t, d>
    g = torch.tensor([[4.0, 0.5], [-1.5, 1.2]], dtype=torch.float64)
    g0 = g.mean(0)
    angles = torch.linspace(0, 2 * math.pi, 200_001, dtype=torch.float64)
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    for c in (0.2, 0.5, 0.9):
        candidates = g0 + c * g0.norm() * circle
        best = candidates[(candidates @ g.T).min(dim=1).values.argmax()]
        weights, d = cagrad_direction(g, c)
        torch.testing.assert_close(d, weights @ g)
        d = d * (1 + c ** 2)  # undo the official rescaling: the primal solution
        torch.testing.assert_close(d, best, rtol=1e-3, atol=1e-3)
        assert (g @ d).min() > (g @ g0).min()
    g = random_grads(3, seed=1)
    torch.testing.assert_close(cagrad_direction(g, c=0.0)[1], g.mean(0))
    g[2] = -g[0] + 0.3 * g[1]  # tasks 0 and 2 conflict
    for c in (0.2, 0.5, 0.9):
        d = (1 + c ** 2) * cagrad_direction(g, c)[1]
        assert (g @ d).min() > (g @ g.mean(0)).min()
        assert (d - g.mean(0)).norm() <= c * g.mean(0).norm() * (1 + 1e-6)


def test_cagrad_numerics_of_nearly_cancelling_float32_gradients():
    # the mean gradient is 1e-7 of the task gradients: float32 Gram entries would lose it entirely
    big = 1e3 * V
    g = torch.stack([big, -big + 1e-4 * unit(W)]).float()
    weights, d = cagrad_direction(g, 0.5)
    assert torch.isfinite(weights).all() and torch.isfinite(d).all()
    g0 = g.double().mean(0)
    assert (d * 1.25 - g0).norm() <= 0.5 * g0.norm() * (1 + 1e-6)
    assert d.norm() < 1e-3  # the update stays on the scale of the mean, not of the task gradients


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_every_method_fills_finite_gradients_and_resumes_exactly(name):
    options = {"weights": {"a": 0.5}} if name == "fixed" else {}
    runs = []
    for resume in (False, True):
        weighting = build_weighting(name, TASKS, **options)
        shared, heads, features, losses = tiny_problem()
        weights = weighting.backward(losses, shared, features=features)
        assert list(weights) == TASKS and all(math.isfinite(w) for w in weights.values())
        for p in shared + heads + weighting.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()
        weighting.epoch_end({"a": 1.0, "b": 2.0})
        if resume:
            state = weighting.state_dict()
            weighting = build_weighting(name, TASKS, **options)
            weighting.load_state_dict(state)
        shared, heads, features, losses = tiny_problem(seed=1)
        runs.append((weighting.backward(losses, shared, features=features), grads_of(shared + heads)))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unknown_names_and_options_are_rejected():
    with pytest.raises(ValueError, match="weighting='magic'.*pcgrad"):
        build_weighting("magic", TASKS)
    with pytest.raises(ValueError, match=r"weighting='dwa'.*\['alpha'\]"):
        build_weighting("dwa", TASKS, alpha=1.5)


def test_weight_summary_averages_the_recorded_weights_over_epochs():
    history = pd.DataFrame({"epoch": [2, 1, 3], "weight/a": [1.0, 3.0, 2.0], "weight/b": [0.5, 1.0, 0.0],
                            "loss/a": [0.1, 0.2, 0.3]})
    table = weight_summary(history, TASKS)
    assert list(table.index) == TASKS
    assert table["mean weight"].tolist() == pytest.approx([2.0, 0.5])
    assert table["last epoch"].tolist() == pytest.approx([2.0, 0.0])  # epoch 3, whatever the row order
    assert table["share (%)"].tolist() == pytest.approx([80.0, 20.0])
    with pytest.raises(ValueError, match="weight/c"):
        weight_summary(history, ["a", "c"])
