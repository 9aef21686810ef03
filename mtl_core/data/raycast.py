"""Vectorised ray casting of a `scenes.Scene`: exact depth, normals, labels and a shaded image.

One ray per pixel centre; the nearest hit wins. Ray directions are expressed with a camera-frame z
component of 1, so the ray parameter t of a hit *is* its z-depth (distance along the optical axis), as
in NYUv2.

Speed: a primitive covers a small part of the image and stands in the way of few shadow rays, so the
rays are first culled per primitive by its bounding sphere (`rays_near_spheres`), and the remaining
(primitive, ray) pairs of all primitives of one kind are intersected at once (`intersect_pairs`). The
culling is conservative (the spheres are enlarged by `CULL_MARGIN`): a ray left out would have missed.
Each pair's hit is computed with the same floating-point operations as when every primitive was
intersected with every ray, one primitive at a time, so the buffers, and the datasets made from them,
are bit for bit those of that slower caster (tests/test_synthetic_golden.py holds them to it).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .scenes import GRAIN, PLAIN, STRIPES, TILES, Camera, Primitive, Scene

EPS = 1e-6
ROOM_SEGMENTS = 6  # floor, ceiling and four walls are segments 1..6; object instance k is 6 + k
# metres added to every bounding sphere before culling: far above rounding errors (~1e-12 m), and
# above the 1e-4 m by which shadow rays start off their surface (see `shade`)
CULL_MARGIN = 1e-3


@functools.lru_cache(maxsize=16)
def _camera_frame_rays(h: int, w: int, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    # the same for every view of an image size: made once (read-only, as it is shared)
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    d_cam.flags.writeable = False
    return d_cam


def pixel_rays(camera: Camera, size: tuple[int, int], intrinsics) -> np.ndarray:
    """World-space directions (H*W, 3) through pixel centres, scaled so that camera-z = 1."""
    h, w = size
    fx, fy, cx, cy = (float(value) for value in intrinsics)
    return _camera_frame_rays(int(h), int(w), fx, fy, cx, cy) @ camera.rotation.T


def _yaw_matrix(yaw: float) -> np.ndarray:
    """Local -> world rotation about +y (local +z maps to (sin yaw, 0, cos yaw))."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _runs(index: np.ndarray):
    """Slices of the runs of equal values in `index` (the pairs of one primitive, when grouped)."""
    starts = np.flatnonzero(np.diff(index, prepend=-1))
    return [slice(begin, end) for begin, end in zip(starts, [*starts[1:], len(index)], strict=True)]


def _box_hits(primitives: list[Primitive], index: np.ndarray, origins: np.ndarray,
              dirs: np.ndarray) -> np.ndarray:
    # Each ray in its box's frame: one 3x3 product per box (BLAS, with fused multiply-adds) for all of
    # the box's pairs. An elementwise formula would round differently and so change the data.
    local_origins, local_dirs = np.empty_like(dirs), np.empty_like(dirs)
    for pairs in _runs(index):
        prim = primitives[index[pairs.start]]
        rot = _yaw_matrix(prim.yaw)  # world -> local is rot^T, applied to row vectors
        local_origins[pairs] = (origins[pairs] - prim.center) @ rot
        local_dirs[pairs] = dirs[pairs] @ rot
    half = np.array([prim.size for prim in primitives], dtype=float)[index]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(local_dirs) < 1e-12, 1e-12, local_dirs)
        t1, t2 = (-half - local_origins) * inv, (half - local_origins) * inv
    # the slabs' entry and exit, max / min over the three axes column by column: exact, and far
    # faster than a numpy reduction over an axis of length 3
    enter, leave = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(enter[:, 0], enter[:, 1]), enter[:, 2])
    t_far = np.minimum(np.minimum(leave[:, 0], leave[:, 1]), leave[:, 2])
    hit = (t_far >= t_near) & (t_near > EPS)
    return np.where(hit, t_near, np.inf)


def _sphere_hits(primitives: list[Primitive], index: np.ndarray, origins: np.ndarray,
                 dirs: np.ndarray) -> np.ndarray:
    centers = np.array([prim.center for prim in primitives], dtype=float)[index]
    radius_sq = np.array([prim.size[0] ** 2 for prim in primitives], dtype=float)[index]
    oc = origins - centers
    a = np.einsum("ij,ij->i", dirs, dirs)
    b = 2.0 * np.einsum("ij,ij->i", oc, dirs)
    c = np.einsum("ij,ij->i", oc, oc) - radius_sq
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    return np.where((disc >= 0) & (t > EPS), t, np.inf)


