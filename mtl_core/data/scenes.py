"""Procedural indoor scenes: the furniture catalogue, the room recipes and the layout sampler.

A scene is pure geometry + materials, sampled from a random generator; `raycast.py` renders it.
World frame: metres, y up, the floor is y = 0, the room spans x in [-W/2, W/2], z in [-D/2, D/2].

Why the recipes look the way they do: in NYUv2 the room type is never visible by itself, it shows
through *which* objects are present and *where* (beds against a wall in bedrooms, chairs around a
table in dining rooms, monitors on desks in offices) and through the materials (tiles in bathrooms
and kitchens). Here the room type is a latent variable that sets exactly those three things, so a
scene classifier has to infer it from content and it carries real information for detection.
Object classes share one colour palette: they are told apart by shape, size and proportions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ROOM_CLASSES = ("floor", "wall", "ceiling")
OBJECT_CLASSES = ("bed", "chair", "table", "sofa", "cabinet", "lamp", "monitor", "toilet", "bathtub", "plant")
CLASSES = ROOM_CLASSES + OBJECT_CLASSES  # semantic segmentation classes, index = label id
SCENE_CLASSES = ("bedroom", "living_room", "office", "dining_room", "kitchen", "bathroom")

# Texture patterns (see raycast.shade): solid textures evaluated at the 3D hit point.
PLAIN, STRIPES, TILES, GRAIN = 0, 1, 2, 3


@dataclass
class Material:
    albedo: tuple[float, float, float]
    pattern: int = PLAIN
    scale: float = 0.1  # metres per pattern period
    strength: float = 0.0  # relative albedo modulation


@dataclass
class Primitive:
    """One ray-castable shape in world coordinates.

    kind "box":      center (3,), half extents (3,), yaw (rotation about +y, radians)
    kind "sphere":   center (3,), radius
    kind "cylinder": vertical axis; center = (x, y0, z), height = y1 - y0, radius
    """

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float] = (0.0, 0.0, 0.0)  # box half extents / (radius, height, -)
    yaw: float = 0.0
    instance: int = 0  # 1-based object instance; 0 never used for primitives
    material: int = 0  # index into Scene.materials


@dataclass
class Scene:
    room_type: int
    room_size: tuple[float, float, float]  # width (x), height (y), depth (z)
    primitives: list[Primitive]
    instance_class: list[int]  # instance k (1-based) has semantic class instance_class[k - 1]
    materials: list[Material]
    room_materials: tuple[int, int, int]  # material index of floor, walls, ceiling
    lights: list[tuple[tuple[float, float, float], float]]  # (position, intensity)
    ambient: float


# --------------------------------------------------------------------------------------------
# Furniture catalogue. Each builder returns parts in the object's local frame: origin at the
# centre of its footprint on its support surface, +z = the object's front (a sofa's seat side,
# a monitor's screen side), parts as (kind, center, size, material slot).
# --------------------------------------------------------------------------------------------


@dataclass
class Part:
    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    slot: int = 0  # 0 = main material, 1 = secondary material


@dataclass
class Furniture:
    parts: list[Part]
    half: tuple[float, float]  # footprint half extents (x, z) in the local frame
    height: float
    top: float | None = None  # height of a flat top other objects may stand on
    slot_palette: tuple[str, str] = ("any", "any")  # palette of each material slot


def _box(cx, cy, cz, hx, hy, hz, slot=0):
    return Part("box", (cx, cy, cz), (hx, hy, hz), slot)


def _cyl(cx, y0, cz, r, h, slot=0):
    return Part("cylinder", (cx, y0, cz), (r, h, 0.0), slot)


def _sph(cx, cy, cz, r, slot=0):
    return Part("sphere", (cx, cy, cz), (r, 0.0, 0.0), slot)


def bed(rng, variant=None):
    w, length = rng.uniform(1.0, 1.9), rng.uniform(1.9, 2.2)
    base, mattress, head = rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.25), rng.uniform(0.8, 1.2)
    parts = [
        _box(0, base / 2, 0, w / 2, base / 2, length / 2, slot=1),
        _box(0, base + mattress / 2, 0.04, w / 2 - 0.03, mattress / 2, length / 2 - 0.08),
        _box(0, head / 2, -length / 2 + 0.04, w / 2, head / 2, 0.04, slot=1),
    ]
    n_pillows = 2 if w > 1.3 else 1
    for k in range(n_pillows):
        x = 0.0 if n_pillows == 1 else (-w / 4 if k == 0 else w / 4)
        pw = w / 2 - 0.1 if n_pillows == 1 else w / 4 - 0.06
        parts.append(_box(x, base + mattress + 0.06, -length / 2 + 0.3, pw, 0.06, 0.16))
    return Furniture(parts, (w / 2, length / 2), head)


def chair(rng, variant=None):
    s, hs, hb = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.48), rng.uniform(0.35, 0.5)
    leg = s / 2 - 0.03
    parts = [_box(0, hs - 0.025, 0, s / 2, 0.025, s / 2),  # seat
             _box(0, hs + hb / 2, -s / 2 + 0.025, s / 2, hb / 2, 0.025)]  # back
    parts += [_cyl(sx * leg, 0.0, sz * leg, 0.02, hs - 0.05, slot=1) for sx in (-1, 1) for sz in (-1, 1)]
    return Furniture(parts, (s / 2, s / 2), hs + hb)


def table(rng, variant="dining"):
    h = rng.uniform(0.35, 0.45) if variant == "low" else rng.uniform(0.70, 0.76)
    if variant != "desk" and rng.random() < 0.3:  # round table on a pedestal
        r = rng.uniform(0.4, 0.6)
        parts = [_cyl(0, h - 0.04, 0, r, 0.04), _cyl(0, 0.0, 0, 0.05, h - 0.04, slot=1),
                 _cyl(0, 0.0, 0, 0.25, 0.03, slot=1)]
        return Furniture(parts, (r, r), h, top=h)
    if variant == "low":
        w, d = rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.7)
    elif variant == "desk":
        w, d = rng.uniform(1.0, 1.6), rng.uniform(0.6, 0.8)
    else:
        w, d = rng.uniform(1.2, 1.9), rng.uniform(0.8, 1.0)
    parts = [_box(0, h - 0.02, 0, w / 2, 0.02, d / 2)]
    lx, lz = w / 2 - 0.05, d / 2 - 0.05
    parts += [_box(sx * lx, (h - 0.04) / 2, sz * lz, 0.025, (h - 0.04) / 2, 0.025, slot=1)
              for sx in (-1, 1) for sz in (-1, 1)]
    return Furniture(parts, (w / 2, d / 2), h, top=h)


def sofa(rng, variant=None):
    w, d = rng.uniform(1.6, 2.4), rng.uniform(0.85, 0.95)
    seat, back, arm, arm_w, back_t = 0.42, rng.uniform(0.8, 0.9), rng.uniform(0.55, 0.65), 0.18, 0.2
    parts = [
        _box(0, seat / 2, back_t / 2, w / 2 - arm_w, seat / 2, (d - back_t) / 2),
        _box(0, back / 2, -d / 2 + back_t / 2, w / 2, back / 2, back_t / 2),
        _box(-w / 2 + arm_w / 2, arm / 2, 0, arm_w / 2, arm / 2, d / 2),
        _box(w / 2 - arm_w / 2, arm / 2, 0, arm_w / 2, arm / 2, d / 2),
    ]
    return Furniture(parts, (w / 2, d / 2), back)


def cabinet(rng, variant="low"):
    if variant == "tall":
        w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.35, 0.6), rng.uniform(1.5, 2.0)
    elif variant == "counter":
        w, d, h = rng.uniform(1.0, 2.2), rng.uniform(0.55, 0.65), rng.uniform(0.86, 0.92)
    else:
        w, d, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.55), rng.uniform(0.5, 0.9)
    parts = [_box(0, h / 2, 0, w / 2, h / 2, d / 2)]
    if variant == "counter":  # overhanging worktop
        parts.append(_box(0, h + 0.02, 0.02, w / 2, 0.02, d / 2 + 0.02, slot=1))
        h += 0.04
    # handles: small bars on the front that make the front face recognisable
    for x in ((-w / 4, w / 4) if w > 0.8 else (0.0,)):
        y = h * 0.7 if variant == "tall" else h - 0.12
        parts.append(_box(x, y, d / 2 + 0.01, 0.06, 0.012, 0.012, slot=1))
    return Furniture(parts, (w / 2, d / 2), h, top=None if variant == "tall" else h)


def lamp(rng, variant="floor"):
    if variant == "table":
        pole, shade_r, shade_h, base_r = rng.uniform(0.2, 0.35), rng.uniform(0.09, 0.14), 0.15, 0.07
    else:
        pole, shade_r, shade_h, base_r = rng.uniform(1.3, 1.7), rng.uniform(0.15, 0.24), 0.28, 0.13
    parts = [_cyl(0, 0.0, 0, base_r, 0.03, slot=1), _cyl(0, 0.03, 0, 0.015, pole, slot=1),
             _cyl(0, pole, 0, shade_r, shade_h)]
    r = max(shade_r, base_r)
    return Furniture(parts, (r, r), pole + shade_h, slot_palette=("light", "metal"))


def monitor(rng, variant="monitor"):
    if variant == "tv":
        w, h, stand = rng.uniform(0.8, 1.3), rng.uniform(0.48, 0.75), rng.uniform(0.06, 0.12)
    else:
        w, h, stand = rng.uniform(0.45, 0.65), rng.uniform(0.3, 0.42), rng.uniform(0.1, 0.16)
    t = rng.uniform(0.03, 0.06)
    parts = [
        _box(0, stand + h / 2, 0, w / 2, h / 2, t / 2),
        _box(0, stand + h / 2, t / 2 + 0.002, w / 2 - 0.02, h / 2 - 0.02, 0.002, slot=1),  # the screen
        _cyl(0, 0.0, -0.03 - t / 2, 0.025, stand + h / 2, slot=0),
        _box(0, 0.01, -0.03, min(0.16, w / 3), 0.01, 0.1),
    ]
    return Furniture(parts, (w / 2, max(t / 2 + 0.03, 0.13)), stand + h, slot_palette=("any", "screen"))


def toilet(rng, variant=None):
    r, h = rng.uniform(0.18, 0.22), rng.uniform(0.38, 0.42)
    parts = [_cyl(0, 0.0, 0.12, r, h), _box(0, h + 0.2, -0.2, 0.2, 0.2, 0.09),
             _cyl(0, h, 0.12, r + 0.01, 0.03, slot=1)]
    return Furniture(parts, (0.22, 0.32), h + 0.4, slot_palette=("ceramic", "any"))


def bathtub(rng, variant=None):
    w, d, h = rng.uniform(1.5, 1.8), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6)
    parts = [_box(0, h / 2, 0, w / 2, h / 2, d / 2), _cyl(w / 2 - 0.12, h, -d / 2 + 0.08, 0.02, 0.18, slot=1)]
    return Furniture(parts, (w / 2, d / 2), h + 0.18, slot_palette=("ceramic", "metal"))


def plant(rng, variant="floor"):
    k = 0.5 if variant == "small" else 1.0
    pot_r, pot_h = k * rng.uniform(0.1, 0.18), k * rng.uniform(0.2, 0.4)
    parts = [_cyl(0, 0.0, 0, pot_r, pot_h, slot=1)]
    r_top = 0.0
    for _ in range(rng.integers(1, 4)):
        r = k * rng.uniform(0.15, 0.3)
        dx, dz = rng.normal(0, 0.5 * r, size=2)
        parts.append(_sph(dx, pot_h + r * rng.uniform(0.6, 1.0), dz, r))
        r_top = max(r_top, r + math.hypot(dx, dz))
    height = max(p.center[1] + p.size[0] for p in parts[1:])
    return Furniture(parts, (r_top, r_top), height, slot_palette=("foliage", "any"))


BUILDERS = {"bed": bed, "chair": chair, "table": table, "sofa": sofa, "cabinet": cabinet, "lamp": lamp,
            "monitor": monitor, "toilet": toilet, "bathtub": bathtub, "plant": plant}


# --------------------------------------------------------------------------------------------
# Room recipes: the latent room type sets object classes, their counts and placement, and the
# room materials. Placement: "wall" (back against a wall), "center", "free" (anywhere on the
# floor), "around" (chairs around the room's table), "at_desk" (a chair in front of a desk),
# "on" (standing on a table or low cabinet placed earlier).
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    cls: str
    placement: str
    count: tuple[int, int]  # inclusive range
    variant: str | None = None
    p: float = 1.0  # probability that the item appears at all


@dataclass
class Recipe:
    width: tuple[float, float]
    depth: tuple[float, float]
    floors: tuple[int, ...]  # floor patterns to choose from
    wall_hue: tuple[float, float]
    items: list[Item] = field(default_factory=list)


RECIPES = {
    "bedroom": Recipe((3.0, 4.5), (3.5, 5.0), (STRIPES, GRAIN), (0.0, 0.15), [
        Item("bed", "wall", (1, 1)),
        Item("cabinet", "wall", (1, 2), "low"),
        Item("cabinet", "wall", (0, 1), "tall", p=0.6),
        Item("lamp", "on", (1, 2), "table", p=0.7),
        Item("chair", "free", (0, 1), p=0.4),
        Item("plant", "free", (1, 1), p=0.3),
    ]),
    "living_room": Recipe((3.8, 6.0), (4.0, 6.5), (STRIPES, GRAIN), (0.05, 0.6), [
        Item("sofa", "wall", (1, 2)),
        Item("table", "center", (1, 1), "low"),
        Item("cabinet", "wall", (1, 2), "low"),
        Item("monitor", "on", (1, 1), "tv", p=0.8),
        Item("lamp", "free", (1, 2), "floor", p=0.7),
        Item("plant", "free", (1, 2), p=0.6),
        Item("chair", "free", (1, 2), p=0.4),
    ]),
    "office": Recipe((3.0, 5.5), (3.5, 6.0), (GRAIN,), (0.5, 0.7), [
        Item("table", "wall", (1, 3), "desk"),
        Item("chair", "at_desk", (1, 3)),
        Item("monitor", "on", (1, 3), "monitor"),
        Item("cabinet", "wall", (1, 2), "tall"),
        Item("lamp", "on", (1, 1), "table", p=0.4),
        Item("plant", "free", (1, 1), p=0.4),
    ]),
    "dining_room": Recipe((3.5, 5.5), (3.5, 5.5), (STRIPES, TILES), (0.05, 0.2), [
        Item("table", "center", (1, 1), "dining"),
        Item("chair", "around", (2, 6)),
        Item("cabinet", "wall", (1, 2), "low", p=0.7),
        Item("cabinet", "wall", (1, 1), "tall", p=0.4),
        Item("lamp", "free", (1, 1), "floor", p=0.4),
        Item("plant", "on", (1, 2), "small", p=0.5),
    ]),
    "kitchen": Recipe((2.8, 4.5), (3.0, 5.0), (TILES,), (0.1, 0.6), [
        Item("cabinet", "wall", (2, 4), "counter"),
        Item("cabinet", "wall", (0, 1), "tall", p=0.5),
        Item("table", "center", (1, 1), "dining", p=0.6),
        Item("chair", "around", (1, 3), p=0.8),
        Item("plant", "on", (1, 1), "small", p=0.4),
    ]),
    "bathroom": Recipe((2.2, 3.2), (2.5, 3.5), (TILES,), (0.45, 0.65), [
        Item("toilet", "wall", (1, 1)),
        Item("bathtub", "wall", (1, 1), p=0.8),
        Item("cabinet", "wall", (1, 2), "low"),
        Item("plant", "on", (1, 1), "small", p=0.3),
    ]),
}


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def sample_material(rng, palette: str = "any") -> Material:
    """Object materials: one shared palette for every class, so colour alone never gives the class."""
    if palette == "ceramic":
        rgb = hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.12), rng.uniform(0.8, 0.95))
    elif palette == "metal":
        rgb = hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.1), rng.uniform(0.25, 0.7))
    elif palette == "screen":
        rgb = hsv_to_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.2))
    elif palette == "foliage":
        rgb = hsv_to_rgb(rng.uniform(0.15, 0.4), rng.uniform(0.35, 0.75), rng.uniform(0.25, 0.65))
    elif palette == "light":
        rgb = hsv_to_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.4), rng.uniform(0.7, 0.95))
    else:
        rgb = hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.75), rng.uniform(0.15, 0.9))
    pattern = int(rng.choice([PLAIN, STRIPES, GRAIN], p=[0.5, 0.25, 0.25]))
    return Material(rgb, pattern, scale=rng.uniform(0.03, 0.12), strength=rng.uniform(0.05, 0.25))


def _room_materials(rng, recipe: Recipe) -> list[Material]:
    floor_pattern = int(rng.choice(recipe.floors))
    if floor_pattern == TILES:
        floor = Material(hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.5, 0.9)),
                         TILES, scale=rng.uniform(0.25, 0.6), strength=rng.uniform(0.1, 0.3))
    elif floor_pattern == STRIPES:  # wooden boards
        floor = Material(hsv_to_rgb(rng.uniform(0.05, 0.11), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.7)),
                         STRIPES, scale=rng.uniform(0.1, 0.2), strength=rng.uniform(0.15, 0.3))
    else:  # carpet
        floor = Material(hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.6)),
                         GRAIN, scale=rng.uniform(0.01, 0.03), strength=rng.uniform(0.1, 0.25))
    wall = Material(hsv_to_rgb(rng.uniform(*recipe.wall_hue), rng.uniform(0.05, 0.3), rng.uniform(0.6, 0.9)),
                    PLAIN, strength=0.0)
    ceiling = Material(hsv_to_rgb(0.1, rng.uniform(0.0, 0.05), rng.uniform(0.85, 0.95)), PLAIN)
    return [floor, wall, ceiling]


# --------------------------------------------------------------------------------------------
# Layout sampling
# --------------------------------------------------------------------------------------------


def _rotate(yaw: float, x: float, z: float) -> tuple[float, float]:
    """Rotate a local (x, z) offset about +y by yaw (local +z maps to (sin yaw, cos yaw))."""
    c, s = math.cos(yaw), math.sin(yaw)
    return c * x + s * z, -s * x + c * z


def _footprint_aabb(x, z, yaw, half):
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    ex, ez = c * half[0] + s * half[1], s * half[0] + c * half[1]
    return (x - ex, x + ex, z - ez, z + ez)


def _overlaps(a, b, margin=0.05):
    apart_x = a[1] + margin <= b[0] or b[1] + margin <= a[0]
    apart_z = a[3] + margin <= b[2] or b[3] + margin <= a[2]
    return not (apart_x or apart_z)


@dataclass
class _Placed:
    furniture: Furniture
    cls: str
    x: float
    y: float
    z: float
    yaw: float
    aabb: tuple[float, float, float, float]
    variant: str | None
    children: list = field(default_factory=list)  # AABBs of objects standing on it


def _wall_pose(rng, room_w, room_d, half):
    """A pose with the object's back against one of the four walls, facing into the room."""
    wall = int(rng.integers(4))
    gap = 0.02
    if wall in (0, 1):  # walls z = -D/2 (faces +z, yaw 0) and z = +D/2 (faces -z, yaw pi)
        along = room_w / 2 - half[0] - 0.05
        if along < 0:
            return None
        x = rng.uniform(-along, along)
        z = -room_d / 2 + half[1] + gap if wall == 0 else room_d / 2 - half[1] - gap
        return x, z, (0.0 if wall == 0 else math.pi)
    along = room_d / 2 - half[0] - 0.05
    if along < 0:
        return None
    z = rng.uniform(-along, along)
    x = -room_w / 2 + half[1] + gap if wall == 2 else room_w / 2 - half[1] - gap
    return x, z, (math.pi / 2 if wall == 2 else -math.pi / 2)


