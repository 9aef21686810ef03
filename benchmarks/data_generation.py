"""Time the synthetic benchmark's generator per stage: the current code against a baseline revision.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/data_generation.py [--build]

renders the same samples (train split, seed 0, 64x64 as in the quick profile; half in the `render`
domain, half in `sensor`) with the baseline (mtl_core/data as of `--baseline`, a git revision, loaded
from git into a temporary package) and with the working tree's, in alternating rounds within one
process, so that load on the machine slows both alike. It prints the median time per image of each
stage, images/s and the speed-up, checks that both versions make identical arrays, and times building
a small cache (rendering, writing, checksums) with each.

`--build` also builds the quick suite's data, the five caches `python -m mtl_core data --profile quick
--domains render sensor` makes (3600 images), with both versions in one process each, alternating
version per cache, and checks that each version's cache has the same checksums as the other's and as
the project's own cache in data/synthetic (read only), where there is one. This takes about 8 minutes
on a busy 2-core machine. The caches go to a temporary folder (under $MTL_CORE_DATA if set) and are
removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

# the generator with the per-primitive ray caster (before culling and vectorisation)
BASELINE = "2826f3e918a8e3cc6fa109c5d633a1596a16f1fe"
MODULES = ("cache", "geometry", "raycast", "scenes", "sensor", "synthetic")

# stage: the module-level functions whose time it is, as (module, name); a name a version does not
# have is skipped. The `intersections` rows are part of the ray cast and shading stages (camera and
# shadow rays): the time spent intersecting primitives, by kind. `rest` is what no stage covers
# (labels, boxes, exposure, sRGB, film grain).
STAGES = {
    "scene sampling": [("synthetic", "sample_scene")],
    "camera sampling": [("synthetic", "sample_camera")],
    "ray cast (3 candidate views)": [("raycast", "cast"), ("raycast", "nearest_hits")],
    "surface buffers (chosen view)": [("raycast", "surface_buffers")],
    "shading + shadows": [("raycast", "shade")],
    "edges": [("synthetic", "_edges")],
    "sensor simulation": [("sensor", "camera_image"), ("sensor", "kinect_depth"),
                          ("sensor", "sensor_normals")],
}
# the quick suite's data, as `python -m mtl_core data --profile quick --domains render sensor` makes it:
# (split, domain, seed); the mixed-domain training adds render images of the next seed
QUICK_SETS = [("train", "render", 0), ("val", "render", 0), ("train", "sensor", 0), ("val", "sensor", 0),
              ("train", "render", 1)]


def load_baseline(revision: str, into: Path) -> dict:
    """mtl_core/data at `revision` as the package `mtl_core_baseline.data`, read from git (no checkout)."""
    package = into / "mtl_core_baseline"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")  # the real one imports the real-data loaders too

    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{revision}:{path}"], cwd=PROJECT, check=True,
                              capture_output=True, text=True).stdout

    (package / "progress.py").write_text(show("mtl_core/progress.py"))  # the cache's progress bar
    for name in MODULES:
        (package / "data" / f"{name}.py").write_text(show(f"mtl_core/data/{name}.py"))
    sys.path.insert(0, str(into))
    return {name: importlib.import_module(f"mtl_core_baseline.data.{name}") for name in MODULES}


def load_current() -> dict:
    return {name: importlib.import_module(f"mtl_core.data.{name}") for name in MODULES}


class StageTimer:
    """Times the stages' functions of one version while active (callers look them up at call time)."""

    def __init__(self, modules: dict):
        self.modules = modules
        self.seconds: dict[str, float] = defaultdict(float)
        self._originals: list[tuple[object, str, object]] = []

    def __enter__(self) -> StageTimer:
        for stage, functions in STAGES.items():
            for module, name in functions:
                if hasattr(self.modules[module], name):
                    self._wrap(self.modules[module], name, stage)
        raycast = self.modules["raycast"]
        if hasattr(raycast, "_HITS"):  # the current code intersects the pairs of one kind at once
            for kind in raycast._HITS:
                self._wrap(raycast._HITS, kind, f"  intersections: {kind}")
        else:  # the baseline: one primitive with many rays at a time
            intersect = raycast.intersect

            def timed_intersect(prim, origin, dirs):
                start = time.perf_counter()
                try:
                    return intersect(prim, origin, dirs)
                finally:
                    self.seconds[f"  intersections: {prim.kind}"] += time.perf_counter() - start
            self._originals.append((raycast, "intersect", intersect))
            raycast.intersect = timed_intersect
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._originals):
            if isinstance(owner, dict):
                owner[name] = original
            else:
                setattr(owner, name, original)

    def _wrap(self, owner, name: str, stage: str) -> None:
        original = owner[name] if isinstance(owner, dict) else getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        self._originals.append((owner, name, original))
        if isinstance(owner, dict):
            owner[name] = timed
        else:
            setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        out, self.seconds = dict(self.seconds), defaultdict(float)
        return out


