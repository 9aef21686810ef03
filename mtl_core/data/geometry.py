"""Camera geometry shared by the synthetic renderer and the real-data loaders.

Conventions (data/README.md, "The batch dict"): pixel (i, j) covers x in [j, j+1), y in [i, i+1);
the camera frame is x right, y down, z forward; depth is z-depth in metres, 0 = missing;
intrinsics = (fx, fy, cx, cy).
"""

from __future__ import annotations

import numpy as np


def backproject(depth: np.ndarray, intrinsics) -> np.ndarray:
    """3D camera-frame points (H, W, 3) of every pixel centre: X = (u - cx) Z / fx, Y = (v - cy) Z / fy."""
    h, w = depth.shape
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=-1)


def normals_from_depth(depth: np.ndarray, intrinsics, step: int = 1, max_jump: float = 0.05) -> np.ndarray:
    """Surface normals (H, W, 3) from a depth map by central differences of back-projected points.

    n = (P[i, j+s] - P[i, j-s]) x (P[i+s, j] - P[i-s, j]), oriented towards the camera. A pixel gets
    a normal only where it and its four neighbours at distance `step` have depth and no neighbour
    is across a depth discontinuity (relative jump > `max_jump` per pixel of step); elsewhere the
    normal is all-zero, the batch-dict marker for "missing". A larger `step` averages sensor noise.
    """
    points = backproject(depth, intrinsics)
    h, w = depth.shape
    s = step
    normals = np.zeros((h, w, 3))
    if h <= 2 * s or w <= 2 * s:
        return normals.astype(np.float32)
    c = (slice(s, h - s), slice(s, w - s))
    right, left = points[s:h - s, 2 * s:], points[s:h - s, :w - 2 * s]
    down, up = points[2 * s:, s:w - s], points[:h - 2 * s, s:w - s]
    n = np.cross(right - left, down - up)
    z = depth[c]
    valid = z > 0
    for nb in (right, left, down, up):
        valid &= (nb[..., 2] > 0) & (np.abs(nb[..., 2] - z) <= max_jump * s * z)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid &= norm[..., 0] > 0
    n = n / np.maximum(norm, 1e-12)
    facing = np.einsum("ijk,ijk->ij", n, points[c]) > 0
    n[facing] *= -1
    normals[c] = np.where(valid[..., None], n, 0.0)
    return normals.astype(np.float32)


# NYUv2's Kinect colour camera (camera_params.m of the NYU toolbox), for 640x480 frames. The toolbox
# back-projects MATLAB's 1-based pixel indices, which put the centre of the first pixel at 1; in
# this module's convention that centre is at 0.5, hence the half-pixel shift of cx and cy.
NYU_KINECT_SIZE = (480, 640)
NYU_KINECT_INTRINSICS = (518.857901, 519.469611, 325.582449 - 0.5, 253.736166 - 0.5)


def scale_intrinsics(intrinsics, from_size, to_size) -> np.ndarray:
    """(fx, fy, cx, cy) of a camera whose image is resized from (H, W) `from_size` to `to_size`.

    Resizing maps the pixel-edge coordinate x to x * W'/W (pixel centres stay pixel centres), so
    focal lengths and the principal point scale alike.
    """
    (h, w), (h2, w2) = from_size, to_size
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    sx, sy = w2 / w, h2 / h
    return np.array([fx * sx, fy * sy, cx * sx, cy * sy], dtype=np.float32)


def nyu_intrinsics(size=NYU_KINECT_SIZE) -> np.ndarray:
    """NYUv2 Kinect intrinsics for images of (H, W) `size`, assumed resized from the full 640x480 frame."""
    return scale_intrinsics(NYU_KINECT_INTRINSICS, NYU_KINECT_SIZE, size)
