"""Dense multi-task models: the output contract, gradients, MTI-Net's switches, sizes of the NYUD builds
and of the study settings."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_core import experiments
from mtl_core.losses import task_losses
from mtl_core.models import build_model, model_summary
from mtl_core.models.baselines import head_width_for
from mtl_core.models.heads import BasicBlock, SqueezeExcitation
from mtl_core.models.mtinet import FeaturePropagation
from mtl_core.models.padnet import MultiModalDistillation
from mtl_core.tasks import make_task, make_tasks

DENSE = ["semseg", "depth", "normals", "edge"]
SIZES = [(64, 64), (64, 96)]
# the "cnn" backbone at half its default widths, and a narrow PAD-Net: same graphs, fast on 2 CPU cores
SMALL = {"backbone": "cnn", "backbone_options": {"widths": (16, 32, 64, 128)}}
OPTIONS = {"padnet": {"width": 32}}


def build(name, task_names, **options):
    return build_model(name, task_names, **SMALL, **OPTIONS.get(name, {}), **options)


def build_study(name, task_names=DENSE, profile="quick", **options):
    """A model as the study notebooks build it: experiments.base_config's backbone, widths and options."""
    config = experiments.base_config(profile, model=name, tasks=tuple(task_names), model_options=options)
    return build_model(config.model, config.tasks, backbone=config.backbone,
                       backbone_options=config.backbone_options, **config.model_options)


def count(model):
    return sum(p.numel() for p in model.parameters())