def render_round(synthetic, timer: StageTimer, indices, size) -> tuple[dict[str, float], list[dict]]:
    """Render `indices` in both domains; seconds per stage (with `total` and `rest`) and the samples."""
    timer.take()
    samples = []
    start = time.perf_counter()
    for domain in ("render", "sensor"):
        spec = synthetic.RenderSpec("train", size, domain, 0, 0.3 if domain == "sensor" else 0.0)
        samples += [spec(i) for i in indices]
    seconds = timer.take()
    seconds["total"] = time.perf_counter() - start
    seconds["rest"] = seconds["total"] - sum(v for k, v in seconds.items() if k in STAGES)
    return seconds, samples


def build(synthetic, root: Path, split: str, num: int, size, domain: str = "render", seed: int = 0):
    """Build one cache in one process: (seconds, cache directory)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the cache's own one-line report
        ds = synthetic.SyntheticScenes(split, num, size=size, domain=domain, seed=seed, root=root, workers=1,
                                       progress=False)
    return time.perf_counter() - start, ds.cache_dir


def differing_fields(a: list[dict], b: list[dict]) -> list[str]:
    """The fields (sample index: name) where two lists of samples differ in dtype, shape or value."""
    return [f"{i}:{k}" for i, (x, y) in enumerate(zip(a, b, strict=True)) for k in x
            if np.asarray(x[k]).dtype != np.asarray(y[k]).dtype or not np.array_equal(x[k], y[k])]


def compare_stages(args, versions: dict, scratch: Path) -> None:
    indices = range(args.images // 2)
    size = (args.size, args.size)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
    builds: dict[str, list[float]] = {name: [] for name in versions}
    differing: set[str] = set()
    for modules in versions.values():  # warm up: imports, first calls, caches of each version
        modules["synthetic"].RenderSpec("val", size)(0)
    with contextlib.ExitStack() as stack:
        timers = {name: stack.enter_context(StageTimer(modules)) for name, modules in versions.items()}
        for r in range(args.rounds):
            order = list(versions) if r % 2 == 0 else list(reversed(versions))  # alternate who goes first
            samples = {}
            for name in order:
                synthetic = versions[name]["synthetic"]
                seconds, samples[name] = render_round(synthetic, timers[name], indices, size)
                rounds[name].append(seconds)
            differing.update(differing_fields(samples["baseline"], samples["current"]))
            for name in order:
                seconds, _ = build(versions[name]["synthetic"], scratch / f"round{r}-{name}", "train",
                                   args.cache_images, size)
                builds[name].append(seconds)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{name} {rounds[name][-1]['total'] / args.images * 1e3:.1f} ms/image" for name in versions),
                flush=True)

    def median_ms(name: str, stage: str) -> float:
        return statistics.median(s.get(stage, 0.0) for s in rounds[name]) / args.images * 1e3

    kinds = sorted({k for v in rounds.values() for s in v for k in s if "intersections" in k})
    print(f"\nmedian ms per image over {args.rounds} alternating rounds of {args.images} images "
          f"({args.images // 2} render + {args.images // 2} sensor, {size[0]}x{size[1]}); "
          f"baseline = {args.baseline[:10]}")
    print(f"{'stage':34s} {'baseline':>9s} {'current':>9s} {'speed-up':>9s}")
    for stage in [*STAGES, *kinds, "rest", "total"]:
        old, new = median_ms("baseline", stage), median_ms("current", stage)
        ratio = f"{old / new:8.1f}x" if new > 0 and old > 0 else "        -"  # "-": not a stage of both
        print(f"{stage:34s} {old:9.2f} {new:9.2f} {ratio}")
    old, new = median_ms("baseline", "total"), median_ms("current", "total")
    print(f"{'images/s':34s} {1e3 / old:9.1f} {1e3 / new:9.1f}")
    old_build, new_build = statistics.median(builds["baseline"]), statistics.median(builds["current"])
    print(f"cache of {args.cache_images} images, one process (render + write + checksums): "
          f"baseline {old_build:.2f} s, current {new_build:.2f} s, speed-up {old_build / new_build:.2f}x")
    verdict = "yes" if not differing else f"NO, differing fields: {sorted(differing)[:20]}"
    print(f"outputs identical (every field of every sample, every round): {verdict}")


def build_quick_suite(versions: dict, scratch: Path) -> None:
    """Build the quick suite's caches with each version, alternating; compare times and checksums."""
    from mtl_core.profiles import get_profile

    profile = get_profile("quick")
    totals = dict.fromkeys(versions, 0.0)
    images = 0
    print(f"\nthe quick suite's data, one process per version ({profile['size'][0]}x{profile['size'][1]}):")
    for n, (split, domain, seed) in enumerate(QUICK_SETS):
        num = profile["num_train"] if split == "train" else profile["num_val"]
        order = list(versions) if n % 2 == 0 else list(reversed(versions))
        seconds, fields = {}, {}
        for name in order:
            seconds[name], directory = build(versions[name]["synthetic"], scratch / name, split, num,
                                             profile["size"], domain, seed)
            fields[name] = json.loads((directory / "meta.json").read_text())["fields"]
        project = PROJECT / "data" / "synthetic" / directory.name / "meta.json"
        if project.exists():
            same = fields["current"] == json.loads(project.read_text())["fields"]
            versus_project = f"{'identical' if same else 'DIFFERENT'} to data/synthetic/{directory.name}"
        else:
            versus_project = "no project cache to compare with"
        versus_baseline = "identical" if fields["current"] == fields["baseline"] else "DIFFERENT"
        old, new = seconds["baseline"], seconds["current"]
        print(f"  {split:5s} {domain:6s} seed {seed}: {num:5d} images, baseline {old:6.1f} s, "
              f"current {new:5.1f} s ({old / new:.1f}x); "
              f"checksums {versus_baseline} to the baseline's, {versus_project}", flush=True)
        totals = {name: totals[name] + seconds[name] for name in versions}
        images += num
    old, new = totals["baseline"], totals["current"]
    print(f"quick suite, {images} images: baseline {old:.1f} s ({images / old:.1f} images/s), "
          f"current {new:.1f} s ({images / new:.1f} images/s), speed-up {old / new:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the generator to compare with")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians are reported)")
    parser.add_argument("--images", type=int, default=40, help="images per round, half in each domain")
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--cache-images", type=int, default=24, help="images of the timed cache build")
    parser.add_argument("--build", action="store_true", help="also build the quick suite's data (see above)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="datagen-", dir=os.environ.get("MTL_CORE_DATA")) as tmp:
        scratch = Path(tmp)
        versions = {"baseline": load_baseline(args.baseline, scratch / "code"), "current": load_current()}
        if args.rounds > 0:
            compare_stages(args, versions, scratch / "stages")
        if args.build:
            build_quick_suite(versions, scratch / "quick")


if __name__ == "__main__":
    main()