def _aligned_yaw(rng):
    """Furniture is mostly aligned with the room; sometimes it is not."""
    if rng.random() < 0.7:
        return rng.integers(4) * math.pi / 2 + rng.normal(0, 0.08)
    return rng.uniform(-math.pi, math.pi)


def _inside(aabb, room_w, room_d, margin=0.02):
    return (aabb[0] >= -room_w / 2 + margin and aabb[1] <= room_w / 2 - margin
            and aabb[2] >= -room_d / 2 + margin and aabb[3] <= room_d / 2 - margin)


def _place(rng, item, furn, placed, room_w, room_d):
    """Try to find a pose for one object; returns a _Placed or None."""
    for _ in range(30):
        y = 0.0
        support = None
        if item.placement == "wall":
            pose = _wall_pose(rng, room_w, room_d, furn.half)
            if pose is None:
                return None
            x, z, yaw = pose
        elif item.placement == "center":
            x, z = rng.normal(0, 0.25 * room_w / 2), rng.normal(0, 0.25 * room_d / 2)
            yaw = rng.integers(2) * math.pi / 2 + rng.normal(0, 0.05)
        elif item.placement == "free":
            x, z = rng.uniform(-room_w / 2, room_w / 2), rng.uniform(-room_d / 2, room_d / 2)
            yaw = _aligned_yaw(rng)
        elif item.placement in ("around", "at_desk"):
            tables = [p for p in placed if p.cls == "table"]
            if not tables:
                return None
            t = tables[int(rng.integers(len(tables)))] if item.placement == "at_desk" else tables[0]
            side = 0 if item.placement == "at_desk" else int(rng.integers(4))  # 0 = table's front
            hx, hz = t.furniture.half
            offset = furn.half[1] + rng.uniform(0.05, 0.25)
            lx, lz, face = [(rng.uniform(-0.6, 0.6) * hx, hz + offset, math.pi),
                            (rng.uniform(-0.6, 0.6) * hx, -hz - offset, 0.0),
                            (hx + offset, rng.uniform(-0.5, 0.5) * hz, -math.pi / 2),
                            (-hx - offset, rng.uniform(-0.5, 0.5) * hz, math.pi / 2)][side]
            dx, dz = _rotate(t.yaw, lx, lz)
            x, z = t.x + dx, t.z + dz
            yaw = t.yaw + face + rng.normal(0, 0.15)  # chair front (+z) faces the table
        elif item.placement == "on":
            supports = [p for p in placed if p.furniture.top is not None]
            if not supports:
                return None
            support = supports[int(rng.integers(len(supports)))]
            free_x = support.furniture.half[0] - furn.half[0]
            free_z = support.furniture.half[1] - furn.half[1]
            if free_x < 0 or free_z < -0.05:
                continue
            lx, lz = rng.uniform(-free_x, free_x), rng.uniform(-max(free_z, 0), max(free_z, 0))
            dx, dz = _rotate(support.yaw, lx, lz)
            x, z, y = support.x + dx, support.z + dz, support.furniture.top
            yaw = support.yaw + rng.normal(0, 0.3)
        else:
            raise ValueError(f"unknown placement {item.placement!r}")
        aabb = _footprint_aabb(x, z, yaw, furn.half)
        if support is None:
            if not _inside(aabb, room_w, room_d) or any(_overlaps(aabb, p.aabb) for p in placed if p.y == 0):
                continue
        elif any(_overlaps(aabb, c, margin=0.01) for c in support.children):
            continue
        result = _Placed(furn, item.cls, x, y, z, yaw, aabb, item.variant)
        if support is not None:
            support.children.append(aabb)
        return result
    return None


