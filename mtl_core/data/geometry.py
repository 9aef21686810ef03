"""Camera geometry shared by the synthetic renderer and the real-data loaders.

Conventions (see DESIGN.md): pixel (i, j) covers x in [j, j+1), y in [i, i+1); the camera frame is
x right, y down, z forward; depth is z-depth in metres, 0 = missing; intrinsics = (fx, fy, cx, cy).
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
