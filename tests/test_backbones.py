"""Every backbone honours the multi-scale contract: 4 maps whose channels and strides it declares."""

import pytest
import torch

from mtl_core.models import build_backbone


@pytest.mark.parametrize("name, options, strides", [
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
