"""Every backbone honours the multi-scale contract: 4 maps whose channels and strides it declares."""

import copy

import pytest
import torch
from torch import nn

from mtl_core.affinity import scale_parameter_groups
from mtl_core.models import build_backbone
from mtl_core.models.hrnet import HRNet


@pytest.mark.parametrize("name, options, strides", [
    ("hrnet", {}, [2, 4, 8, 16]),
    ("hrnet", {"stem_stride": 4, "num_modules": (1, 2, 1), "blocks": 2}, [4, 8, 16, 32]),
    ("cnn", {}, [4, 8, 16, 32]),
    ("cnn", {"dilated": True}, [4, 8, 16, 16]),
    ("hrnet_w18_small_v2", {}, [4, 8, 16, 32]),
    ("resnet18", {}, [4, 8, 16, 32]),
    ("resnet18", {"dilated": True}, [4, 8, 16, 16]),
    ("resnet50", {"dilated": True}, [4, 8, 16, 16]),
])
def test_feature_maps_match_declared_channels_and_strides(name, options, strides):
    backbone = build_backbone(name, **options).eval()
    assert backbone.strides == strides
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = backbone(images)
    assert len(maps) == 4
    for fmap, channels, stride in zip(maps, backbone.channels, strides, strict=True):
        assert fmap.shape == (1, channels, 64 // stride, 96 // stride)
    # the fused map (HRNetV2's output, read by the MTL baseline and PAD-Net): every map at the finest size
    fused = backbone.fuse(maps)
    assert fused.shape == (1, backbone.fused_channels, 64 // strides[0], 96 // strides[0])
    assert backbone.fused_channels == sum(backbone.channels)
    torch.testing.assert_close(fused[:, :backbone.channels[0]], maps[0])


def test_hrnet_has_the_papers_branch_widths():
    backbone = build_backbone("hrnet_w18_small_v2")
    assert backbone.channels == [18, 36, 72, 144]
    assert sum(p.numel() for p in backbone.parameters()) == pytest.approx(3.86e6, rel=0.01)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    for name in ("hrnet_w18_small_v2", "resnet18"):
        with pytest.raises(FileNotFoundError, match="checkpoint"):
            build_backbone(name, checkpoint=str(tmp_path / "nope.pth"))


def test_resnet_loads_a_local_checkpoint(tmp_path):
    source = build_backbone("resnet18")
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    loaded = build_backbone("resnet18", checkpoint=str(path))
    assert torch.equal(loaded.stem[0].weight, net.conv1.weight)
    assert not torch.equal(source.stem[0].weight, net.conv1.weight)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="backbone='vgg'.*cnn"):
        build_backbone("vgg")


def test_hrnet_every_parameter_learns_from_every_output():
    torch.manual_seed(0)
    backbone = HRNet().train()
    maps = backbone(torch.randn(2, 3, 64, 64))
    for fmap in maps:  # each map alone reaches the stem and every branch: they all fuse every branch
        backbone.zero_grad(set_to_none=True)
        (fmap * torch.randn_like(fmap)).sum().backward(retain_graph=True)
        for name in ("stem.0.weight", "stages.0.blocks.2.0.conv1.weight", "stages.3.blocks.2.0.conv1.weight"):
            assert backbone.get_parameter(name).grad.abs().sum() > 0, name
    backbone.zero_grad(set_to_none=True)
    sum((m * torch.randn_like(m)).sum() for m in maps).backward()
    for name, p in backbone.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def timm_module(widths):
    """timm's HRNet exchange unit (HighResolutionModule): BasicBlocks per branch, then HRNet's fusion."""
    from timm.models.hrnet import BasicBlock, HighResolutionModule

    n = len(widths)
    return HighResolutionModule(n, BasicBlock, (1,) * n, list(widths), tuple(widths), "SUM")


def randomise_batch_norm(module):
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.normal_()
            bn.bias.data.normal_()


def load_in_order(target: nn.Module, sources: list[nn.Module]):
    """Copy the state of `sources`, concatenated along the output channels, into `target` tensor by tensor."""
    states = [list(source.state_dict().values()) for source in sources]
    merged = [parts[0] if parts[0].dim() == 0 else torch.cat(parts) for parts in zip(*states, strict=True)]
    target.load_state_dict(dict(zip(target.state_dict(), merged, strict=True)))


def flat(steps) -> nn.Sequential:
    return nn.Sequential(*[m for step in steps for m in step])


def test_hrnet_exchange_unit_is_hrnets_fusion():
    """The stacked convolutions compute exactly timm's HighResolutionModule (a path per branch pair)."""
    torch.manual_seed(0)
    widths = (4, 6, 8, 10)
    ours, reference = HRNet(widths, stem_width=8).eval(), timm_module(widths).eval()
    randomise_batch_norm(reference)
    unit = 2  # the unit with four branches
    fuse = reference.fuse_layers  # fuse[target][source]
    for s, branch in enumerate(ours.stages):
        branch.blocks[str(unit)][0].load_state_dict(reference.branches[s][0].state_dict())
        if s > 0:  # 1x1 convs to every finer branch, output channels in branch order
            load_in_order(branch.up[str(unit)], [flat([fuse[t][s][:2]]) for t in range(s)])
        if s < 3:  # first stride-2 conv of every path to a coarser branch, then the rest of each path
            first, *rest = branch.down[str(unit)]
            load_in_order(first, [flat([fuse[t][s][0][:2]]) for t in range(s + 1, 4)])
            for path, t in zip(rest, range(s + 2, 4), strict=True):
                load_in_order(path, [flat(fuse[t][s][1:])])
    maps = [torch.randn(2, c, 16 >> s, 24 >> s) for s, c in enumerate(widths)]
    with torch.no_grad():
        expected = reference([m.clone() for m in maps])
        got = ours.exchange(maps, unit)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e)


def test_hrnet_w18_small_v2_topology_has_timms_parameter_count():
    """HRNet-W18-small-v2's layout (BasicBlocks in stage 1) built here and by timm: the same layers."""
    from timm.models.hrnet import HighResolutionNetFeatures, cfg_cls

    cfg = copy.deepcopy(cfg_cls["hrnet_w18_small_v2"])
    cfg["stage1"].update(block_type="BASIC", num_channels=(64,), num_blocks=(2,))
    reference = HighResolutionNetFeatures(cfg, feature_location="", out_indices=(1, 2, 3, 4))
    ours = HRNet((18, 36, 72, 144), stem_width=64, stem_stride=4, stem_blocks=2, num_modules=(1, 3, 2),
                 blocks=2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(reference)
    assert ours.channels == reference.feature_info.channels() and ours.strides == [4, 8, 16, 32]


def test_hrnet_parameters_are_grouped_per_scale():
    """stem + stages[s] cover every parameter once: per-scale analyses (notebooks 02, 05) get a group each."""
    backbone = HRNet()
    groups = scale_parameter_groups(backbone)
    ids = [id(p) for group in groups for p in group]
    assert len(groups) == 4 and len(ids) == len(set(ids)) == len(list(backbone.parameters()))


def test_hrnet_bad_options_name_them():
    with pytest.raises(ValueError, match="stem_stride=8"):
        HRNet(stem_stride=8)
    with pytest.raises(ValueError, match="widths"):
        HRNet(widths=(8, 16, 32))


def test_hrnet_channels_last_layout_changes_speed_not_values():
    torch.manual_seed(0)
    fast, plain = HRNet().eval(), HRNet(channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(fast(images), plain(images), strict=True):
            assert a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
