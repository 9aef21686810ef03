"""mtl_core.resize: bilinear resizing by matrix products must be F.interpolate's, in value and gradient,
for up- and downsampling, every layout and dtype training uses, and be invisible to FLOP counting."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mtl_core.resize import resize_bilinear


def interpolate(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("shape, size", [((2, 3, 4, 4), (16, 16)),   # 4x, as the loss's 1/4 -> full
                                         ((2, 5, 3, 4), (96, 128)),  # non-square, 32x
                                         ((1, 2, 7, 5), (9, 13)),    # not an integer factor
                                         ((2, 3, 16, 12), (5, 7))])  # downsampling
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_resize_equals_interpolate_in_value_and_gradient(shape, size, layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).contiguous(memory_format=layout)
    grad = torch.randn(*shape[:2], *size, generator=g)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, reference = resize_bilinear(a, size), interpolate(b, size)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    ours.backward(grad)
    reference.backward(grad)
    # sums of up to ~1000 products per input pixel: fp32 rounding of a different summation order
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)


def test_resize_gradient_is_exact_in_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: resize_bilinear(t, (7, 9)), (x,))


def test_resize_under_bf16_autocast_keeps_the_dtype_and_rounds_once():
    x = torch.randn(4, 8, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = resize_bilinear(x, (32, 32))
    assert ours.dtype == torch.bfloat16
    exact = interpolate(x.double(), (32, 32))  # the same bf16 input, resized without rounding
    # one rounding to bf16 (relative 2^-8) of the exact result; two bf16 products would be coarser
    assert ((ours.double() - exact).abs() <= exact.abs() * 2 ** -8 + 1e-6).all()


def test_resize_of_the_right_size_is_the_input_and_flops_are_not_counted():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert resize_bilinear(x, (8, 8)) is x
    with FlopCounterMode(display=False) as counter:
        resize_bilinear(x, (32, 32)).sum().backward()
    assert counter.get_total_flops() == 0  # as for F.interpolate: the models' GMACs count their layers
