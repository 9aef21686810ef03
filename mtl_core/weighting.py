"""Loss weightings: how the per-task losses {task: scalar} become the gradients of one training step.

    weighting = build_weighting("dwa", ["semseg", "depth"], temperature=2.0)
    weights = weighting.backward(losses, shared)   # fills .grad of every parameter; {task: weight}
    weighting.epoch_end(mean_losses_of_the_epoch)

Conventions shared by every method:
  * `losses` already include the static per-task loss weights of the task specs; they are >= 0.
  * Loss-based methods (fixed, uncertainty, dwa, gradnorm) end with one backward of sum_t w_t L_t:
    every parameter, shared and task-specific, gets the gradient of the same weighted loss, and
    `backward` returns those w_t.
  * Gradient-based methods (pcgrad, mgda, cagrad) change the shared parameters only, as in their
    papers: the shared parameters get a direction d built from the task gradients g_t, the
    task-specific ones (heads) the gradient of the plain sum sum_t L_t. `backward` returns the
    coefficients of d = sum_t w_t g_t (pcgrad, whose projection is not a fixed combination: 1s).
    mgda's `scale_heads=True` restores its official code, which scales the heads too.
  * A task whose loss is exactly 0 has nothing to learn from the batch: that is what the masked
    losses of `mtl_core.tasks` give when none of its labels is present (and a non-negative loss at 0
    sits at its minimum, with zero gradient). Such a task is left out of the method for that step:
    uncertainty's log-variance and GradNorm's weight are not updated, and the task takes no part in
    GradNorm's balancing or in PCGrad's / MGDA's / CAGrad's combination (its mgda / cagrad weight
    is 0; the others report its current weight, applied to a zero loss). Its zero loss is still
    backpropagated, so its head gets the zero gradient a plain loss sum gives it.
  * The weights are on the scale of `fixed` with weights 1 (a plain loss sum), so learning rates
    carry over between methods: dwa and gradnorm weights sum to T (the number of tasks), mgda's to
    the number of tasks present in the batch; cagrad's direction is T (g0 + lambda g_w) / (1 + c^2),
    i.e. the plain sum for c = 0 (see `cagrad_direction`).
  * Gradients already present in .grad are accumulated into, as with a plain loss.backward().
  * Learnable parameters (uncertainty's log-variances) are returned by `parameters()` and must be
    stepped by the trainer's optimizer. They are 0-dim CPU tensors, which PyTorch lets mix with
    CUDA losses. GradNorm instead updates its weights inside `backward` with its own Adam
    (option `lr`), so its `parameters()` is empty and the trainer cannot step them twice.
  * `needs_task_gradients` marks the methods that take per-task gradients (T extra backward passes
    through the shared part; DistributedDataParallel would not synchronise them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------
# shared helpers


def task_gradients(losses: Mapping[str, Tensor] | Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
    """(T, P): the gradient of each loss w.r.t. `params`, flattened and concatenated (None -> zeros).

    Uses torch.autograd.grad with retain_graph=True, so the graph survives for a later backward.
    `params` may also be non-leaf tensors (MGDA-UB's shared representation). Gradients are at least
    float32 (bf16 features under autocast are upcast).
    """
    losses = list(losses.values()) if isinstance(losses, Mapping) else list(losses)
    params = list(params)
    rows = []
    for loss in losses:
        grads = (torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                 if loss.requires_grad else [None] * len(params))
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                               .to(torch.promote_types(p.dtype, torch.float32))
                               for p, g in zip(params, grads, strict=True)]))
    return torch.stack(rows)


def replace_gradients(tensors: Sequence[Tensor], flat: Tensor) -> list:
    """Hooks that make the next backward use the slice of `flat` belonging to each tensor (in order)
    as that tensor's gradient, in place of the one autograd computes. On a parameter the slice is
    what gets accumulated into .grad; on a non-leaf tensor (a shared representation) it is what flows
    on to the parameters behind it. A tensor the backward does not reach keeps no gradient, as with a
    plain backward. Returns the hook handles: remove them after the backward."""
    handles, start = [], 0
    for x in tensors:
        part = flat[start:start + x.numel()].reshape(x.shape)
        start += x.numel()
        if x.requires_grad:
            handles.append(x.register_hook(lambda grad, part=part: part.to(grad.dtype)))
    return handles


def reached_parameters(loss: Tensor, params: Sequence[Tensor]) -> set[int]:
    """ids of the tensors among `params` (leaves) that the autograd graph of `loss` reaches, i.e. that
    a backward of `loss` gives a gradient. A walk over the graph: no gradient is computed."""
    wanted = {id(p) for p in params}
    found, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf tensor
        if variable is not None and id(variable) in wanted:
            found.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def weighted_backward(losses: Mapping[str, Tensor], weights: Mapping[str, float | Tensor],
                      extra: Tensor | float = 0.0) -> dict[str, float]:
    """Backpropagate sum_t w_t L_t (+ extra) into every parameter; return the weights as floats."""
    total = sum(w * losses[t] for t, w in weights.items()) + extra
    if isinstance(total, Tensor) and total.requires_grad:
        total.backward()
    return {t: float(w.detach() if isinstance(w, Tensor) else w) for t, w in weights.items()}


# ----------------------------------------------------------------------------------------------
# base class


class Weighting:
    """Base class: `defaults` lists the options of a method (any other option is an error)."""

    name = "base"
    defaults: dict = {}
    needs_task_gradients = False

    def __init__(self, tasks: list[str], **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"weighting={self.name!r}: unknown option(s) {unknown}; "
                             f"choose from {sorted(self.defaults)}")
        self.tasks = list(tasks)
        self.options = {**self.defaults, **options}

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def present_tasks(self, losses: Mapping[str, Tensor]) -> list[str]:
        """The tasks with something to learn from this batch: those whose loss is not exactly 0."""
        return [t for t in self.tasks if bool(torch.as_tensor(losses[t]).detach() != 0)]

    def backward(self, losses: dict[str, Tensor], shared: list[torch.nn.Parameter],
                 features: Tensor | None = None) -> dict[str, float]:
        """Fill the .grad of the parameters behind `losses`; return {task: weight} for every task."""
        raise NotImplementedError

    def epoch_end(self, epoch_losses: dict[str, float]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# loss-based methods


class Fixed(Weighting):
    """sum_t w_t L_t with constant weights (option `weights={task: w}`, missing tasks: 1)."""

    name = "fixed"
    defaults = {"weights": None}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        given = self.options["weights"] or {}
        unknown = sorted(set(given) - set(self.tasks))
        if unknown:
            raise ValueError(f"weighting='fixed': weights for unknown task(s) {unknown}")
        self.weights = {t: float(given.get(t, 1.0)) for t in self.tasks}

    def backward(self, losses, shared, features=None):
        return weighted_backward(losses, self.weights)


class Uncertainty(Weighting):
    """Homoscedastic uncertainty (Kendall, Gal & Cipolla, CVPR 2018), learnable s_t = log sigma_t^2.

    The paper's Eq. 7 (regression) is L/(2 sigma^2) + log sigma = 1/2 (exp(-s) L + s); Eq. 10
    (classification) has L/sigma^2 + log sigma. We use the common form without the 1/2 factors for
    every task, sum_t exp(-s_t) L_t + s_t: its stationary point is s_t = log L_t for every loss
    type, and it is the regression form times 2 (the same as doubling the learning rate).
    """

    name = "uncertainty"
    defaults = {"init": 0.0}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.log_vars = {t: torch.nn.Parameter(torch.tensor(float(self.options["init"]))) for t in self.tasks}

    def parameters(self):
        return list(self.log_vars.values())

    def backward(self, losses, shared, features=None):
        present = self.present_tasks(losses)
        # A task without labels drops out of the objective: with L_t = 0 its term is just s_t, whose
        # gradient 1 would push s_t down (and its weight up) every such step, towards log 0. Its s_t
        # gets no gradient at all (not a zero one), so no optimizer moves it, momentum included.
        weights = {t: torch.exp(-s) if t in present else torch.exp(-s).detach()
                   for t, s in self.log_vars.items()}
        return weighted_backward(losses, weights, extra=sum(self.log_vars[t] for t in present))

    def state_dict(self):
        return {"log_vars": {t: s.detach().clone() for t, s in self.log_vars.items()}}

    def load_state_dict(self, state):
        with torch.no_grad():
            for t, s in self.log_vars.items():
                s.copy_(state["log_vars"][t])


class DWA(Weighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, MTAN), Eq. 7:

        w_t(e) = T exp(r_t(e-1) / Temp) / sum_k exp(r_k(e-1) / Temp),  r_t(e-1) = L_t(e-1) / L_t(e-2)

    with L_t the mean training loss of an epoch (given by `epoch_end`); weights 1 for the first two
    epochs. A task whose loss drops slowly (large r_t) gets a large weight. The weights do not depend
    on the batch, so a task without labels in a batch changes nothing (its loss there is 0).
    """

    name = "dwa"
    defaults = {"temperature": 2.0}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.history: list[dict[str, float]] = []  # the mean losses of the last two epochs

    def weights(self) -> dict[str, float]:
        if len(self.history) < 2:
            return {t: 1.0 for t in self.tasks}
        before, last = self.history
        ratios = torch.tensor([last[t] / max(before[t], 1e-12) for t in self.tasks], dtype=torch.float64)
        w = len(self.tasks) * torch.softmax(ratios / self.options["temperature"], dim=0)
        return dict(zip(self.tasks, w.tolist(), strict=True))

    def backward(self, losses, shared, features=None):
        return weighted_backward(losses, self.weights())

    def epoch_end(self, epoch_losses):
        self.history = (self.history + [{t: float(epoch_losses[t]) for t in self.tasks}])[-2:]

    def state_dict(self):
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state):
        self.history = [dict(h) for h in state["history"]]


