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

Intrinsics that are all-zero mean "unknown" (data/README.md) and stay all-zero.

Every transform takes an explicit ``generator`` (a ``torch.Generator`` or None for the global RNG).
Note for DataLoader workers: each worker gets a *copy* of the generator, so give each worker its own
seed (e.g. in ``worker_init_fn``) or use ``generator=None``, which torch already seeds per worker.

Two implementations of the same augmentation:
- the per-sample classes (``RandomHorizontalFlip``, ``RandomScaleCrop``, ``PhotometricJitter``,
  ``train_transforms``) run in ``Dataset.__getitem__``, one Python call chain per image;
- ``BatchAugment`` runs on a collated batch (collate.py) with per-sample random parameters, as a few
  tensor operations for the whole batch, on the batch's device. Training uses this one: at 64x64,
  batch 16, one CPU thread it takes 0.22 ms per image against 1.0 ms for the per-sample chain, about 5 %
  instead of 19 % of a training step of the studies' MTL baseline (benchmarks/augmentation.py).
"""

from __future__ import annotations

import hashlib
import json
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


def _clip_boxes(boxes: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) boxes clipped to the (h, w) image, and which of them to keep."""
    clipped = torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # A sliver left at the crop border is not a useful detection target.
    keep = (cw >= 1) & (ch >= 1) & (cw * ch >= 0.25 * area)
    return clipped, keep


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
    if len(scale) != 2 or not 1.0 <= scale[0] <= scale[1]:
        raise ValueError(f"`scale` must be (lo, hi) with 1 <= lo <= hi, got {tuple(scale)}")
    return float(scale[0]), float(scale[1])


def _check_jitter(brightness: float, contrast: float, saturation: float, hue: float) -> None:
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1] (factor is drawn from 1 -/+ it), got {value}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"`hue` must be in [0, 0.5], got {hue}")


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
        if "intrinsics" in out and out["intrinsics"].any():
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
        self.scale = _check_scale(scale)
        _check_generator(generator)
        self.generator = generator
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
        if "intrinsics" in out and out["intrinsics"].any():
            fx, fy, cx, cy = out["intrinsics"].unbind()
            out["intrinsics"] = torch.stack([fx * sx, fy * sy, cx * sx - x0, cy * sy - y0])

        keep = None
        if "boxes" in out:
            b = out["boxes"] * torch.tensor([sx, sy, sx, sy]) - torch.tensor([x0, y0, x0, y0])
            clipped, keep = _clip_boxes(b, h, w)
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
        _check_jitter(brightness, contrast, saturation, hue)
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


