"""Multi-task-consistent data augmentation: one random draw, applied to every target in a sample.

Why the non-image targets change the way they do:
- Horizontal flip mirrors the camera frame, so a surface facing right now faces left: the x component
  of every normal is negated. Boxes are mirrored in continuous coordinates (x -> W - x, so x1 and x2
  swap roles) and the principal point moves to cx' = W - cx. Depth is a distance along the optical
  axis and does not change.
- Scale-and-crop zooms in by s at a fixed output size, which looks exactly like the scene being s times
  closer: depth is divided by s. Pixel coordinates are scaled and shifted by the crop offset, and so
  are boxes and the principal point; the focal lengths scale too. Back-projecting with the new depth
  and intrinsics gives the original 3D points times 1/s, so normals keep their values.
- Labels are resized with nearest neighbour (never mixing two classes or ids), and so is depth, so
  that missing depth (0) stays missing instead of being blended into a fake nearby surface.

Every transform takes an explicit ``generator`` (a ``torch.Generator`` or None for the global RNG).
Note for DataLoader workers: each worker gets a *copy* of the generator, so give each worker its own
seed (e.g. in ``worker_init_fn``) or use ``generator=None``, which torch already seeds per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

Sample = dict
LABEL_KEYS = ("semseg", "edge", "sal", "instance", "human_parts")
DENSE_KEYS = ("image", "depth", "normals", *LABEL_KEYS)


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=generator).item()


def spatial_size(sample: Sample) -> tuple[int, int]:
    """(H, W) shared by all dense maps of the sample; raises if they disagree or none is present."""
    sizes = {key: tuple(sample[key].shape[-2:]) for key in DENSE_KEYS if key in sample}
    if not sizes:
        raise ValueError(f"sample has no dense map ({', '.join(DENSE_KEYS)}) to take the image size from")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"dense maps have different spatial sizes: {sizes}")
    return next(iter(sizes.values()))


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize the last two dims of a (H, W) or (C, H, W) tensor with F.interpolate."""
    y = x.reshape(1, -1, *x.shape[-2:])
    if not y.is_floating_point():
        y = y.double()  # interpolate has no integer kernels; float64 holds ids and class indices exactly
    extra = {"align_corners": False, "antialias": False} if mode == "bilinear" else {}
    y = F.interpolate(y, size=size, mode=mode, **extra)
    return y.to(x.dtype).reshape(*x.shape[:-2], *size)


class RandomHorizontalFlip:
    """Flip all dense maps along W with probability ``p``; ``last_params = {"flipped": bool}``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"`p` must be in [0, 1], got {p}")
        _check_generator(generator)
        self.p, self.generator = p, generator
        self.last_params: dict = {}

    def __call__(self, sample: Sample) -> Sample:
        flipped = torch.rand(1, generator=self.generator).item() < self.p
        self.last_params = {"flipped": flipped}
        if not flipped:
            return dict(sample)
        out = dict(sample)
        _, w = spatial_size(sample)
        for key in DENSE_KEYS:
            if key in out:
                out[key] = out[key].flip(-1)
        if "normals" in out:
            out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
        if "boxes" in out:
            b = out["boxes"]
            out["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        if "intrinsics" in out:
            fx, fy, cx, cy = out["intrinsics"].unbind()
            out["intrinsics"] = torch.stack([fx, fy, w - cx, cy])
        return out


class RandomScaleCrop:
    """Zoom in by s ~ U(scale) and crop back to the input size at a random offset.

    After each call ``last_params`` holds ``scale`` (s), ``size`` (resized (H', W')), ``factors``
    (actual (sx, sy) = (W'/W, H'/H)), ``offset`` ((x0, y0) of the crop in the resized map) and ``keep``
    (bool tensor over the input boxes, or None if the sample has no boxes).
    """

    def __init__(self, scale: Sequence[float] = (1.0, 1.5), generator: torch.Generator | None = None):
        if len(scale) != 2 or not 1.0 <= scale[0] <= scale[1]:
            raise ValueError(f"`scale` must be (lo, hi) with 1 <= lo <= hi, got {tuple(scale)}")
        _check_generator(generator)
        self.scale, self.generator = (float(scale[0]), float(scale[1])), generator
        self.last_params: dict = {}

    def __call__(self, sample: Sample) -> Sample:
        h, w = spatial_size(sample)
        s = _uniform(*self.scale, self.generator)
        h2, w2 = round(s * h), round(s * w)
        sx, sy = w2 / w, h2 / h  # rounding makes these differ slightly from s; geometry uses them
        x0 = int(torch.randint(0, w2 - w + 1, (1,), generator=self.generator))
        y0 = int(torch.randint(0, h2 - h + 1, (1,), generator=self.generator))

        out = dict(sample)
        for key in DENSE_KEYS:
            if key in out:
                mode = "bilinear" if key == "image" else "nearest-exact"
                out[key] = _resize(out[key], (h2, w2), mode)[..., y0 : y0 + h, x0 : x0 + w]
        if "depth" in out:
            out["depth"] = out["depth"] / s
        if "intrinsics" in out:
            fx, fy, cx, cy = out["intrinsics"].unbind()
            out["intrinsics"] = torch.stack([fx * sx, fy * sy, cx * sx - x0, cy * sy - y0])

        keep = None
        if "boxes" in out:
            b = out["boxes"] * torch.tensor([sx, sy, sx, sy]) - torch.tensor([x0, y0, x0, y0])
            clipped = torch.minimum(b.clamp(min=0), torch.tensor([w, h, w, h]))
            cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            # A sliver left at the crop border is not a useful detection target.
            keep = (cw >= 1) & (ch >= 1) & (cw * ch >= 0.25 * area)
            out["boxes"] = clipped[keep]
            if "labels" in out:
                out["labels"] = out["labels"][keep]
        self.last_params = {
            "scale": s,
            "size": (h2, w2),
            "factors": (sx, sy),
            "offset": (x0, y0),
            "keep": keep,
        }
        return out


class PhotometricJitter:
    """Random brightness/contrast/saturation/hue change of ``image`` only (geometry is untouched)."""

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        generator: torch.Generator | None = None,
    ):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1] (factor is drawn from 1 -/+ it), got {value}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"`hue` must be in [0, 0.5], got {hue}")
        _check_generator(generator)
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if "image" not in out:
            return out
        g = self.generator
        img = TF.adjust_brightness(out["image"], _uniform(1 - self.brightness, 1 + self.brightness, g))
        img = TF.adjust_contrast(img, _uniform(1 - self.contrast, 1 + self.contrast, g))
        img = TF.adjust_saturation(img, _uniform(1 - self.saturation, 1 + self.saturation, g))
        img = TF.adjust_hue(img, _uniform(-self.hue, self.hue, g))
        out["image"] = img.clamp(0.0, 1.0)
        return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        bad = [t for t in transforms if not callable(t)]
        if bad:
            raise ValueError(f"`transforms` must all be callable, got {bad}")
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


def train_transforms(
    flip: bool = True,
    scale: Sequence[float] | None = (1.0, 1.5),
    jitter: bool = True,
    generator: torch.Generator | None = None,
) -> Compose:
    """Standard training augmentation: flip, scale-crop (skipped if ``scale`` is None), jitter."""
    transforms: list[Callable[[Sample], Sample]] = []
    if flip:
        transforms.append(RandomHorizontalFlip(generator=generator))
    if scale is not None:
        transforms.append(RandomScaleCrop(scale, generator=generator))
    if jitter:
        transforms.append(PhotometricJitter(generator=generator))
    return Compose(transforms)