class GradNorm(Weighting):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

    G_t = ||grad_W w_t L_t|| = w_t ||grad_W L_t||, G_mean = mean_t G_t, r_t = (L_t / L_t(0)) divided
    by its mean over tasks (the relative inverse training rate), and the weights minimise (Eq. 2)

        L_grad = sum_t | G_t - G_mean * r_t^alpha |     (the target G_mean r_t^alpha is a constant)

    W is the paper's "last shared layer": the last shared parameter tensor with more than one
    dimension (a weight, not a bias or norm scale) that the graph of every task reaches. A model may
    hold shared tensors that no task uses (MTI-Net with num_scales < 4 ignores the backbone's coarser
    stages); their gradient norms are all 0, which would leave the weights at 1 for ever.
    `all_shared=True` uses all shared parameters. As G_t is linear in w_t, grad_W L_t (without the
    weight) is all we need: no double backward. The weights have their own Adam (`lr`); after each
    of its steps they are clipped to stay positive and renormalised to sum to T. The network step
    of the same call uses the weights from before the update, as in the paper's Algorithm 1.
    L_t(0) is the first non-zero loss of a task. Only the tasks present in the batch are balanced
    (at least two are needed): an absent task keeps its weight and the others are renormalised to
    the sum they had.
    """

    name = "gradnorm"
    defaults = {"alpha": 1.5, "lr": 0.025, "all_shared": False}
    needs_task_gradients = True

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.weights = torch.ones(len(self.tasks), requires_grad=True)
        self.initial_losses = torch.zeros(len(self.tasks))
        self.optimizer = torch.optim.Adam([self.weights], lr=self.options["lr"])

    def layer(self, losses: list[Tensor], shared: list[Tensor]) -> list[Tensor]:
        """W: the tensors whose gradient norms are balanced."""
        if self.options["all_shared"]:
            return list(shared)
        reached = set.intersection(*(reached_parameters(loss, shared) for loss in losses))
        candidates = [p for p in shared if id(p) in reached] or list(shared)
        return [([p for p in candidates if p.dim() > 1] or candidates)[-1]]

    def backward(self, losses, shared, features=None):
        used = dict(zip(self.tasks, self.weights.detach().tolist(), strict=True))
        present = self.present_tasks(losses)
        if len(present) > 1 and shared:  # with a single task L_grad is 0: nothing to balance
            self.update([self.tasks.index(t) for t in present], [losses[t] for t in present], shared)
        return weighted_backward(losses, used)

    def update(self, index: list[int], losses: list[Tensor], shared: list[Tensor]) -> None:
        """One Adam step of the weights `index` on L_grad, given the losses of those tasks."""
        norms = task_gradients(losses, self.layer(losses, shared)).norm(dim=1).detach().cpu()
        current = torch.stack([loss.detach().float().cpu() for loss in losses])
        self.initial_losses[index] = torch.where(self.initial_losses[index] > 0,
                                                 self.initial_losses[index], current)
        ratio = current / self.initial_losses[index]
        ratio = ratio / ratio.mean()
        g = self.weights[index] * norms
        target = (g.mean() * ratio ** self.options["alpha"]).detach()
        before = self.weights.detach().clone()
        self.optimizer.zero_grad()
        (g - target).abs().sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            # Adam's momentum would move the weights of absent tasks too: those are put back
            after = before.clone()
            after[index] = self.weights[index].clamp(min=1e-3)
            after[index] *= before[index].sum() / after[index].sum()
            self.weights.copy_(after)

    def state_dict(self):
        return {"weights": self.weights.detach().clone(), "initial_losses": self.initial_losses.clone(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.initial_losses = state["initial_losses"].clone()
        self.optimizer.load_state_dict(state["optimizer"])


# ----------------------------------------------------------------------------------------------
# gradient-based methods: per-task gradients on the shared parameters -> one combined update


class GradientWeighting(Weighting):
    """Base of PCGrad / MGDA / CAGrad. `combine` maps the (T, P) gradients of the tasks present in the
    batch to their weights (T,) and the direction d (P,) that replaces the gradient of the shared
    parameters (of the shared representation, for MGDA-UB). Every other parameter, i.e. the heads,
    gets the gradient of the plain loss sum: each head its own task's gradient, unscaled."""

    needs_task_gradients = True
    uses_features = False
    absent_weight = 0.0  # reported for a task that takes no part in the combination

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def scales_heads(self) -> bool:
        """True: apply the weights to the whole losses, heads included, instead of d."""
        return False

    def backward(self, losses, shared, features=None):
        if self.uses_features and features is not None:  # a tensor, or a list of maps (backbone output)
            wrt = list(features) if isinstance(features, list | tuple) else [features]
        else:
            wrt = list(shared)
        weights = dict.fromkeys(self.tasks, self.absent_weight)
        present = self.present_tasks(losses)
        handles = []
        if present:
            grads = task_gradients({t: losses[t] for t in present}, wrt)
            w, direction = self.combine(grads, torch.stack([losses[t].detach().float() for t in present]))
            weights.update(zip(present, w.tolist(), strict=True))
            if self.scales_heads():
                return weighted_backward(losses, weights)
            handles = replace_gradients(wrt, direction)
        try:  # one backward of the plain sum: the heads get their task gradients, the hooks put d in
            weighted_backward(losses, dict.fromkeys(self.tasks, 1.0))
        finally:
            for handle in handles:
                handle.remove()
        return weights


