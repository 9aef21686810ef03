"""Vectorised ray casting of a `scenes.Scene`: exact depth, normals, labels and a shaded image.

One ray per pixel centre; every primitive is intersected with all rays at once (numpy), and the
nearest hit wins. Ray directions are expressed with a camera-frame z component of 1, so the ray
parameter t of a hit *is* its z-depth (distance along the optical axis), as in NYUv2.
"""

from __future__ import annotations

import numpy as np

from .scenes import GRAIN, PLAIN, STRIPES, TILES, Camera, Primitive, Scene

EPS = 1e-6
ROOM_SEGMENTS = 6  # floor, ceiling and four walls are segments 1..6; object instance k is 6 + k


def pixel_rays(camera: Camera, size: tuple[int, int], intrinsics) -> np.ndarray:
    """World-space directions (H*W, 3) through pixel centres, scaled so that camera-z = 1."""
    h, w = size
    fx, fy, cx, cy = intrinsics
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    return d_cam @ camera.rotation.T


def _yaw_matrix(yaw: float) -> np.ndarray:
    """Local -> world rotation about +y (local +z maps to (sin yaw, 0, cos yaw))."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def intersect(prim: Primitive, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit in front of the origin (t > EPS), inf where the ray misses."""
    o = np.broadcast_to(origin, dirs.shape)
    if prim.kind == "box":
        rot = _yaw_matrix(prim.yaw)
        lo, ld = (o - prim.center) @ rot, dirs @ rot  # world -> local is rot^T, applied to row vectors
        half = np.asarray(prim.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(ld) < 1e-12, 1e-12, ld)
            t1, t2 = (-half - lo) * inv, (half - lo) * inv
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        hit = (t_far >= t_near) & (t_near > EPS)
        return np.where(hit, t_near, np.inf)
    if prim.kind == "sphere":
        oc = o - prim.center
        a = np.einsum("ij,ij->i", dirs, dirs)
        b = 2.0 * np.einsum("ij,ij->i", oc, dirs)
        c = np.einsum("ij,ij->i", oc, oc) - prim.size[0] ** 2
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        return np.where((disc >= 0) & (t > EPS), t, np.inf)
    if prim.kind == "cylinder":
        r, height = prim.size[0], prim.size[1]
        x0, y0, z0 = prim.center
        y1 = y0 + height
        ox, oz, dx, dz = o[:, 0] - x0, o[:, 2] - z0, dirs[:, 0], dirs[:, 2]
        a = dx * dx + dz * dz
        b = 2.0 * (ox * dx + oz * dz)
        c = ox * ox + oz * oz - r * r
        disc = b * b - 4 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * np.where(a < 1e-12, 1e-12, a))
            y_side = o[:, 1] + t_side * dirs[:, 1]
            side = (disc >= 0) & (a > 1e-12) & (t_side > EPS) & (y_side >= y0) & (y_side <= y1)
            best = np.where(side, t_side, np.inf)
            dy = np.where(np.abs(dirs[:, 1]) < 1e-12, 1e-12, dirs[:, 1])
            for y_cap in (y0, y1):
                t_cap = (y_cap - o[:, 1]) / dy
                px, pz = ox + t_cap * dx, oz + t_cap * dz
                cap = (t_cap > EPS) & (px * px + pz * pz <= r * r)
                best = np.where(cap & (t_cap < best), t_cap, best)
        return best
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def surface_normal(prim: Primitive, points: np.ndarray) -> np.ndarray:
    """Outward unit normals of `prim` at surface points (N, 3)."""
    if prim.kind == "box":
        rot = _yaw_matrix(prim.yaw)
        q = ((points - prim.center) @ rot) / np.asarray(prim.size)
        axis = np.abs(q).argmax(axis=1)
        n_local = np.zeros_like(q)
        n_local[np.arange(len(q)), axis] = np.sign(q[np.arange(len(q)), axis])
        return n_local @ rot.T
    if prim.kind == "sphere":
        return (points - prim.center) / prim.size[0]
    x0, y0, z0 = prim.center
    r, y1 = prim.size[0], y0 + prim.size[1]
    radial = np.stack([points[:, 0] - x0, np.zeros(len(points)), points[:, 2] - z0], axis=1)
    d_side = np.abs(np.linalg.norm(radial, axis=1) - r)
    d_top, d_bottom = np.abs(points[:, 1] - y1), np.abs(points[:, 1] - y0)
    n = radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-12)
    n[(d_top < d_side) & (d_top <= d_bottom)] = (0.0, 1.0, 0.0)
    n[(d_bottom < d_side) & (d_bottom < d_top)] = (0.0, -1.0, 0.0)
    return n