def sample_scene(rng: np.random.Generator, room_type: int | None = None) -> Scene:
    """Sample a room type (unless given), its furniture, materials and lights."""
    if room_type is None:
        room_type = int(rng.integers(len(SCENE_CLASSES)))
    recipe = RECIPES[SCENE_CLASSES[room_type]]
    room_w, room_d = rng.uniform(*recipe.width), rng.uniform(*recipe.depth)
    room_h = rng.uniform(2.5, 3.0)
    materials = _room_materials(rng, recipe)
    placed: list[_Placed] = []
    for item in recipe.items:
        if rng.random() >= item.p:
            continue
        for _ in range(int(rng.integers(item.count[0], item.count[1] + 1))):
            variant = item.variant
            if item.cls == "plant" and item.placement == "free" and rng.random() < 0.3:
                variant = "small"
            furn = BUILDERS[item.cls](rng, variant)
            p = _place(rng, item, furn, placed, room_w, room_d)
            if p is not None:
                placed.append(p)

    primitives, instance_class = [], []
    for k, p in enumerate(placed, start=1):
        slots = [len(materials), len(materials) + 1]
        materials += [sample_material(rng, palette) for palette in p.furniture.slot_palette]
        instance_class.append(CLASSES.index(p.cls))
        for part in p.furniture.parts:
            dx, dz = _rotate(p.yaw, part.center[0], part.center[2])
            center = (p.x + dx, p.y + part.center[1], p.z + dz)
            primitives.append(Primitive(part.kind, center, part.size, p.yaw, k, slots[part.slot]))

    lights = []
    for _ in range(int(rng.integers(1, 3))):
        pos = (rng.uniform(-0.35, 0.35) * room_w, room_h - 0.15, rng.uniform(-0.35, 0.35) * room_d)
        lights.append((pos, rng.uniform(3.0, 6.0)))
    return Scene(room_type, (room_w, room_h, room_d), primitives, instance_class, materials, (0, 1, 2),
                 lights, ambient=rng.uniform(0.15, 0.3))