def project_conflicting(grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """PCGrad's projection (Yu et al., NeurIPS 2020, Eq. 1 / Algorithm 1): every task gradient g_i
    is projected, in a random order of the other tasks, onto the normal plane of each original g_j
    it conflicts with (g_i . g_j < 0):  g_i <- g_i - (g_i . g_j) / ||g_j||^2 g_j.  Returns (T, P)."""
    projected = grads.clone()
    for i in range(len(grads)):
        for j in torch.randperm(len(grads), generator=generator).tolist():
            dot = projected[i] @ grads[j]
            if j != i and dot < 0:
                projected[i] -= dot / grads[j].square().sum().clamp_min(1e-20) * grads[j]
    return projected


class PCGrad(GradientWeighting):
    """PCGrad: the shared parameters get the sum of the projected task gradients (computed in float64),
    the heads their plain task gradients (Algorithm 1 projects the shared gradients only). Weights
    1. Option `seed` seeds the random task order; the generator state is checkpointed so a resumed
    run repeats it."""

    name = "pcgrad"
    defaults = {"seed": 0}
    absent_weight = 1.0

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.generator = torch.Generator().manual_seed(int(self.options["seed"]))

    def combine(self, grads, losses):
        direction = project_conflicting(grads.double(), self.generator).sum(dim=0)
        return torch.ones(len(grads), dtype=torch.float64), direction.to(grads.dtype)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def _min_norm_2(v11: float, v12: float, v22: float) -> float:
    """argmin over a in [0, 1] of ||a u + (1 - a) v||^2 given u.u, u.v, v.v (Sener & Koltun, Alg. 1):
    a = clip((v - u).v / ||u - v||^2, 0, 1)."""
    denom = v11 + v22 - 2 * v12
    return 0.5 if denom <= 1e-20 else float(np.clip((v22 - v12) / denom, 0.0, 1.0))


def min_norm_weights(gram: np.ndarray, iterations: int = 1000, tol: float = 1e-12) -> np.ndarray:
    """The convex weights of the min-norm point of the task gradients' hull, from their Gram matrix M.

    Two tasks: the closed form. More: Frank-Wolfe on w^T M w over the simplex (Sener & Koltun,
    NeurIPS 2018, Alg. 2) in its pairwise form (Lacoste-Julien & Jaggi, NeurIPS 2015): move weight
    from the used task with the largest (M w)_s to the task with the smallest (M w)_t (the vertex
    plain Frank-Wolfe moves to), with an exact line search. Unlike the plain form, which zig-zags
    when the optimum lies on a face of the simplex, it converges linearly. M is first divided by its
    largest diagonal entry: the weights do not depend on the gradients' scale, and the tolerances
    then are relative to it (small gradients would otherwise stop the search at its start).
    """
    gram = np.asarray(gram, dtype=np.float64)
    n = len(gram)
    scale = gram.diagonal().max() if n else 0.0
    if scale > 0:
        gram = gram / scale
    if n <= 2:
        a = _min_norm_2(gram[0, 0], gram[0, 1], gram[1, 1]) if n == 2 else 1.0
        return np.array([a, 1 - a][:n])
    w = np.full(n, 1.0 / n)
    for _ in range(iterations):
        mw = gram @ w
        t = int(np.argmin(mw))
        s = int(np.argmax(np.where(w > 0, mw, -np.inf)))
        gap, curvature = mw[s] - mw[t], gram[t, t] + gram[s, s] - 2 * gram[t, s]
        if gap <= tol:
            break
        step = w[s] if curvature <= 1e-20 else min(gap / curvature, w[s])
        w[t] += step
        w[s] -= step
    return w


class MGDA(GradientWeighting):
    """MGDA-UB (Sener & Koltun, NeurIPS 2018): alpha = the min-norm convex combination of the task
    gradients (Eq. 3, solved by `min_norm_weights`). As in the paper's Algorithm 2, alpha applies to
    the shared parameters only: they get T sum_t alpha_t g_t, each head its plain task gradient (the
    heads' updates use grad L^t alone). Weights = T alpha, T = the number of tasks present in the
    batch (the scale of a loss sum); alpha is computed from float64 Gram matrices.

    With `features` (the shared representation Z, e.g. the backbone output) the gradients are taken
    w.r.t. Z: the paper's upper bound (Eq. 7, Theorem 1), T cheap backward passes through the heads
    only; T sum_t alpha_t dL_t/dZ then flows back into the shared parameters. Without it they are
    taken w.r.t. the shared parameters (exact MGDA). `normalize`: "none" (default, as LibMTL: the
    min-norm property holds on the actual gradients) or "loss+" (the official code's choice: alpha is
    computed for g_t / (L_t ||g_t||) and applied to the unnormalised gradients, as there).
    `scale_heads=True` follows the official code instead of Algorithm 2: one backward of
    sum_t T alpha_t L_t, which scales each head by T alpha_t too (a head with alpha_t = 0, e.g. one of
    two identical gradients, then gets no gradient at all).
    """

    name = "mgda"
    defaults = {"normalize": "none", "scale_heads": False}
    uses_features = True

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        if self.options["normalize"] not in ("none", "loss+"):
            raise ValueError(f"weighting='mgda': normalize={self.options['normalize']!r}; "
                             "choose from ['loss+', 'none']")
        if not isinstance(self.options["scale_heads"], bool):
            raise ValueError(f"weighting='mgda': scale_heads={self.options['scale_heads']!r}; "
                             "choose True or False")

    def scales_heads(self):
        return self.options["scale_heads"]

    def combine(self, grads, losses):
        g = grads.double()
        solve = g
        if self.options["normalize"] == "loss+":
            solve = g / (losses.to(g) * g.norm(dim=1)).clamp_min(1e-12)[:, None]
        alpha = torch.as_tensor(min_norm_weights((solve @ solve.T).cpu().numpy()), device=g.device)
        weights = len(alpha) * alpha
        return weights, (weights @ g).to(grads.dtype)


def cagrad_direction(grads: Tensor, c: float = 0.5) -> tuple[Tensor, Tensor]:
    """CAGrad (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021) on the (T, P) task gradients, in float64.

    Returns the float64 (weights (T,), d (P,)), d = weights @ grads, with

        d = (g0 + lambda g_w) / (1 + c^2),     g0 = mean_t g_t,    g_w = sum_t w_t g_t,
        lambda = c ||g0|| / ||g_w||,           w = argmin_{w in simplex}  g_w . g0 + c ||g0|| ||g_w||.

    g0 + lambda g_w is the paper's update (Algorithm 1): the d that maximises min_t <g_t, d> within
    ||d - g0|| <= c ||g0|| (Eq. 2), from the dual problem over the simplex, which is solved with
    scipy's SLSQP as in the official code. Dividing by 1 + c^2 is the official code's default
    (rescale=1). g0, g_w, their norms and d are computed from the gradients themselves in float64,
    not from the Gram matrix: nearly cancelling gradients leave a g0 or g_w far smaller than the
    g_t, which a quadratic form loses to rounding. When g_w (or g0) vanishes, lambda g_w is taken as
    0: d = g0 / (1 + c^2). One task: its plain gradient. A task whose gradient is exactly zero
    contributes nothing to d whatever its coefficient; that coefficient is reported as 0.
    """
    g = grads.double()
    t = len(g)
    if t == 1:
        return torch.ones(1, dtype=torch.float64, device=g.device), g[0]
    uniform = torch.full((t,), 1.0 / t, dtype=torch.float64, device=g.device)
    g0 = g.mean(0)
    radius = c * g0.norm()
    lam, w = 0.0, uniform
    if radius > 0:
        gram = (g @ g.T).cpu().numpy()
        # The minimiser does not change when the Gram matrix is scaled. O(1) entries keep SLSQP's
        # absolute tolerances, and the 1e-8 that smooths the square root where g_w = 0, relative to
        # the gradients' size. max(., 0): rounding can make a quadratic form slightly negative.
        gram = gram / gram.diagonal().mean()
        u = uniform.cpu().numpy()
        r = c * np.sqrt(max(u @ gram @ u, 0.0))

        def objective(x):
            return x @ gram @ u + r * np.sqrt(max(x @ gram @ x, 0.0) + 1e-8)

        x = minimize(objective, u, bounds=[(0, 1)] * t,
                     constraints={"type": "eq", "fun": lambda x: 1 - x.sum()}).x
        x = np.clip(x, 0.0, None)
        w = torch.as_tensor(x / x.sum() if x.sum() > 0 else u, device=g.device)  # back onto the simplex
        gw_norm = (w @ g).norm()
        if gw_norm > 1e-12 * g.norm(dim=1).max():
            lam = radius / gw_norm
    weights = (uniform + lam * w) / (1 + c ** 2)
    weights = torch.where(g.abs().amax(dim=1) > 0, weights, 0.0)
    return weights, (g0 + lam * (w @ g)) / (1 + c ** 2)


class CAGrad(GradientWeighting):
    """CAGrad with `c` (default 0.5): the shared parameters get T d, d from `cagrad_direction`, i.e.
    T (g0 + lambda g_w) / (1 + c^2) (T = the number of tasks present: the scale of a loss sum, the
    plain sum for c = 0); the heads get their plain task gradients, since the paper's update
    changes the shared parameters only. Weights = T times `cagrad_direction`'s."""

    name = "cagrad"
    defaults = {"c": 0.5}

    def combine(self, grads, losses):
        weights, direction = cagrad_direction(grads, float(self.options["c"]))
        return len(grads) * weights, (len(grads) * direction).to(grads.dtype)


# ----------------------------------------------------------------------------------------------
# registry

WEIGHTINGS: dict[str, type[Weighting]] = {cls.name: cls for cls in
                                          (Fixed, Uncertainty, DWA, GradNorm, PCGrad, MGDA, CAGrad)}


def build_weighting(name: str, tasks: list[str], **options) -> Weighting:
    if name not in WEIGHTINGS:
        raise ValueError(f"weighting={name!r}: unknown; choose from {list(WEIGHTINGS)}")
    return WEIGHTINGS[name](tasks, **options)


def weight_summary(history: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """What a run's weighting gave each task over training, from its history (the per-epoch mean weight
    `weight/<task>` the trainer records): a DataFrame with the mean over epochs, the last epoch's weight
    and each task's share (%) of the summed mean weights. The weights multiply the static task weights,
    so a share well below 1/T means the method turned that task down relative to a plain sum."""
    columns = {t: f"weight/{t}" for t in tasks}
    missing = [c for c in columns.values() if c not in history]
    if missing:
        raise ValueError(f"history has no {missing}: not a run that records its weights")
    weights = history.sort_values("epoch")[list(columns.values())]
    weights.columns = list(columns)
    mean = weights.mean()
    return pd.DataFrame({"mean weight": mean, "last epoch": weights.iloc[-1],
                         "share (%)": mean / mean.sum() * 100})