def make_batch(tasks, size, batch_size=2, seed=0):
    """A random batch following the batch-dict conventions (data/README.md), with some missing annotations."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    batch = {"image": torch.randn(batch_size, 3, h, w, generator=g)}
    for name, spec in tasks.items():
        if name == "semseg":
            labels = torch.randint(0, spec.channels, (batch_size, h, w), generator=g)
            labels[:, :3] = 255
            batch[name] = labels
        elif name == "depth":
            depth = 0.5 + 5 * torch.rand(batch_size, 1, h, w, generator=g)
            depth[..., :2, :] = 0
            batch[name] = depth
        elif name == "normals":
            batch[name] = F.normalize(torch.randn(batch_size, 3, h, w, generator=g), dim=1)
        elif name == "edge":
            edge = (torch.rand(batch_size, 1, h, w, generator=g) < 0.1).float()
            edge[..., :2] = 255
            batch[name] = edge
        elif name == "scene":
            batch[name] = torch.randint(0, spec.channels, (batch_size,), generator=g)
    return batch


def wake_squeeze_excitation(model):
    """FPM's squeeze-and-excitation has C/16 hidden units (2 at width 32): at random init all of them can
    be dead ReLUs for a batch, which zeroes their gradients. A positive bias keeps them alive so that the
    gradient checks test the wiring, not the luck of the initialisation."""
    for module in model.modules():
        if isinstance(module, SqueezeExcitation):
            nn.init.constant_(module.fc[0].bias, 1.0)


def train_step(model, tasks, size):
    """Forward + backward of the summed task losses; returns the output and the losses."""
    wake_squeeze_excitation(model)
    batch = make_batch(tasks, size)
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(batch["image"])
    losses = task_losses(out, batch, tasks)
    sum(losses.values()).backward()
    return out, losses


def assert_every_parameter_learns(model, unused=()):
    """Every parameter gets a finite, nonzero gradient, except those listed as `unused` (name prefixes)."""
    for name, p in model.named_parameters():
        if name.startswith(tuple(unused)):
            assert p.grad is None, f"{name}: listed as unused but has a gradient"
            continue
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient"


def assert_contract(out, tasks, size, batch_size=2, auxiliary=()):
    for name, spec in tasks.items():
        if name in auxiliary:
            assert name not in out, name
            continue
        if spec.kind == "dense":
            assert out[name].shape == (batch_size, spec.channels, *size), name
        else:
            assert out[name].shape == (batch_size, spec.channels), name
    assert isinstance(out["deep"], list)
    for deep in out["deep"]:
        for name, pred in deep.items():
            assert pred.shape[:2] == (batch_size, tasks[name].channels) and pred.dim() == 4, name


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name, task_names", [
    ("mtl_baseline", DENSE + ["scene"]), ("single_task", ["semseg"]), ("single_task", ["depth"]),
    ("padnet", DENSE), ("mtinet", DENSE)], ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_forward_backward(name, task_names, size):
    tasks = make_tasks(task_names)
    model = build(name, tasks)
    out, losses = train_step(model, tasks, size)
    assert_contract(out, tasks, size)
    assert set(losses) == set(tasks) and all(torch.isfinite(v) for v in losses.values())
    assert_every_parameter_learns(model)
    expected_deep = {"mtl_baseline": 0, "single_task": 0, "padnet": 1, "mtinet": 4}[name]
    assert len(out["deep"]) == expected_deep


@pytest.mark.parametrize("options", [
    {"fpm": False}, {"distillation": False}, {"deep_supervision": False}, {"aggregation": False},
    {"num_scales": 1}, {"num_scales": 2}, {"num_scales": 3}, {"auxiliary_tasks": ("edge", "normals")}],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_mtinet_switches_train(options):
    tasks = make_tasks(DENSE)
    model = build("mtinet", tasks, **options)
    out, losses = train_step(model, tasks, (64, 96))
    assert_contract(out, tasks, (64, 96), auxiliary=options.get("auxiliary_tasks", ()))
    # with fewer scales the plain CNN's coarser stages feed nothing (HRNet's branches would: they fuse)
    unused = [f"backbone.stages.{i}." for i in range(options.get("num_scales", 4), 4)]
    assert_every_parameter_learns(model, unused)
    assert set(losses) == set(tasks)


def parameter_names(model):
    return {name for name, _ in model.named_parameters()}


def test_fpm_switch_removes_exactly_the_fpm():
    full, without = build("mtinet", DENSE), build("mtinet", DENSE, fpm=False)
    removed = parameter_names(full) - parameter_names(without)
    assert removed and all(n.startswith("fpm.") for n in removed)
    assert parameter_names(without) <= parameter_names(full)
    # the finer scales' task branches get only the backbone map: narrower first convolution
    assert without.initial[0].in_channels == 16
    assert full.initial[0].in_channels == 16 + 32


def test_distillation_switch_removes_exactly_the_distillation():
    full, without = build("mtinet", DENSE), build("mtinet", DENSE, distillation=False)
    distillation = {n for n in parameter_names(full) if n.startswith("distillation.")}
    assert distillation and parameter_names(full) - parameter_names(without) == distillation
    assert parameter_names(without) <= parameter_names(full)
    out = without(torch.randn(1, 3, 64, 64), return_features=True)
    assert out["features"]["attention"] == [{}] * 4
    for initial, scale in zip(out["features"]["initial"], out["features"]["scales"], strict=True):
        assert all(scale[t] is initial[t] for t in DENSE)  # passed through undistilled


def test_deep_supervision_switch():
    model = build("mtinet", DENSE, deep_supervision=False)
    assert model(torch.randn(1, 3, 64, 64))["deep"] == []
    assert not any(".predictions." in n for n in parameter_names(model))
    with pytest.raises(ValueError, match="deep_supervision"):
        build("mtinet", DENSE, deep_supervision=False, auxiliary_tasks=("edge",))


def test_num_scales_counts_from_the_finest():
    sizes = {}
    for k in (1, 2, 3, 4):
        model = build("mtinet", DENSE, num_scales=k)
        out = model(torch.randn(2, 3, 64, 96))
        assert len(out["deep"]) == k
        for s, deep in enumerate(out["deep"]):  # finest first: scale s has stride 4 * 2**s
            assert set(deep) == set(DENSE)
            assert deep["semseg"].shape[-2:] == (64 // (4 * 2**s), 96 // (4 * 2**s))
        assert len(model.fpm) == k - 1 and len(model.distillation) == k
        sizes[k] = sum(p.numel() for p in model.parameters())
    assert sizes[1] < sizes[2] < sizes[3] < sizes[4]
    with pytest.raises(ValueError, match="num_scales"):
        build("mtinet", DENSE, num_scales=5)


def test_aggregation_switch_uses_the_finest_scale_only():
    full, single = build("mtinet", DENSE), build("mtinet", DENSE, aggregation=False)
    assert full.aggregation.heads["depth"].body[0].in_channels == 16 + 32 + 64 + 128
    assert single.aggregation.heads["depth"].body[0].in_channels == 16
    # same head type; distillation only where its output is used (the 1/4 scale)
    coarser = ("distillation.1.", "distillation.2.", "distillation.3.")
    assert parameter_names(full) - parameter_names(single) == {
        n for n in parameter_names(full) if n.startswith(coarser)}
    features = single(torch.randn(1, 3, 64, 64), return_features=True)["features"]
    assert len(features["scales"]) == len(features["attention"]) == 1 and len(features["initial"]) == 4


def test_auxiliary_tasks_only_in_deep_supervision_and_still_learn():
    tasks = make_tasks(DENSE)
    model = build("mtinet", tasks, auxiliary_tasks=("edge", "normals"))
    out, losses = train_step(model, tasks, (64, 64))
    assert {"semseg", "depth"} <= set(out) and not {"edge", "normals"} & set(out)
    assert all({"edge", "normals"} <= set(deep) for deep in out["deep"])
    assert losses["edge"] > 0 and losses["normals"] > 0
    # the auxiliary losses reach their own branches and, through FPM and distillation, shared layers
    batch = make_batch(tasks, (64, 64))
    model.zero_grad(set_to_none=True)
    task_losses(model(batch["image"]), batch, {"edge": tasks["edge"]})["edge"].backward()
    assert model.initial[0].predictions["edge"].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0][0].weight.grad.abs().sum() > 0
    # auxiliary tasks send distillation messages but receive none, and have no final head
    receivers = model.distillation[0].receivers
    assert receivers == {"semseg": ["depth"], "depth": ["semseg"], "normals": ["semseg", "depth"],
                         "edge": ["semseg", "depth"]}
    assert set(model.aggregation.heads) == {"semseg", "depth"}
    with pytest.raises(ValueError, match="sal"):
        build("mtinet", DENSE, auxiliary_tasks=("sal",))


def test_grouped_basic_block_is_separate_blocks_side_by_side():
    torch.manual_seed(0)
    n, cin, cout = 3, 5, 4
    grouped = BasicBlock(n * cin, n * cout, groups=n, project=True)
    for bn in (grouped.bn1, grouped.bn2, grouped.shortcut[1]):  # non-trivial BN statistics and affine
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    x = torch.randn(2, n * cin, 8, 8)
    y = grouped.eval()(x)
    grouped_state = grouped.state_dict()
    for i in range(n):
        single = BasicBlock(cin, cout, project=True)
        single.load_state_dict({name: value if value.dim() == 0 else value.chunk(n)[i]
                                for name, value in grouped_state.items()})
        expected = single.eval()(x[:, i * cin:(i + 1) * cin])
        torch.testing.assert_close(y[:, i * cout:(i + 1) * cout], expected)
    assert sum(p.numel() for p in grouped.parameters()) == n * sum(p.numel() for p in single.parameters())


def test_distillation_implements_the_message_passing_equation():
    torch.manual_seed(0)
    c, tasks, targets = 4, ["semseg", "depth", "edge"], ["semseg", "depth"]
    module = MultiModalDistillation(tasks, c, targets=targets)
    features = {t: torch.randn(2, c, 6, 6) for t in tasks}
    out, attention = module(features)
    for t in targets:  # F_t + sum_{a != t} sigmoid(W_gate * F_a) * (W_msg * F_a)
        expected = features[t].clone()
        for a in tasks:
            if a == t:
                continue
            k, n = module.receivers[a].index(t), len(module.receivers[a])
            weights = module.source[a].weight.chunk(2 * n)
            gate = torch.sigmoid(F.conv2d(features[a], weights[k], padding=1))
            expected += gate * F.conv2d(features[a], weights[n + k], padding=1)
            torch.testing.assert_close(attention[t][a], gate)
        torch.testing.assert_close(out[t], expected)
    assert set(out) == set(targets) and set(attention["semseg"]) == {"depth", "edge"}
    # one (gate, message) pair of C x C 3x3 convolutions per (target, source != target)
    assert sum(p.numel() for p in module.parameters()) == 2 * 4 * c * c * 9


def test_mtinet_features_structure():
    model = build("mtinet", DENSE).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 64, 96), return_features=True)["features"]
    widths, strides = (16, 32, 64, 128), (4, 8, 16, 32)
    assert features["strides"] == list(strides)
    for key in ("initial", "scales", "attention"):
        assert len(features[key]) == 4, key
    for s, (c, stride) in enumerate(zip(widths, strides, strict=True)):
        shape = (2, c, 64 // stride, 96 // stride)
        assert all(features["initial"][s][t].shape == shape for t in DENSE)
        assert all(features["scales"][s][t].shape == shape for t in DENSE)
        attention = features["attention"][s]
        assert set(attention) == set(DENSE)
        for target, sources in attention.items():
            assert set(sources) == set(DENSE) - {target}
            for gate in sources.values():
                assert gate.shape == shape and gate.min() >= 0 and gate.max() <= 1
    assert len(features["fpm_masks"]) == 3
    for j, masks in enumerate(features["fpm_masks"]):  # entry j: the FPM at scale j + 1
        c, stride = widths[j + 1], strides[j + 1]
        assert set(masks) == set(DENSE)
        assert all(m.shape == (2, c, 64 // stride, 96 // stride) for m in masks.values())
        # over the task-major concatenation, every group of N = 4 consecutive channels sums to 1
        groups = torch.cat([masks[t] for t in DENSE], dim=1).unflatten(1, (c, 4)).sum(dim=2)
        torch.testing.assert_close(groups, torch.ones(2, c, 64 // stride, 96 // stride))


def test_padnet_features_structure():
    model = build("padnet", DENSE).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), return_features=True)
    features = out["features"]
    assert features["shared"].shape == (2, 16 + 32 + 64 + 128, 16, 16)
    assert all(features["distilled"][t].shape == (2, 32, 16, 16) for t in DENSE)
    assert set(out["deep"][0]) == set(DENSE)
    for target, sources in features["attention"].items():
        assert set(sources) == set(DENSE) - {target}
        assert all(0 <= g.min() and g.max() <= 1 for g in sources.values())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no_such_model"):
        build_model("no_such_model", DENSE)
    with pytest.raises(ValueError, match="no_such_backbone"):
        build_model("mtinet", DENSE, backbone="no_such_backbone")
    with pytest.raises(ValueError, match="no_such_task"):
        build_model("mtinet", ["semseg", "no_such_task"])
    with pytest.raises(ValueError, match="60x64"):
        build("mtl_baseline", ["semseg"])(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="detection"):
        build("mtl_baseline", ["semseg", "detection"])
    with pytest.raises(ValueError, match="exactly one task"):
        build("single_task", ["semseg", "depth"])
    for name in ("padnet", "mtinet"):
        with pytest.raises(ValueError, match="'scene'"):
            build(name, ["semseg", "scene"])


def test_nyud_hrnet_sizes_match_the_official_code():
    """HRNet-18 on NYUD (semseg 40 classes + depth) at 480x640 vs the official code's 8.58 M / 17.1 GMACs."""
    tasks = {"semseg": make_task("semseg", num_classes=40), "depth": make_task("depth")}
    official = {"mtinet": (8.58e6, 17.1), "padnet": (7.02e6, 70.3), "mtl_baseline": (4.02e6, 12.8)}
    measured = {}
    for name, (params, _) in official.items():
        model = build_model(name, tasks, backbone="hrnet_w18_small_v2")
        table = model_summary(model, input_size=(480, 640))
        measured[name] = (table.loc["total", "params"], table.loc["total", "gmacs"])
        print(f"{name}: {measured[name][0] / 1e6:.2f}M params, {measured[name][1]:.1f} GMACs "
              f"(official {params / 1e6:.2f}M, {official[name][1]} GMACs)")
        assert abs(measured[name][0] - params) / params < 0.15, name
        assert abs(measured[name][1] - official[name][1]) / official[name][1] < 0.25, name
    assert measured["padnet"][1] > 3 * measured["mtinet"][1]
    assert measured["mtinet"][1] > measured["mtl_baseline"][1]