# --- the same augmentation on a collated batch -----------------------------------------------------------


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the batch augmentation of one epoch of one process: a pure function of (seed, epoch, rank),
    so that a resumed run draws the same parameters again, and a stream of its own (not shared with the
    shuffling generator). Hashed into 32 bits because torch's CPU generator keeps only the low 32 bits of
    a seed: offsets such as seed + 2**32 would collide."""
    digest = hashlib.sha256(json.dumps(["augment", int(seed), int(epoch), int(rank)]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of a (B, 3, H, W) image, with torchvision's weights (as PhotometricJitter)."""
    r, g, b = image.unbind(1)
    return (0.2989 * r).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend_(image: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """image * ratio + other * (1 - ratio), clamped to [0, 1], in place of `image` (torchvision's _blend)."""
    return image.mul_(ratio).add_(other * (1.0 - ratio)).clamp_(0.0, 1.0)


def _shift_hue(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of every pixel of image b by shift[b] (a fraction of a turn), keeping value and
    saturation: torchvision's adjust_hue for all images at once.

    Boolean masks, torch.where and remainder on image-sized tensors cost several multiplies each on CPU,
    so the channel that holds the maximum is found with sign() and the hue is wrapped with floor(); and
    temporaries are reused in place, since every fresh image-sized buffer costs page faults too.
    """
    maxc = image.amax(1)
    chroma = image.amin(1).neg_().add_(maxc)
    d = maxc.unsqueeze(1) - image  # >= 0, and 0 for the channel(s) holding the maximum
    dr, dg, db = d.unbind(1)
    # the channel defining the hue: r, then g, then b on ties (torchvision)
    not_r = torch.sign(dr)
    is_g = torch.sign(dg).neg_().add_(1.0).mul_(not_r)
    is_b = not_r - is_g
    is_r = not_r.neg_().add_(1.0)
    # hue in sextants: (g - b) / C if r is the maximum, 2 + (b - r) / C if g, 4 + (r - g) / C if b;
    # grey pixels (chroma 0) have all d = 0: any finite divisor gives hue 0 there
    hue6 = (db - dg).mul_(is_r)
    hue6.add_(torch.sub(dr, db, out=is_r).mul_(is_g)).add_(torch.sub(dg, dr, out=is_r).mul_(is_b))
    hue6.div_(chroma.clamp_min(1e-12))
    hue6.add_(is_g, alpha=2.0).add_(is_b, alpha=4.0).add_(6.0 * shift.view(-1, 1, 1))
    # HSV -> RGB on the hexcone: channel = V - C * clamp(min(k, 4 - k), 0, 1), k = (n + H) mod 6 with
    # n = 5, 3, 1 for r, g, b
    n = torch.tensor([5.0, 3.0, 1.0], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    k = torch.add(hue6.unsqueeze(1), n, out=d)
    k.sub_(torch.floor(k * (1.0 / 6.0)).mul_(6.0))
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0).mul_(chroma.unsqueeze(1))
    return weight.neg_().add_(maxc.unsqueeze(1))


class BatchAugment:
    """``train_transforms`` for a collated batch (collate.py): tensor operations on the whole batch, with
    its own random flip, zoom, crop offset and colour factors for every sample.

    ``augment(batch, generator)`` returns a new batch dict; the input is not modified. All random numbers
    of a call come from one draw of ``generator`` (a ``torch.Generator``, or None for the global RNG) and
    are then moved to the batch's device, so a seeded generator gives the same parameters on any device.

    Geometry: flip, zoom s ~ U(scale) and a crop offset (x0, y0) ~ U([0, (s - 1) W] x [0, (s - 1) H]) map
    the output pixel-edge coordinate u' to the source coordinate u = (u' + x0) / s (mirrored to W - u when
    flipped), and likewise v. The map is axis-aligned, so it is one source coordinate per output column
    and one per output row: the image is resampled bilinearly (``grid_sample``, border padding as
    ``F.interpolate``), every other dense map takes the value of the source pixel containing u, v (a
    gather: labels and ids keep their dtype and are never mixed, missing depth 0 stays 0). Unlike
    ``RandomScaleCrop``, zoom and offset are continuous (sx = sy = s exactly, no resized integer size).
    Targets follow as in the per-sample classes (module docstring): depth / s, normals' x negated where
    flipped, intrinsics and boxes mirrored, scaled and shifted, boxes clipped with slivers dropped
    (``RandomScaleCrop``'s rule).

    ``scale=None`` disables the zoom-crop, ``flip_p=0`` the flip and a zero strength a colour change.
    After a call ``last_params`` holds (B,) tensors ``flipped``, ``scale``, ``brightness``, ``contrast``,
    ``saturation``, ``hue``, (B, 2) ``offset`` (x0, y0) and ``keep`` (per sample a bool tensor over its
    input boxes, or None without boxes).
    """

    # columns of the one random draw per call: which parameter each sample takes from which uniform
    _DRAWS = ("flip", "scale", "x0", "y0", "brightness", "contrast", "saturation", "hue")

    def __init__(
        self,
        flip_p: float = 0.5,
        scale: Sequence[float] | None = (1.0, 1.5),
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
    ):
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"`flip_p` must be in [0, 1], got {flip_p}")
        _check_jitter(brightness, contrast, saturation, hue)
        self.flip_p = float(flip_p)
        self.scale = _check_scale(scale) if scale is not None else None
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.last_params: dict = {}

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The per-sample parameters of one call (CPU tensors), without applying them."""
        _check_generator(generator)
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(batch_size, len(self._DRAWS), generator=generator, device=device).cpu()
        u = dict(zip(self._DRAWS, u.unbind(1), strict=True))
        lo, hi = self.scale if self.scale is not None else (1.0, 1.0)
        s = lo + (hi - lo) * u["scale"]

        def factor(strength: float, x: torch.Tensor) -> torch.Tensor:
            return 1.0 - strength + 2.0 * strength * x

        return {
            "flipped": u["flip"] < self.flip_p,
            "scale": s,
            "offset": torch.stack([u["x0"], u["y0"]], dim=1) * (s - 1.0).unsqueeze(1),  # times (W, H) later
            "brightness": factor(self.brightness, u["brightness"]),
            "contrast": factor(self.contrast, u["contrast"]),
            "saturation": factor(self.saturation, u["saturation"]),
            "hue": self.hue * (2.0 * u["hue"] - 1.0),
        }

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        h, w = spatial_size(batch)
        ref = next(batch[key] for key in DENSE_KEYS if key in batch)
        n, device = ref.shape[0], ref.device
        params = self.draw(n, generator)
        params["offset"] = params["offset"] * torch.tensor([float(w), float(h)])
        p = {key: value.to(device) for key, value in params.items()}
        flipped, s, x0, y0 = p["flipped"], p["scale"], p["offset"][:, 0], p["offset"][:, 1]

        out = dict(batch)
        if self.scale is not None or bool(params["flipped"].any()):
            self._resample(out, h, w, flipped, s, x0, y0)
        keep = self._boxes(out, h, w, flipped, s, x0, y0) if "boxes" in out else None
        if "image" in out:
            # the jitter works in place, on a copy unless resampling already made a new image
            image = out["image"] if out["image"] is not batch["image"] else out["image"].clone()
            out["image"] = self._jitter(image, p)
            if batch["image"].is_contiguous(memory_format=torch.channels_last):
                out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        self.last_params = {**params, "keep": keep}
        return out

    @staticmethod
    def _resample(out: dict, h: int, w: int, flipped, s, x0, y0) -> None:
        n = s.shape[0]
        # float64 for these (B, W) / (B, H) coordinates: which source pixel is nearest must not depend on
        # float32 rounding (a pixel edge would flip between neighbours)
        s64, x64, y64 = s.double().unsqueeze(1), x0.double().unsqueeze(1), y0.double().unsqueeze(1)
        cols = torch.arange(w, dtype=torch.float64, device=s.device) + 0.5  # output pixel centres
        rows = torch.arange(h, dtype=torch.float64, device=s.device) + 0.5
        us = (cols + x64) / s64  # (B, W) source x of each output column
        us = torch.where(flipped.unsqueeze(1), w - us, us)
        vs = (rows + y64) / s64  # (B, H)

        if "image" in out:
            image = out["image"]
            # grid_sample (align_corners=False) takes coordinates normalised so that -1 / 1 are the
            # outer pixel edges: u -> 2 u / W - 1.
            gx = (2.0 * us / w - 1.0).to(image.dtype).unsqueeze(1).expand(n, h, w)
            gy = (2.0 * vs / h - 1.0).to(image.dtype).unsqueeze(2).expand(n, h, w)
            grid = torch.stack([gx, gy], dim=-1)
            out["image"] = F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                                         align_corners=False)

        # Nearest neighbour = the source pixel that contains (u, v), as interpolate's "nearest-exact".
        ix = us.floor().long().clamp_(0, w - 1)
        iy = vs.floor().long().clamp_(0, h - 1)
        index = (iy.unsqueeze(2) * w + ix.unsqueeze(1)).view(n, 1, h * w)
        for key in DENSE_KEYS:
            if key == "image" or key not in out:
                continue
            x = out[key]
            flat = x.reshape(n, -1, h * w)
            out[key] = flat.gather(2, index.expand(n, flat.shape[1], h * w)).view(x.shape)
        if "depth" in out:
            out["depth"] = out["depth"] / s.view(n, *[1] * (out["depth"].dim() - 1)).to(out["depth"].dtype)
        if "normals" in out:
            sign = torch.ones(n, 3, 1, 1, dtype=out["normals"].dtype, device=s.device)
            sign[:, 0] = torch.where(flipped, -1.0, 1.0).view(n, 1, 1)
            out["normals"] = out["normals"] * sign
        if "intrinsics" in out:
            k = out["intrinsics"]
            fx, fy, cx, cy = k.double().unbind(1)
            cx = torch.where(flipped, w - cx, cx)
            s1, x1, y1 = s64[:, 0], x64[:, 0], y64[:, 0]
            moved = torch.stack([fx * s1, fy * s1, cx * s1 - x1, cy * s1 - y1], dim=1).to(k.dtype)
            out["intrinsics"] = torch.where(k.ne(0).any(1, keepdim=True), moved, k)  # all-zero: unknown

    def _boxes(self, out: dict, h: int, w: int, flipped, s, x0, y0) -> list[torch.Tensor]:
        """Transform the per-sample box lists as one (N, 4) tensor; returns the per-sample keep masks."""
        counts = [len(b) for b in out["boxes"]]
        n, total = len(counts), sum(counts)
        if total == 0:
            return [torch.ones(c, dtype=torch.bool, device=s.device) for c in counts]
        boxes = torch.cat(list(out["boxes"]))
        owner = torch.repeat_interleave(torch.arange(n, device=boxes.device),
                                        torch.tensor(counts, device=boxes.device), output_size=total)
        # per sample x -> ax x + bx (ax = -s, bx = s W - x0 when mirrored) and y -> s y - y0
        ax = torch.where(flipped, -s, s)
        bx = flipped.to(s.dtype) * s * w - x0
        coef = torch.stack([ax, s, ax, s, bx, -y0, bx, -y0], dim=1).to(boxes.dtype)[owner]
        moved = boxes * coef[:, :4] + coef[:, 4:]
        x1, y1, x2, y2 = moved.unbind(1)
        moved = torch.stack([torch.minimum(x1, x2), y1, torch.maximum(x1, x2), y2], dim=1)  # mirrored: swap
        if self.scale is None:
            keep = torch.ones(total, dtype=torch.bool, device=moved.device)
        else:
            moved, keep = _clip_boxes(moved, h, w)
        kept = torch.zeros(n, dtype=torch.long, device=keep.device).index_add_(0, owner, keep.long()).tolist()
        out["boxes"] = list(moved[keep].split(kept))
        if "labels" in out:
            out["labels"] = list(torch.cat(list(out["labels"]))[keep].split(kept))
        return list(keep.split(counts))

    def _jitter(self, image: torch.Tensor, p: dict) -> torch.Tensor:
        """PhotometricJitter's steps in its order (brightness, contrast, saturation, hue), per sample, in
        place of `image`."""
        n = image.shape[0]

        def per_sample(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, 1, 1, 1).to(image.dtype)

        if self.brightness:
            image.mul_(per_sample(p["brightness"])).clamp_(0.0, 1.0)
        if self.contrast:
            _blend_(image, _grayscale(image).mean(dim=(1, 2, 3), keepdim=True), per_sample(p["contrast"]))
        if self.saturation:
            _blend_(image, _grayscale(image), per_sample(p["saturation"]))
        if self.hue:
            image = _shift_hue(image, p["hue"].to(image.dtype))
        return image.clamp_(0.0, 1.0)
