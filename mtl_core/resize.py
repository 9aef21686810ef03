"""Bilinear resizing as two small matrix products, with F.interpolate's values and a faster backward.

`resize_bilinear(x, size)` equals F.interpolate(x, size, mode="bilinear", align_corners=False) up to
float rounding: bilinear interpolation is separable, out = R @ x @ C^T, where R (out_h x in_h) and C
(out_w x in_w) hold the 1-D linear weights. Both matrices are built by F.interpolate itself (applied
to an identity), so they carry exactly its sampling rule. Its gradient is R^T @ grad @ C.

Why: on CPU, PyTorch's upsample_bilinear2d backward is slow when the incoming gradient's memory
layout differs from the input's, as for a prediction (channels_last, like every activation in
training) whose loss sends back an NCHW gradient. There the matrix form's forward + backward runs
2.5-5x faster (benchmarks/resize.py), so predictions use it (models/heads.py `prediction_to`, the
losses' resize in tasks.py). Features that a convolution reads next get a channels_last gradient, for
which F.interpolate's kernel is the faster one, and keep it (`upsample_to`).

Both directions are registered as custom operators, so FLOP counters (torch.utils.flop_counter) see
one opaque resize, as they see F.interpolate, and count no matrix products for it: the models' GMACs
stay those of their layers. The products run in fp32 (also under bf16 autocast), and the result is
cast back to the input's dtype: one rounding, as F.interpolate's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=256)
def _weights(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """(n_out, n_in) 1-D linear-interpolation weights of F.interpolate (align_corners=False)."""
    eye = torch.eye(n_in, device=device).view(n_in, 1, n_in)  # n_in signals, each one unit impulse
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T.contiguous()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("mtl_core::resize_bilinear", mutates_args=())
def _resize(x: Tensor, height: int, width: int) -> Tensor:
    dtype = _compute_dtype(x.dtype)
    rows = _weights(x.shape[-2], height, x.device).to(dtype)
    cols = _weights(x.shape[-1], width, x.device).to(dtype)
    with torch.autocast(x.device.type, enabled=False):  # the products in `dtype`, not autocast's
        return (rows @ x.to(dtype) @ cols.T).to(x.dtype)


@_resize.register_fake
def _(x: Tensor, height: int, width: int) -> Tensor:
    return x.new_empty((*x.shape[:-2], height, width))


@torch.library.custom_op("mtl_core::resize_bilinear_backward", mutates_args=())
def _resize_backward(grad: Tensor, height: int, width: int) -> Tensor:
    """The adjoint of _resize: `grad` of the resized map back to an input of (height, width)."""
    dtype = _compute_dtype(grad.dtype)
    rows = _weights(height, grad.shape[-2], grad.device).to(dtype)
    cols = _weights(width, grad.shape[-1], grad.device).to(dtype)
    with torch.autocast(grad.device.type, enabled=False):
        return (rows.T @ grad.to(dtype) @ cols).to(grad.dtype)


@_resize_backward.register_fake
def _(grad: Tensor, height: int, width: int) -> Tensor:
    return grad.new_empty((*grad.shape[:-2], height, width))


def _setup_context(ctx, inputs, output) -> None:
    x = inputs[0]
    ctx.input_size = tuple(x.shape[-2:])


def _backward(ctx, grad: Tensor):
    return _resize_backward(grad, *ctx.input_size), None, None


_resize.register_autograd(_backward, setup_context=_setup_context)


def resize_bilinear(x: Tensor, size) -> Tensor:
    """`x` (..., H, W) resized to `size` (h, w), as F.interpolate(mode="bilinear", align_corners=False);
    the result is a new contiguous tensor (x itself if the size is already right)."""
    height, width = (int(s) for s in size)
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return _resize(x, height, width)