def intersect_room(scene: Scene, origin: np.ndarray, dirs: np.ndarray):
    """Rays from inside the room box: (t, segment id 1..6, inward normal)."""
    w, h, d = scene.room_size
    lo, hi = np.array([-w / 2, 0.0, -d / 2]), np.array([w / 2, h, d / 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(dirs > 0, hi, lo)
        t_axis = (bound - origin) / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    t_axis = np.where(t_axis > 0, t_axis, np.inf)
    axis = t_axis.argmin(axis=1)
    t = t_axis[np.arange(len(dirs)), axis]
    positive = dirs[np.arange(len(dirs)), axis] > 0
    # segments: 1 floor, 2 ceiling, 3/4 walls x = -w/2 / +w/2, 5/6 walls z = -d/2 / +d/2
    segment = np.select([axis == 1, axis == 0, axis == 2], [1 + positive, 3 + positive, 5 + positive])
    normal = np.zeros_like(dirs)
    normal[np.arange(len(dirs)), axis] = np.where(positive, -1.0, 1.0)
    return t, segment, normal


def cast(scene: Scene, camera: Camera, size: tuple[int, int], intrinsics) -> dict[str, np.ndarray]:
    """Geometry buffers for one view: depth (H,W), world points and normals, segment and material ids."""
    dirs = pixel_rays(camera, size, intrinsics)
    origin = camera.position
    t, segment, normal = intersect_room(scene, origin, dirs)
    floor, wall, ceiling = scene.room_materials
    room_material = np.array([0, floor, ceiling, wall, wall, wall, wall])  # indexed by segment id
    material = room_material[segment]
    winner = np.full(len(dirs), -1)
    for k, prim in enumerate(scene.primitives):
        tk = intersect(prim, origin, dirs)
        closer = tk < t
        t = np.where(closer, tk, t)
        winner[closer] = k
    points = origin + t[:, None] * dirs
    for k in np.unique(winner[winner >= 0]):
        prim = scene.primitives[k]
        mask = winner == k
        normal[mask] = surface_normal(prim, points[mask])
        segment[mask] = ROOM_SEGMENTS + prim.instance
        material[mask] = prim.material
    # normals face the camera (the visible side of every surface)
    flip = np.einsum("ij,ij->i", normal, dirs) > 0
    normal[flip] *= -1
    return {"depth": t, "points": points, "normal": normal, "segment": segment, "material": material,
            "dirs": dirs}


def _hash_noise(cells: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer 3D cell (a classic sin-hash)."""
    x = np.sin(cells[:, 0] * 12.9898 + cells[:, 1] * 78.233 + cells[:, 2] * 37.719) * 43758.5453
    return x - np.floor(x)


def albedo(scene: Scene, points: np.ndarray, normal: np.ndarray, material: np.ndarray) -> np.ndarray:
    """Per-pixel albedo with solid procedural textures (wood stripes, tiles, grain)."""
    base = np.array([m.albedo for m in scene.materials])[material]
    pattern = np.array([m.pattern for m in scene.materials])[material]
    scale = np.array([m.scale for m in scene.materials])[material][:, None]
    strength = np.array([m.strength for m in scene.materials])[material]
    p = points / scale
    mod = np.ones(len(points))
    # wood: boards of random brightness with a grain running along them
    board = np.floor(p[:, 0])
    zeros = np.zeros_like(board)
    brightness = _hash_noise(np.stack([board, zeros, zeros], axis=1))
    stripes = 0.6 * brightness + 0.2 * (1 + np.sin(6 * np.pi * p[:, 2] + board))
    mod = np.where(pattern == STRIPES, 1 + strength * (stripes - 0.5) * 2, mod)
    # tiles: checker cells in the surface plane plus dark grout lines
    uvw = np.floor(p + 1e-4 * normal)
    checker = (uvw.sum(axis=1) % 2) * 2 - 1
    frac = p - np.floor(p)
    in_plane = np.abs(normal) < 0.5
    grout = (((frac < 0.04) | (frac > 0.96)) & in_plane).any(axis=1)
    tiles = 1 + 0.5 * strength * checker - np.where(grout, 0.5, 0.0)
    mod = np.where(pattern == TILES, tiles, mod)
    # grain: fine value noise (carpet, fabric)
    grain = _hash_noise(np.floor(p)) - 0.5
    mod = np.where(pattern == GRAIN, 1 + 2 * strength * grain, mod)
    mod = np.where(pattern == PLAIN, 1.0, mod)
    return np.clip(base * mod[:, None], 0.0, 1.0)


def shade(scene: Scene, buffers: dict[str, np.ndarray], shadows: bool = True) -> np.ndarray:
    """Lambertian shading from the scene's point lights plus ambient light, with cast shadows.

    Shading carries surface orientation (n . l), which is why RGB alone lets a network guess
    normals and depth; shadows add contact cues between objects and the floor.
    """
    points, normal = buffers["points"], buffers["normal"]
    rho = albedo(scene, points, normal, buffers["material"])
    light = np.full(len(points), scene.ambient)
    for position, power in scene.lights:
        to_light = np.asarray(position) - points
        dist2 = np.einsum("ij,ij->i", to_light, to_light)
        cos = np.einsum("ij,ij->i", normal, to_light) / np.sqrt(dist2)
        lit = np.maximum(cos, 0.0) * power / (1.0 + dist2)
        if shadows:
            start = points + 1e-4 * normal
            blocked = np.zeros(len(points), dtype=bool)
            active = lit > 0
            for prim in scene.primitives:
                idx = np.flatnonzero(active & ~blocked)
                if len(idx) == 0:
                    break
                t = intersect(prim, start[idx], to_light[idx])
                blocked[idx[t < 1.0]] = True
            lit = np.where(blocked, 0.0, lit)
        light += lit
    return rho * light[:, None]


def to_srgb(linear: np.ndarray) -> np.ndarray:
    return np.clip(linear, 0.0, 1.0) ** (1 / 2.2)