def _cylinder_hits(primitives: list[Primitive], index: np.ndarray, origins: np.ndarray,
                   dirs: np.ndarray) -> np.ndarray:
    # per cylinder: axis x0, z0, caps y0, y1, squared radius (the scalars computed as for one cylinder)
    x0, y0, z0, y1, radius_sq = np.array(
        [(p.center[0], p.center[1], p.center[2], p.center[1] + p.size[1], p.size[0] * p.size[0])
         for p in primitives], dtype=float)[index].T
    oy = origins[:, 1]
    ox, oz, dx, dz = origins[:, 0] - x0, origins[:, 2] - z0, dirs[:, 0], dirs[:, 2]
    a = dx * dx + dz * dz
    b = 2.0 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - radius_sq
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * np.where(a < 1e-12, 1e-12, a))
        y_side = oy + t_side * dirs[:, 1]
        side = (disc >= 0) & (a > 1e-12) & (t_side > EPS) & (y_side >= y0) & (y_side <= y1)
        best = np.where(side, t_side, np.inf)
        dy = np.where(np.abs(dirs[:, 1]) < 1e-12, 1e-12, dirs[:, 1])
        for y_cap in (y0, y1):
            t_cap = (y_cap - oy) / dy
            px, pz = ox + t_cap * dx, oz + t_cap * dz
            cap = (t_cap > EPS) & (px * px + pz * pz <= radius_sq)
            best = np.where(cap & (t_cap < best), t_cap, best)
    return best


_HITS = {"box": _box_hits, "sphere": _sphere_hits, "cylinder": _cylinder_hits}
_KIND_NUMBER = {kind: number for number, kind in enumerate(_HITS)}


