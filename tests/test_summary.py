"""model_summary: parameters and FLOPs per component."""

import pytest
import torch
from torch import nn

from mtl_core.models import build_model, model_summary


def test_components_sum_to_the_total():
    model = build_model("mtinet", ["semseg", "depth"], backbone_options={"widths": (16, 32, 64, 128)})
    model.train()
    table = model_summary(model, input_size=(64, 96))
    components = ["backbone", "initial", "fpm", "distillation", "aggregation"]
    assert list(table.index) == components + ["(other)", "total"]
    parts = table.drop(index="total")
    assert parts["params"].sum() == table.loc["total", "params"] == sum(p.numel() for p in model.parameters())
    assert parts["flops"].sum() == table.loc["total", "flops"]
    assert (parts.drop(index="(other)")["flops"] > 0).all()
    assert table["gmacs"].tolist() == pytest.approx((table["flops"] / 2e9).tolist())
    assert model.training  # the summary runs in eval mode and restores the mode


def test_single_conv_known_answer():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    table = model_summary(conv, input_size=(64, 96), batch_size=2)
    assert table.loc["total", "flops"] == 2 * 2 * 3 * 8 * 3 * 3 * 64 * 96  # 2 * batch * Cin*Cout*k²*H*W
    assert table.loc["total", "params"] == 3 * 8 * 9 + 8


class _FunctionalTail(nn.Module):
    """A child module plus a matrix product in the model's own forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1, bias=False)
        self.mix = nn.Parameter(torch.randn(4, 4))

    def forward(self, images):
        x = self.stem(images)  # (B, 4, H, W)
        return torch.einsum("bchw,cd->bdhw", x, self.mix)


def test_flops_outside_children_go_to_other():
    table = model_summary(_FunctionalTail(), input_size=(32, 32))
    assert table.loc["stem", "flops"] == 2 * 3 * 4 * 32 * 32
    assert table.loc["(other)", "flops"] == 2 * 4 * 4 * 32 * 32
    assert table.loc["(other)", "params"] == 16


@pytest.mark.parametrize("size", [(60, 64), (64, 0), (64,), (64, 64, 64)])
def test_bad_input_size(size):
    with pytest.raises(ValueError, match="input_size"):
        model_summary(nn.Conv2d(3, 3, 1), input_size=size)
