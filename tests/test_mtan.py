"""MTAN (soft sharing by task attention): output contract for every task, gradients, the masks of Eq. 1,
independence of the tasks' attention, a tiny training run, and its size next to the MTL baseline's."""

import pytest
import torch
import torch.nn.functional as F

from mtl_core import experiments
from mtl_core.losses import task_losses
from mtl_core.models import build_model, list_models, model_summary
from mtl_core.tasks import TASK_NAMES, make_task, make_tasks

DENSE = [name for name in TASK_NAMES if make_task(name).kind == "dense"]
EVERY = DENSE + ["scene"]  # every task the MTL baseline accepts
STUDY_TASKS = experiments.DENSE_TASKS
SMALL = {"backbone": "cnn", "backbone_options": {"widths": (16, 32, 64, 128)}}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (conftest.one_thread)."""


def build_study(name="mtan", task_names=STUDY_TASKS, profile="quick", **options):
    """A model as the study notebooks build it (experiments.base_config: backbone, widths, options), for
    any tasks (the config is validated on the synthetic benchmark's tasks)."""
    config = experiments.base_config(profile, model=name, tasks=STUDY_TASKS, model_options=options)
    return build_model(config.model, task_names, backbone=config.backbone,
                       backbone_options=config.backbone_options, **config.model_options)


def make_batch(tasks, size=(64, 64), batch_size=2, seed=0):
    """Random labels of the right kind for each task (batch-dict conventions of data/README.md)."""
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(batch_size, 3, *size, generator=g)}
    for name, spec in tasks.items():
        if name in ("semseg", "human_parts"):
            batch[name] = torch.randint(0, spec.channels, (batch_size, *size), generator=g)
        elif name == "depth":
            batch[name] = 0.5 + 5 * torch.rand(batch_size, 1, *size, generator=g)
        elif name == "normals":
            batch[name] = F.normalize(torch.randn(batch_size, 3, *size, generator=g), dim=1)
        elif name in ("edge", "sal"):
            batch[name] = (torch.rand(batch_size, 1, *size, generator=g) < 0.2).float()
        elif name == "scene":
            batch[name] = torch.randint(0, spec.channels, (batch_size,), generator=g)
    return batch


def backward(model, tasks, batch, only=None):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(batch["image"])
    losses = task_losses(out, batch, tasks)
    sum(v for k, v in losses.items() if only is None or k == only).backward()
    return out, losses


@pytest.mark.parametrize("setting", ["study", "cnn"])
def test_every_task_gets_its_output_and_every_parameter_learns(setting):
    tasks = make_tasks(EVERY)
    model = build_study(task_names=EVERY) if setting == "study" else build_model("mtan", tasks, **SMALL)
    out, losses = backward(model, tasks, make_batch(tasks, (64, 96)))
    for name, spec in tasks.items():
        expected = (2, spec.channels, 64, 96) if spec.kind == "dense" else (2, spec.channels)
        assert out[name].shape == expected, name
    assert out["deep"] == [] and set(losses) == set(tasks)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: zero or non-finite gradient"


def test_masks_are_in_0_1_and_attend_the_shared_maps():
    """Eq. 1: each task's attended map is its mask times the shared backbone map, at every scale."""
    tasks = make_tasks(STUDY_TASKS)
    model = build_study()
    backward(model, tasks, make_batch(tasks))  # BN statistics of a training step, then evaluate
    with torch.no_grad():
        features = model.eval()(make_batch(tasks, seed=1)["image"], return_features=True)["features"]
    for task in STUDY_TASKS:
        for shared, mask, attended in zip(features["backbone"], features["masks"][task],
                                          features["attended"][task], strict=True):
            assert mask.shape == shared.shape
            assert mask.min() > 0 and mask.max() < 1, task
            torch.testing.assert_close(attended, mask * shared)


def test_a_tasks_loss_reaches_only_its_own_attention():
    """The grouped convolutions are separate modules per task: the depth loss alone leaves the other
    tasks' attention weights without gradient, but reaches the shared f and the backbone."""
    tasks = make_tasks(STUDY_TASKS)
    model = build_study()
    backward(model, tasks, make_batch(tasks), only="depth")
    index = list(tasks).index("depth")
    for s, module in enumerate(model.attention):
        for conv in (module.mask[0], module.mask[3]):
            groups = conv.weight.grad.chunk(len(tasks), dim=0)
            assert groups[index].abs().sum() > 0, s
            assert all(g.abs().sum() == 0 for i, g in enumerate(groups) if i != index), s
        if module.shared is not None:
            assert module.shared.weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_a_tiny_training_run_decreases_the_loss():
    torch.manual_seed(0)
    tasks = make_tasks(STUDY_TASKS)
    model, batch = build_study(), make_batch(tasks, batch_size=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for _ in range(25):
        _, losses = backward(model, tasks, batch)
        totals.append(sum(v.item() for v in losses.values()))  # the loss the step descends
        optimizer.step()
    assert totals[-1] < 0.85 * totals[0], totals


@pytest.mark.parametrize("profile", list(experiments.STUDY))
def test_size_stays_close_to_the_mtl_baseline(profile):
    """At the study settings: the attention adds 10-40 % parameters (1.25x measured) and at most 20 %
    GMACs (1.05x): MTAN vs the baseline compares sharing, not size."""
    size = experiments.study(profile)["size"]

    def measure(name):
        return model_summary(build_study(name, profile=profile), input_size=size).loc["total"]

    mtan, base = measure("mtan"), measure("mtl_baseline")
    assert 1.1 <= mtan["params"] / base["params"] <= 1.4
    assert 1.0 < mtan["gmacs"] / base["gmacs"] <= 1.2


def test_registered_and_errors_name_the_problem():
    assert "mtan" in list_models()
    with pytest.raises(ValueError, match="'detection'.*mtan"):
        build_model("mtan", ["semseg", "detection"], **SMALL)
    with pytest.raises(ValueError, match="head_width"):
        build_model("mtan", ["semseg"], head_width=0, **SMALL)
    with pytest.raises(ValueError, match="60x64"):
        build_model("mtan", ["semseg"], **SMALL)(torch.randn(1, 3, 60, 64))