# ---------------------------------------------------------------------------------------------------------
# the study settings: the small HRNet (experiments.STUDY) and the models' options


def test_base_config_picks_the_study_backbone_and_options():
    s = experiments.study("quick")
    dense = experiments.base_config("quick", model="mtinet", tasks=("semseg", "depth"), backbone=None,
                                    model_options={"num_scales": 2})
    assert (dense.backbone, dense.backbone_options) == ("hrnet", {"widths": list(s["widths"])})
    assert dense.model_options == {"task_widths": [8, 16, 16, 16], "num_scales": 2}
    wider = experiments.base_config("quick", model="padnet", model_options={"width": 24})
    assert wider.model_options == {"width": 24}  # explicit options win
    on_cnn = experiments.base_config("quick", model="mtinet", backbone="cnn")
    assert on_cnn.model_options == {} and on_cnn.backbone_options == {"widths": list(s["cnn_widths"])}
    rock = experiments.base_config("quick", model="rock", tasks=("detection", "depth"),
                                   backbone_options={"dilated": True})
    assert rock.backbone == "cnn"
    assert rock.backbone_options == {"widths": list(s["cnn_widths"]), "dilated": True}
    assert rock.model_options == {}


@pytest.mark.parametrize("name, task_names", [
    ("mtl_baseline", DENSE + ["scene"]), ("single_task", ["normals"]), ("padnet", DENSE), ("mtinet", DENSE)],
    ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_study_models_train_every_parameter(name, task_names):
    tasks = make_tasks(task_names)
    model = build_study(name, task_names)
    assert model.backbone.strides == [2, 4, 8, 16]  # 64x64: maps of 32, 16, 8 and 4 pixels
    out, losses = train_step(model, tasks, (64, 96))
    assert_contract(out, tasks, (64, 96))
    assert set(losses) == set(tasks) and all(torch.isfinite(v) for v in losses.values())
    assert_every_parameter_learns(model)


def test_one_scale_mtinet_still_trains_every_hrnet_branch():
    """With 1 scale MTI-Net reads only the finest map, yet every branch reaches it through the fusion;
    only the last unit's paths towards the coarser branches (whose maps go unused) get no gradient."""
    tasks = make_tasks(DENSE)
    model = build_study("mtinet", num_scales=1)
    train_step(model, tasks, (64, 64))
    assert_every_parameter_learns(model, unused=[f"backbone.stages.{s}.down.2." for s in range(3)])


def test_padnet_reads_the_fused_multiresolution_map():
    """As the official PAD-Net on HRNet (HighResolutionFuse): all branches at the finest scale, concatenated,
    then a 1x1 conv + BN + ReLU."""
    model = build_study("padnet").eval()
    assert model.initial.in_channels == model.backbone.fused_channels == 8 + 16 + 32 + 64
    assert model.fusion[0].kernel_size == (1, 1) and model.fusion[0].out_channels == 120
    with torch.no_grad():
        images = torch.randn(1, 3, 64, 64)
        features = model(images, return_features=True)["features"]
        fused = model.backbone.fuse(model.backbone(images))
        torch.testing.assert_close(features["shared"], model.fusion(fused))
    assert features["shared"].shape == (1, 120, 32, 32)


def test_fpm_normalises_over_the_official_channel_groups():
    """Official FPM (models/mti_net.py): softmax over dim 2 of the logits viewed as (B, N·C/N, N, H, W), i.e.
    over every N consecutive channels of the task-major concatenation. Hand-built: the features are their
    own logits; N = 2 tasks of 4 channels give the groups (semseg 0, 1), (semseg 2, 3), (depth 0, 1), ..."""
    fpm = FeaturePropagation(["semseg", "depth"], 4).eval()
    fpm.mask_logits = nn.Identity()
    semseg = torch.tensor([0.0, math.log(3), 1.0, 1.0]).view(1, 4, 1, 1)
    depth = torch.tensor([5.0, 5.0, 0.0, math.log(4)]).view(1, 4, 1, 1)
    _, masks = fpm({"semseg": semseg, "depth": depth})
    torch.testing.assert_close(masks["semseg"].flatten(), torch.tensor([0.25, 0.75, 0.5, 0.5]))
    torch.testing.assert_close(masks["depth"].flatten(), torch.tensor([0.5, 0.5, 0.2, 0.8]))


def test_fpm_masks_match_the_official_formula():
    torch.manual_seed(0)
    n, c = len(DENSE), 8
    fpm = FeaturePropagation(DENSE, c).eval()
    features = {t: torch.randn(2, c, 5, 6) for t in DENSE}
    with torch.no_grad():
        _, masks = fpm(features)
        concat = torch.cat([features[t] for t in DENSE], dim=1)
        b, total, h, w = concat.shape
        official = F.softmax(fpm.mask_logits(concat).view(b, total // n, n, h, w), dim=2)
    torch.testing.assert_close(torch.cat([masks[t] for t in DENSE], dim=1), official.view(b, total, h, w))
    torch.testing.assert_close(official.sum(dim=2), torch.ones(b, total // n, h, w))  # the task axis


def test_mtinet_task_widths_set_every_scale():
    widths = (4, 6, 8, 10)
    model = build("mtinet", DENSE, task_widths=widths).eval()
    backbone = (16, 32, 64, 128)
    for s in range(4):  # scale s reads its backbone map + the propagated features of scale s + 1
        assert model.initial[s].in_channels == backbone[s] + (widths[s + 1] if s < 3 else 0)
    assert model.aggregation.heads["depth"].body[0].in_channels == sum(widths)
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64), return_features=True)["features"]
    assert [features["scales"][s]["edge"].shape[1] for s in range(4)] == list(widths)
    assert [m["edge"].shape[1] for m in features["fpm_masks"]] == list(widths[1:])
    with pytest.raises(ValueError, match="task_widths"):
        build("mtinet", DENSE, task_widths=(8, 8))


def test_head_width_widens_the_baseline_heads():
    default, wide = build("mtl_baseline", DENSE), build("mtl_baseline", DENSE, head_width=300)
    assert default.heads["depth"].body[0].out_channels == 16 + 32 + 64 + 128  # HRNet's head: the fused width
    assert wide.heads["depth"].body[0].out_channels == 300 and wide.heads["depth"].body[0].in_channels == 240
    assert count(build("single_task", ["depth"], head_width=300)) > count(build("single_task", ["depth"]))
    with pytest.raises(ValueError, match="head_width"):
        build("mtl_baseline", DENSE, head_width=0)


def test_head_width_for_matches_mtinets_parameter_count():
    """The capacity control: a baseline as large as MTI-Net at the study settings, within 5 %."""
    target = count(build_study("mtinet"))
    config = experiments.base_config("quick", model="mtl_baseline", tasks=tuple(DENSE))
    width = head_width_for(target, DENSE, backbone=config.backbone, backbone_options=config.backbone_options)
    matched = build_study("mtl_baseline", head_width=width)
    assert abs(count(matched) - target) / target < 0.05
    assert width > matched.backbone.fused_channels  # wider than the default heads
    with pytest.raises(ValueError, match="dense"):
        head_width_for(target, ["scene"])


@pytest.mark.parametrize("profile", list(experiments.STUDY))
def test_study_settings_keep_the_papers_proportions(profile):
    """MTI-Net's paper (HRNet-18, NYUD): MTI-Net 2.1x the MTL baseline's parameters and 1.3x its GMACs,
    PAD-Net the most GMACs; a single-task network is the baseline with one head."""
    size = experiments.study(profile)["size"]

    def measure(name, task_names=DENSE):
        total = model_summary(build_study(name, task_names, profile=profile), input_size=size).loc["total"]
        return total["params"], total["gmacs"]

    (base_params, base_gmacs), (mti_params, mti_gmacs) = measure("mtl_baseline"), measure("mtinet")
    for task in DENSE:
        assert 0.75 < measure("single_task", [task])[0] / base_params < 1.25, task
    assert 1.5 <= mti_params / base_params <= 3
    assert 1 < mti_gmacs / base_gmacs <= 2
    assert measure("padnet")[1] > mti_gmacs
