"""Loss weightings: how the per-task losses {task: scalar} become the gradients of one training step.

    weighting = build_weighting("dwa", ["semseg", "depth"], temperature=2.0)
    weights = weighting.backward(losses, shared)   # fills .grad of every parameter; {task: weight}
    weighting.epoch_end(mean_losses_of_the_epoch)

Conventions shared by every method:
  * `losses` already include the static per-task loss weights of the task specs.
  * Every method except PCGrad ends with one backward of a linear combination sum_t w_t L_t, so
    every parameter (shared and task-specific) gets the gradient of the same weighted loss, and
    `backward` returns those w_t. PCGrad gives the shared parameters the sum of its projected task
    gradients instead; the task-specific ones get the gradient of sum_t L_t (weights 1).
  * The weights are on the scale of `fixed` with weights 1 (a plain loss sum), so learning rates
    carry over between methods: dwa, gradnorm and mgda weights sum to T (the number of tasks);
    cagrad's sum to T (1 + lambda) / (1 + c^2), i.e. T for c = 0 (see `cagrad_weights`).
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


def write_flat_grad(params: Sequence[Tensor], flat: Tensor, previous: Sequence[Tensor | None]) -> None:
    """Set p.grad = previous + the slice of `flat` that belongs to p, for each parameter in order."""
    start = 0
    for p, prev in zip(params, previous, strict=True):
        grad = flat[start:start + p.numel()].view_as(p).to(p.dtype)
        p.grad = grad if prev is None else prev + grad
        start += p.numel()


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

    def backward(self, losses: dict[str, Tensor], shared: list[torch.nn.Parameter],
                 features: Tensor | None = None) -> dict[str, float]:
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
        weights = {t: torch.exp(-s) for t, s in self.log_vars.items()}
        return weighted_backward(losses, weights, extra=sum(self.log_vars.values()))

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
    epochs. A task whose loss drops slowly (large r_t) gets a large weight.
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

    W is the last shared parameter tensor with more than one dimension (the paper's "last shared
    layer": a weight, not a bias or norm scale); `all_shared=True` uses all shared parameters. As
    G_t is linear in w_t, grad_W L_t (without the weight) is all we need: no double backward.
    The weights have their own Adam (`lr`); after each of its steps they are clipped to stay
    positive and renormalised to sum to T. The network step of the same call uses the weights from
    before the update, as in the paper's Algorithm 1. L_t(0) is the first non-zero loss of a task.
    """

    name = "gradnorm"
    defaults = {"alpha": 1.5, "lr": 0.025, "all_shared": False}
    needs_task_gradients = True

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.weights = torch.ones(len(self.tasks), requires_grad=True)
        self.initial_losses = torch.zeros(len(self.tasks))
        self.optimizer = torch.optim.Adam([self.weights], lr=self.options["lr"])

    def backward(self, losses, shared, features=None):
        layer = shared if self.options["all_shared"] else [([p for p in shared if p.dim() > 1] or shared)[-1]]
        norms = task_gradients({t: losses[t] for t in self.tasks}, layer).norm(dim=1).detach().cpu()
        current = torch.stack([losses[t].detach().float().cpu() for t in self.tasks])
        self.initial_losses = torch.where(self.initial_losses > 0, self.initial_losses, current)
        used = dict(zip(self.tasks, self.weights.detach().tolist(), strict=True))

        ratio = current / self.initial_losses.clamp_min(1e-12)
        ratio = ratio / ratio.mean().clamp_min(1e-12)
        g = self.weights * norms
        target = (g.mean() * ratio ** self.options["alpha"]).detach()
        self.optimizer.zero_grad()
        (g - target).abs().sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            self.weights.clamp_(min=1e-3)
            self.weights.mul_(len(self.tasks) / self.weights.sum())
        return weighted_backward(losses, used)

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
    """Base of PCGrad / MGDA / CAGrad: `combine` maps the (T, P) task gradients to weights (T,) and
    optionally a direction (P,) that replaces the shared parameters' gradient."""

    needs_task_gradients = True
    uses_features = False

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def backward(self, losses, shared, features=None):
        if self.uses_features and features is not None:  # a tensor, or a list of maps (backbone output)
            wrt = list(features) if isinstance(features, list | tuple) else [features]
        else:
            wrt = shared
        grads = task_gradients({t: losses[t] for t in self.tasks}, wrt)
        weights, direction = self.combine(grads, torch.stack([losses[t].detach() for t in self.tasks]))
        # autograd accumulates into an existing .grad in place: keep a copy to add the direction to
        previous = [None if p.grad is None or direction is None else p.grad.clone() for p in shared]
        used = weighted_backward(losses, dict(zip(self.tasks, weights.tolist(), strict=True)))
        if direction is not None:
            write_flat_grad(shared, direction, previous)
        return used


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
    """PCGrad: the shared parameters get the sum of the projected task gradients (option `seed`
    seeds the random task order; the generator state is checkpointed so a resumed run repeats it)."""

    name = "pcgrad"
    defaults = {"seed": 0}

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        self.generator = torch.Generator().manual_seed(int(self.options["seed"]))

    def combine(self, grads, losses):
        return torch.ones(len(grads)), project_conflicting(grads, self.generator).sum(dim=0)

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
    when the optimum lies on a face of the simplex, it converges linearly.
    """
    gram = np.asarray(gram, dtype=np.float64)
    n = len(gram)
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
    """MGDA-UB (Sener & Koltun, NeurIPS 2018): weights = the min-norm convex combination of the task
    gradients (Eq. 3, solved by `min_norm_weights`), times T.

    With `features` (the shared representation Z, e.g. the backbone output) the gradients are taken
    w.r.t. Z: the paper's upper bound (Eq. 7, Theorem 1), T cheap backward passes through the heads
    only. Without it they are taken w.r.t. the shared parameters (exact MGDA). `normalize`: "none"
    (default, as LibMTL: the min-norm property holds on the actual gradients) or "loss+" (the
    official code's choice: the weights are computed for g_t / (L_t ||g_t||) and applied, as in the
    official code, to the unnormalised losses).
    """

    name = "mgda"
    defaults = {"normalize": "none"}
    uses_features = True

    def __init__(self, tasks, **options):
        super().__init__(tasks, **options)
        if self.options["normalize"] not in ("none", "loss+"):
            raise ValueError(f"weighting='mgda': normalize={self.options['normalize']!r}; "
                             "choose from ['loss+', 'none']")

    def combine(self, grads, losses):
        if self.options["normalize"] == "loss+":
            grads = grads / (losses.to(grads) * grads.norm(dim=1)).clamp_min(1e-12)[:, None]
        w = min_norm_weights((grads @ grads.T).double().cpu().numpy())
        return torch.as_tensor(w * len(w)), None


def cagrad_weights(grads: Tensor, c: float = 0.5) -> Tensor:
    """CAGrad (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021): d = (g0 + lambda g_w) / (1 + c^2) with
    g0 the average gradient, returned as weights (T,) on the task gradients: d = weights @ grads.

    d maximises min_t <g_t, d> within ||d - g0|| <= c ||g0|| (Eq. 2). Its dual over the simplex,
    min_w g_w.g0 + c ||g0|| ||g_w|| (g_w = sum_t w_t g_t), is solved with scipy's SLSQP as in the
    official code, and lambda = c ||g0|| / ||g_w||. The official rescale=1 divides by 1 + c^2.
    """
    t = len(grads)
    gram = (grads @ grads.T).double().cpu().numpy()
    uniform = np.full(t, 1.0 / t)
    radius = c * np.sqrt(uniform @ gram @ uniform + 1e-8)
    if t == 1 or radius == 0:
        return torch.as_tensor(uniform)

    def objective(w):
        return w @ gram @ uniform + radius * np.sqrt(w @ gram @ w + 1e-8)

    w = minimize(objective, uniform, bounds=[(0, 1)] * t,
                 constraints={"type": "eq", "fun": lambda x: 1 - x.sum()}).x
    lam = radius / (np.sqrt(w @ gram @ w) + 1e-8)
    return torch.as_tensor((uniform + lam * w) / (1 + c ** 2))


class CAGrad(GradientWeighting):
    """CAGrad with `c` (default 0.5); weights = `cagrad_weights` times T (the scale of a loss sum)."""

    name = "cagrad"
    defaults = {"c": 0.5}

    def combine(self, grads, losses):
        return cagrad_weights(grads, float(self.options["c"])) * len(grads), None


# ----------------------------------------------------------------------------------------------
# registry

WEIGHTINGS: dict[str, type[Weighting]] = {cls.name: cls for cls in
                                          (Fixed, Uncertainty, DWA, GradNorm, PCGrad, MGDA, CAGrad)}


def build_weighting(name: str, tasks: list[str], **options) -> Weighting:
    if name not in WEIGHTINGS:
        raise ValueError(f"weighting={name!r}: unknown; choose from {list(WEIGHTINGS)}")
    return WEIGHTINGS[name](tasks, **options)
