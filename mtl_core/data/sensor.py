"""The `sensor` domain: what a real RGB-D camera (a Kinect, as in NYUv2) does to a clean render.

ROCK's setting is real images with incomplete, noisy auxiliary annotations mixed with clean
synthetic ones. A Kinect's depth has holes where the infrared pattern is not seen: beyond its
range, at grazing angles, and in the projector's "shadow" beside foreground objects (the projector
sits a few centimetres beside the infrared camera). Its noise grows with the square of the depth.
Normals in NYUv2 are computed from that depth, so they inherit its holes. The colour camera adds
blur, noise, vignetting and a colour cast.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import normals_from_depth

PROJECTOR_BASELINE = 0.075  # metres between the Kinect's IR projector and IR camera


def kinect_depth(rng, depth: np.ndarray, normal_cam: np.ndarray, intrinsics) -> np.ndarray:
    """Holes (0) and depth-dependent noise, from clean z-depth (H, W) and camera-frame normals (H, W, 3)."""
    h, w = depth.shape
    fx = float(intrinsics[0])
    valid = (depth > 0.5) & (depth < rng.uniform(4.0, 5.5))  # outside the Kinect's working range
    # grazing angles: the surface is seen nearly edge-on, the IR pattern smears out
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([(u - intrinsics[2]) / fx, (v - intrinsics[3]) / intrinsics[1], np.ones_like(u)], axis=-1)
    cos = -np.einsum("ijk,ijk->ij", normal_cam, rays) / np.linalg.norm(rays, axis=-1)
    valid &= cos > np.cos(np.deg2rad(rng.uniform(75, 82)))
    # projector shadow: pixel j is not lit if a nearer pixel to its left occludes the projector.
    # In disparity units the occluder at j-k shadows j when fx*b*(1/z_occ - 1/z_j) >= k.
    disparity = fx * PROJECTOR_BASELINE / depth
    max_shift = int(np.ceil(disparity.max() - disparity.min()))
    shadow = np.zeros_like(valid)
    for k in range(1, min(max_shift, w - 1) + 1):
        shadow[:, k:] |= disparity[:, :-k] - disparity[:, k:] >= k
    valid &= ~shadow
    # speckle dropouts (specular / dark spots)
    specks = rng.random(depth.shape) < 0.003
    if w >= 320:  # blobs of a few pixels at full Kinect resolution
        specks = ndimage.binary_dilation(specks, iterations=w // 320)
    valid &= ~specks
    # Kinect axial noise model (Nguyen et al. 2012), for a 640-pixel-wide sensor; an image of width
    # w < 640 is treated as that sensor averaged down, which divides the noise by 640 / w
    sigma = (0.0012 + 0.0019 * (depth - 0.4) ** 2) * min(1.0, w / 640)
    noisy = depth + rng.normal(size=depth.shape) * sigma
    return np.where(valid, noisy, 0.0).astype(np.float32)


def camera_image(rng, image: np.ndarray) -> np.ndarray:
    """Blur, colour cast, exposure, vignetting and noise on a linear-light image (H, W, 3) in [0, 1]."""
    h, w, _ = image.shape
    sigma = rng.uniform(0.4, 0.9) * max(1.0, w / 160)
    out = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    out = out * rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.7, 1.2)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    out = out * (1 - rng.uniform(0.1, 0.35) * (xx**2 + yy**2) / 2)[..., None]
    out = np.clip(out, 0, 1) ** rng.uniform(0.85, 1.15)
    out = out + rng.normal(0, rng.uniform(0.015, 0.04), size=out.shape)
    return np.clip(out, 0, 1)


def sensor_normals(depth: np.ndarray, intrinsics) -> np.ndarray:
    """Normals the way a real dataset gets them: from the (holed, noisy) sensor depth.

    The depth is first smoothed over valid pixels only (normalised convolution), and the stencil
    widens with resolution, both to average the sensor noise as NYUv2's plane-fitting does.
    """
    step = max(1, round(depth.shape[1] / 96))
    valid = (depth > 0).astype(np.float64)
    sigma = 0.7 * step
    weight = np.maximum(ndimage.gaussian_filter(valid, sigma), 1e-6)
    smooth = ndimage.gaussian_filter(depth * valid, sigma) / weight
    # keep only pixels where smoothing did not blend across a depth discontinuity
    smooth = np.where((depth > 0) & (np.abs(smooth - depth) < 0.03 * np.maximum(depth, 1e-6)), smooth, 0.0)
    return normals_from_depth(smooth, intrinsics, step=step, max_jump=0.08)