def intersect_pairs(primitives: list[Primitive], prim_index: np.ndarray, origins: np.ndarray,
                    dirs: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit in front of the origin (t > EPS), inf where the ray misses, for M
    pairs of a primitive and a ray: pair m is primitives[prim_index[m]] and the ray origins[m] + t dirs[m].

    The pairs of all primitives of one kind are intersected at once; grouping each primitive's pairs
    together (as `candidate_pairs` gives them) keeps the boxes' rotations to one product per box.
    """
    unknown = sorted({prim.kind for prim in primitives} - set(_HITS))
    if unknown:
        raise ValueError(f"unknown primitive kind {unknown[0]!r}")
    kind_of_pair = np.array([_KIND_NUMBER[prim.kind] for prim in primitives], dtype=np.intp)[prim_index]
    t = np.full(len(prim_index), np.inf)
    for kind, hits in _HITS.items():
        pairs = np.flatnonzero(kind_of_pair == _KIND_NUMBER[kind])
        if len(pairs):
            t[pairs] = hits(primitives, prim_index[pairs], origins[pairs], dirs[pairs])
    return t


def intersect(prim: Primitive, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit of rays (N, 3) with one primitive: `intersect_pairs` for one."""
    return intersect_pairs([prim], np.zeros(len(dirs), dtype=np.intp), np.broadcast_to(origin, dirs.shape),
                           dirs)


def bounding_sphere(prim: Primitive) -> tuple[tuple[float, float, float], float]:
    """Centre and radius of a sphere that encloses `prim`."""
    if prim.kind == "box":  # the yaw turns the box about its centre
        return prim.center, math.hypot(*prim.size)
    if prim.kind == "sphere":
        return prim.center, prim.size[0]
    if prim.kind == "cylinder":
        x0, y0, z0 = prim.center
        r, height = prim.size[0], prim.size[1]
        return (x0, y0 + height / 2, z0), math.hypot(r, height / 2)
    raise ValueError(f"unknown primitive kind {prim.kind!r}")


def bounding_spheres(primitives: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """Centres (P, 3) and radii (P,) of spheres enclosing each primitive."""
    spheres = [bounding_sphere(prim) for prim in primitives]
    centers = np.array([center for center, _ in spheres], dtype=float).reshape(-1, 3)
    radii = np.array([radius for _, radius in spheres], dtype=float)
    return centers, radii


def rays_near_spheres(apex, unit_dirs: np.ndarray, centers: np.ndarray, radii: np.ndarray,
                      reach: np.ndarray | None = None) -> np.ndarray:
    """Which rays from `apex` along unit directions (N, 3) can meet each sphere (P centres, P radii): (P, N).

    A superset of the rays that meet them: the spheres are enlarged by CULL_MARGIN. A ray from a point
    outside a sphere meets it if and only if its angle to the sphere's centre is at most
    asin(radius / distance); from inside a sphere every ray does. `reach` (N,) limits each ray to a
    segment of that length, which cannot meet a sphere farther than distance - radius.
    """
    offsets = np.asarray(centers, dtype=float) - apex
    distance = np.linalg.norm(offsets, axis=1)
    radii = np.asarray(radii, dtype=float) + CULL_MARGIN
    outside = distance > radii
    cos_angle = (offsets / np.where(outside, distance, 1.0)[:, None]) @ unit_dirs.T
    cos_cone = np.sqrt(1.0 - np.minimum(radii / np.where(outside, distance, np.inf), 1.0) ** 2)
    near = (cos_angle >= cos_cone[:, None]) | ~outside[:, None]
    if reach is not None:
        near &= reach >= (distance - radii)[:, None]
    return near


def candidate_pairs(near: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(primitive, ray) indices of the True entries of a (P, N) mask, grouped by primitive: np.nonzero's
    pairs, found several times faster through the flat indices."""
    return np.divmod(np.flatnonzero(near), near.shape[1])


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


def nearest_hits(scene: Scene, camera: Camera, size: tuple[int, int], intrinsics) -> dict[str, np.ndarray]:
    """The first surface along each pixel's ray: ray directions, depth (H*W,), segment id and the index
    of the primitive hit (-1 where the ray reaches the room's walls, floor or ceiling), plus the room's
    own segment ids and normals, from which `surface_buffers` completes the view."""
    dirs = pixel_rays(camera, size, intrinsics)
    origin = camera.position
    t, room_segment, room_normal = intersect_room(scene, origin, dirs)
    winner = np.full(len(dirs), -1)
    centers, radii = bounding_spheres(scene.primitives)
    unit_dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    prim_of_pair, ray_of_pair = candidate_pairs(rays_near_spheres(origin, unit_dirs, centers, radii))
    t_pair = intersect_pairs(scene.primitives, prim_of_pair, np.broadcast_to(origin, (len(ray_of_pair), 3)),
                             dirs[ray_of_pair])
    # each ray keeps its nearest hit if it is nearer than the room; on equal depths the earlier
    # primitive, as when primitives are tried in order and only a strictly nearer hit replaces the last
    closer = t_pair < t[ray_of_pair]
    prim_of_pair, ray_of_pair, t_pair = prim_of_pair[closer], ray_of_pair[closer], t_pair[closer]
    order = np.lexsort((prim_of_pair, t_pair, ray_of_pair))  # by ray, then depth, then primitive
    ray_sorted = ray_of_pair[order]
    nearest = order[np.flatnonzero(np.diff(ray_sorted, prepend=-1))]  # the first pair of each ray
    t[ray_of_pair[nearest]] = t_pair[nearest]
    winner[ray_of_pair[nearest]] = prim_of_pair[nearest]
    segment = room_segment.copy()
    on_object = winner >= 0
    instance = np.array([prim.instance for prim in scene.primitives], dtype=segment.dtype)
    segment[on_object] = ROOM_SEGMENTS + instance[winner[on_object]]
    return {"dirs": dirs, "depth": t, "segment": segment, "primitive": winner, "room_segment": room_segment,
            "room_normal": room_normal}


def surface_buffers(scene: Scene, camera: Camera, hits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`cast`'s buffers from `nearest_hits`: the hit points, their normals and materials added."""
    dirs, t, winner = hits["dirs"], hits["depth"], hits["primitive"]
    floor, wall, ceiling = scene.room_materials
    room_material = np.array([0, floor, ceiling, wall, wall, wall, wall])  # indexed by segment id
    material = room_material[hits["room_segment"]]
    normal = hits["room_normal"].copy()
    points = camera.position + t[:, None] * dirs
    for k in np.unique(winner[winner >= 0]):
        prim = scene.primitives[k]
        mask = winner == k
        normal[mask] = surface_normal(prim, points[mask])
        material[mask] = prim.material
    # normals face the camera (the visible side of every surface)
    flip = np.einsum("ij,ij->i", normal, dirs) > 0
    normal[flip] *= -1
    return {"depth": t, "points": points, "normal": normal, "segment": hits["segment"], "material": material,
            "dirs": dirs}


def cast(scene: Scene, camera: Camera, size: tuple[int, int], intrinsics) -> dict[str, np.ndarray]:
    """Geometry buffers for one view: depth (H,W), world points and normals, segment and material ids."""
    return surface_buffers(scene, camera, nearest_hits(scene, camera, size, intrinsics))


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
    start = points + 1e-4 * normal  # shadow rays start just off the surface, so it does not shadow itself
    centers, radii = bounding_spheres(scene.primitives)
    for position, power in scene.lights:
        to_light = np.asarray(position) - points
        dist2 = np.einsum("ij,ij->i", to_light, to_light)
        cos = np.einsum("ij,ij->i", normal, to_light) / np.sqrt(dist2)
        lit = np.maximum(cos, 0.0) * power / (1.0 + dist2)
        if shadows:
            # a shadow ray runs from `start` to the light: it can only be blocked by a primitive whose
            # (enlarged) bounding sphere meets the segment from the light to the point
            lit_points = np.flatnonzero(lit > 0)
            distance = np.sqrt(dist2[lit_points])
            from_light = -to_light[lit_points] / np.maximum(distance, 1e-12)[:, None]
            prim_of_pair, ray_of_pair = candidate_pairs(
                rays_near_spheres(position, from_light, centers, radii, reach=distance))
            point_of_pair = lit_points[ray_of_pair]
            t = intersect_pairs(scene.primitives, prim_of_pair, start[point_of_pair], to_light[point_of_pair])
            lit[point_of_pair[t < 1.0]] = 0.0  # something lies between the point and the light
        light += lit
    return rho * light[:, None]


def to_srgb(linear: np.ndarray) -> np.ndarray:
    return np.clip(linear, 0.0, 1.0) ** (1 / 2.2)
