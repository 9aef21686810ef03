"""The synthetic generator still makes the data it made before its ray caster was vectorised.

Cached datasets (data/synthetic) are keyed by the generator's parameters and GENERATOR_VERSION, not by
its code, so a change that alters any generated array must bump GENERATOR_VERSION. These tests hold the
generator to samples frozen from the per-primitive ray caster (revision 2826f3e, GENERATOR_VERSION 1):

- tests/data/synthetic_golden.npz: whole samples at 32x32 and 32x64 (both domains, with and without
  shadows), compared field by field. The frozen values come from x86-64 with the project's pinned numpy;
  another CPU may round sin and BLAS products differently in the last bit, which can flip a pixel whose
  ray grazes an edge, so up to MAX_DIFFERING of a field's elements may differ (an integer field
  exactly, a float field beyond FLOAT_TOLERANCE); anything more is a changed generator.
  (On this project's machine the new generator is byte-identical: benchmarks/data_generation.py --build
  compares every cache's checksums.)

A reference ray caster below intersects every primitive with every ray, in order, as the generator did
before it culled rays by bounding spheres: it checks that culling never leaves out a hit, also from
cameras placed anywhere in the room, inside furniture included.

After an intended change of the data (and a version bump), refreeze with
`python tests/test_synthetic_golden.py --freeze`.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl_core.data import raycast
from mtl_core.data.scenes import look_camera, sample_camera, sample_scene
from mtl_core.data.synthetic import GENERATOR_VERSION, RenderSpec, intrinsics_for

GOLDEN = Path(__file__).parent / "data"
ARRAY_CASES = {  # small images: stored whole
    "train-render-32x32-s0": (RenderSpec("train", (32, 32), "render", 0), range(6)),
    "val-sensor-32x32-s0": (RenderSpec("val", (32, 32), "sensor", 0, 0.3), range(6)),
    "test-render-32x64-s3-noshadows": (RenderSpec("test", (32, 64), "render", 3, shadows=False), range(2)),
}
FLOAT_TOLERANCE = 1e-6
MAX_DIFFERING = 0.002  # share of a field's elements another CPU's last-bit rounding may flip


def freeze() -> None:
    """Write the golden files from the current generator."""
    arrays = {f"{name}/{i}/{field}": np.asarray(value) for name, (spec, indices) in ARRAY_CASES.items()
              for i in indices for field, value in spec(i).items()}
    np.savez_compressed(GOLDEN / "synthetic_golden.npz", **arrays)


def test_the_frozen_data_is_of_this_generator_version():
    assert GENERATOR_VERSION == 1, "the golden files hold version 1's data: refreeze them (see the docstring)"


@pytest.mark.parametrize("case", list(ARRAY_CASES))
def test_samples_equal_the_frozen_ones_field_by_field(case):
    golden = np.load(GOLDEN / "synthetic_golden.npz")
    spec, indices = ARRAY_CASES[case]
    for i in indices:
        sample = spec(i)
        expected_fields = {key.split("/")[2] for key in golden.files if key.startswith(f"{case}/{i}/")}
        assert set(sample) == expected_fields, f"{case} sample {i}: fields differ"
        for field, value in sample.items():
            expected, value = golden[f"{case}/{i}/{field}"], np.asarray(value)
            where = f"{case} sample {i} field {field!r}"
            assert value.dtype == expected.dtype and value.shape == expected.shape, where
            if np.issubdtype(expected.dtype, np.floating):
                differs = ~np.isclose(value, expected, rtol=0, atol=FLOAT_TOLERANCE, equal_nan=True)
            else:  # images, labels, masks, boxes' classes: exactly
                differs = value != expected
            assert differs.mean() <= MAX_DIFFERING if differs.size > 100 else not differs.any(), (
                f"{where}: {int(differs.sum())} of {differs.size} elements differ from the frozen data")


# ---------------------------------------------------------------- culling leaves out no hit


def reference_nearest_hits(scene, camera, size, intrinsics):
    """Depth and primitive index per ray, every primitive tried on every ray, nearest strictly wins."""
    dirs = raycast.pixel_rays(camera, size, intrinsics)
    t, _, _ = raycast.intersect_room(scene, camera.position, dirs)
    winner = np.full(len(dirs), -1)
    for k, prim in enumerate(scene.primitives):
        tk = raycast.intersect(prim, camera.position, dirs)
        closer = tk < t
        t = np.where(closer, tk, t)
        winner[closer] = k
    return t, winner


def reference_shade(scene, buffers):
    """`raycast.shade` with every shadow ray tested against every primitive."""
    points, normal = buffers["points"], buffers["normal"]
    light = np.full(len(points), scene.ambient)
    for position, power in scene.lights:
        to_light = np.asarray(position) - points
        dist2 = np.einsum("ij,ij->i", to_light, to_light)
        cos = np.einsum("ij,ij->i", normal, to_light) / np.sqrt(dist2)
        lit = np.maximum(cos, 0.0) * power / (1.0 + dist2)
        start = points + 1e-4 * normal
        blocked = np.zeros(len(points), dtype=bool)
        for prim in scene.primitives:
            blocked |= (lit > 0) & (raycast.intersect(prim, start, to_light) < 1.0)
        light += np.where(blocked, 0.0, lit)
    return raycast.albedo(scene, points, normal, buffers["material"]) * light[:, None]


def _views(num_scenes: int):
    """(scene, camera): the generator's cameras, and cameras anywhere in the room looking anywhere."""
    for i in range(num_scenes):
        rng = np.random.default_rng([11, i])
        scene = sample_scene(rng)
        width, height, depth = scene.room_size
        yield scene, sample_camera(rng, scene)
        position = (rng.uniform(-0.45, 0.45) * width, rng.uniform(0.1, 0.9) * height,
                    rng.uniform(-0.45, 0.45) * depth)
        yield scene, look_camera(position, rng.uniform(-math.pi, math.pi), rng.uniform(-1.0, 1.0))


def test_culled_ray_casting_equals_casting_every_ray_against_every_primitive():
    size = (48, 64)
    intrinsics = intrinsics_for(size)
    for scene, camera in _views(24):
        hits = raycast.nearest_hits(scene, camera, size, intrinsics)
        depth, primitive = reference_nearest_hits(scene, camera, size, intrinsics)
        np.testing.assert_array_equal(hits["depth"], depth)
        np.testing.assert_array_equal(hits["primitive"], primitive)
        buffers = raycast.surface_buffers(scene, camera, hits)
        np.testing.assert_array_equal(raycast.shade(scene, buffers), reference_shade(scene, buffers))


def test_rays_near_spheres_keeps_every_ray_that_meets_a_sphere():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(20000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    apex = np.zeros(3)
    centers = rng.normal(size=(12, 3)) * rng.uniform(0.05, 4.0, size=(12, 1))
    radii = rng.uniform(0.01, 1.0, size=12)
    reach = rng.uniform(0, 6, size=len(dirs))
    near = raycast.rays_near_spheres(apex, dirs, centers, radii, reach=reach)
    for center, radius, row in zip(centers, radii, near, strict=True):
        # closest point of each segment [apex, apex + reach * dir] to the centre
        along = np.clip(dirs @ (center - apex), 0, reach)
        meets = np.linalg.norm(apex + along[:, None] * dirs - center, axis=1) <= radius
        assert not (meets & ~row).any()
        assert row.mean() < meets.mean() + 0.2  # and it does cull


if __name__ == "__main__":
    if sys.argv[1:] == ["--freeze"]:
        freeze()
    else:
        sys.exit(f"usage: python {sys.argv[0]} --freeze  (writes the golden files from this generator)")
