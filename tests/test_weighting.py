"""Loss weightings (mtl_core.weighting): one known property per method, plus the shared contract."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_core.weighting import (
    WEIGHTINGS,
    build_weighting,
    cagrad_weights,
    min_norm_weights,
    project_conflicting,
    task_gradients,
)

TASKS = ["a", "b"]


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


def grads_of(params):
    return [p.grad.clone() for p in params]


def random_grads(t, p=6, seed=0):
    return torch.randn(t, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_task_gradients_stacks_flat_gradients_with_zeros_for_unused_parameters():
    shared, heads, _, losses = tiny_problem()
    grads = task_gradients(losses, shared + heads[:2])  # heads[:2] = head "a": unused by loss "b"
    assert grads.shape == (2, sum(p.numel() for p in shared + heads[:2]))
    assert grads[1, -9:].abs().sum() == 0 and grads[0, -9:].abs().sum() > 0


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


@pytest.mark.parametrize("use_features", [False, True])
def test_mgda_backward_uses_the_min_norm_weights(use_features):
    shared, _, features, losses = tiny_problem()
    grads = task_gradients(losses, [features] if use_features else shared)
    mgda = build_weighting("mgda", TASKS)
    weights = mgda.backward(losses, shared, features=features if use_features else None)
    w = torch.tensor(list(weights.values()), dtype=grads.dtype)
    torch.testing.assert_close(w, 2 * torch.as_tensor(min_norm_weights((grads @ grads.T).double().numpy()),
                                                      dtype=grads.dtype))
    if not use_features:  # the shared gradient is the (scaled) min-norm point itself
        torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in shared]), w @ grads)


def test_cagrad_improves_the_worst_task_within_its_ball():
    g = random_grads(3, seed=1)
    torch.testing.assert_close(cagrad_weights(g, c=0.0) @ g, g.mean(0))
    g[2] = -g[0] + 0.3 * g[1]  # tasks 0 and 2 conflict
    g0 = g.mean(0)
    for c in (0.2, 0.5, 0.9):
        d = (1 + c ** 2) * (cagrad_weights(g, c) @ g)  # undo the official rescaling: the primal solution
        assert (g @ d).min() > (g @ g0).min()
        assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-6)


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