@dataclass
class Camera:
    position: np.ndarray  # (3,) world
    rotation: np.ndarray  # (3, 3) columns = camera x (right), y (down), z (forward) in world


def look_camera(position, yaw: float, pitch: float) -> Camera:
    """Camera at `position` looking along yaw (about +y), tilted down by `pitch` radians."""
    forward = np.array([math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)  # right x down = forward: a right-handed camera frame
    return Camera(np.asarray(position, dtype=np.float64), np.stack([right, down, forward], axis=1))


def sample_camera(rng: np.random.Generator, scene: Scene) -> Camera:
    """A person standing near one wall, looking into the room and slightly down (as in NYUv2)."""
    room_w, _, room_d = scene.room_size
    obstacles = [(p.center, p) for p in scene.primitives]
    for _ in range(50):
        wall = int(rng.integers(4))
        back = rng.uniform(0.2, 0.8)
        if wall in (0, 1):
            x = rng.uniform(-0.3, 0.3) * room_w
            z = (-room_d / 2 + back) if wall == 0 else (room_d / 2 - back)
            yaw = 0.0 if wall == 0 else math.pi
        else:
            z = rng.uniform(-0.3, 0.3) * room_d
            x = (-room_w / 2 + back) if wall == 2 else (room_w / 2 - back)
            yaw = math.pi / 2 if wall == 2 else -math.pi / 2
        height = rng.uniform(1.1, 1.7)
        # keep the camera out of furniture: it must not stand inside any part's bounding circle
        clear = all(math.hypot(c[0] - x, c[2] - z) > _bound_radius(p) + 0.15 for c, p in obstacles
                    if c[1] - 0.05 < height)
        if not clear:
            continue
        pitch = rng.uniform(0.12, 0.45)
        if obstacles and rng.random() < 0.8:  # frame a piece of furniture, as a photographer would
            target = obstacles[int(rng.integers(len(obstacles)))][0]
            dx, dz = target[0] - x, target[2] - z
            if math.hypot(dx, dz) > 0.8:
                yaw = math.atan2(dx, dz)
                pitch = float(np.clip(math.atan2(height - target[1], math.hypot(dx, dz)), 0.1, 0.6))
        return look_camera((x, height, z), yaw + rng.normal(0, 0.2), pitch + rng.normal(0, 0.05))
    return look_camera((0.0, 1.5, 0.0), rng.uniform(-math.pi, math.pi), 0.3)


def _bound_radius(p: Primitive) -> float:
    if p.kind == "box":
        return math.hypot(p.size[0], p.size[2])
    return p.size[0]
