"""The embedded synthetic multi-task benchmark: procedurally generated indoor scenes.

`SyntheticScenes` is a torch Dataset whose items follow the batch-dict convention (data/README.md):
RGB, semantic segmentation (floor, wall, ceiling + 10 furniture classes), z-depth, surface normals,
edges, saliency, a scene (room type) label, detection boxes and camera intrinsics, all exact,
because they come from the same ray cast that produced the image.

Why these tasks belong together (the relations NYUv2 has, here by construction):
- depth <-> normals <-> shading: normals are the depth surface's orientation, and Lambertian
  shading (n . l) writes that orientation into the pixels;
- semantics <-> edges <-> boxes <-> saliency: edges are the boundaries of segments, boxes the
  extent of instances, saliency the union of objects;
- scene <-> objects: the room type decides which furniture appears, where and on what floor.

Two domains: `render` (clean, fully annotated) and `sensor` (a Kinect-like camera: blur, noise,
colour cast, depth holes, normals computed from the holed depth, and a fraction of samples whose
auxiliary annotations are missing). Sample `i` of a split shows the same room in both domains;
use different seeds for disjoint scenes. Items are deterministic given (seed, split, index).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import raycast, sensor
from .cache import build_or_load
from .scenes import CLASSES, OBJECT_CLASSES, ROOM_CLASSES, SCENE_CLASSES, sample_camera, sample_scene

GENERATOR_VERSION = 1  # bump whenever rendering changes: cached datasets are keyed by it
SPLITS = {"train": 0, "val": 1, "test": 2}
DOMAINS = ("render", "sensor")
AUXILIARY = ("depth", "normals", "scene")  # what a sensor-domain sample may be missing (ROCK's aux tasks)
# The benchmark's own loss weights for the dense tasks (tasks.make_tasks uses them for every model trained on
# it; an explicit TrainConfig.loss_weights wins; runs.config_hash includes them, so changing them re-trains).
# Chosen by a grid on the MTL baseline at the study schedule (normals 3/10/30 x edge 20/50, semseg and depth
# 1, 96 epochs, one seed) scored by Δm on held-out tuning images (another render seed of the validation
# split): `python benchmarks/task_weights.py --epochs 96 --normals 3 10 30 --edge 20 50` reproduces it.
# Tuning Δm: 10/50 +2.84 %, 3/20 +1.61, 10/20 +1.04, 3/50 +0.79, 30/50 -0.83, 30/20 -4.56. The winner is
# MTI-Net's official NYUD weights. An earlier 3-epoch grid had chosen normals 3: too short a schedule to
# rank weights (05 shows how much Δm moves with them).
LOSS_WEIGHTS = {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}
FOCAL_RATIO = 518.86 / 640  # NYUv2's Kinect: fx / image width (a ~63 degree horizontal field of view)


def default_root() -> Path:
    """Where generated datasets are cached: $MTL_CORE_DATA, else the project's `data/` folder."""
    if os.environ.get("MTL_CORE_DATA"):
        return Path(os.environ["MTL_CORE_DATA"]) / "synthetic"
    project = Path(__file__).resolve().parents[2]
    if (project / "pyproject.toml").exists():
        return project / "data" / "synthetic"
    return Path.home() / ".cache" / "mtl_core" / "synthetic"


def check_size(size, name: str = "size") -> tuple[int, int]:
    """Validate an (H, W) image size: positive multiples of 32, since the models see 1/4 ... 1/32."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={size!r}: expected (height, width), two integers") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32 or (h, w) != tuple(size):
        raise ValueError(f"{name}={tuple(size)}: height and width must be positive multiples of 32 "
                         f"(the models work on 1/4 to 1/32 scale feature maps); e.g. (64, 64) or (96, 128)")
    return h, w


def intrinsics_for(size: tuple[int, int]) -> np.ndarray:
    h, w = size
    f = FOCAL_RATIO * w
    return np.array([f, f, w / 2, h / 2])


def _edges(segment: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """1-pixel-thin boundaries between segments, drawn on the nearer side (the occluding contour)."""
    edge = np.zeros(segment.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        differ = segment[a] != segment[b]
        edge[a] |= differ & (depth[a] <= depth[b])
        edge[b] |= differ & (depth[b] < depth[a])
    return edge


@dataclass(frozen=True)
class RenderSpec:
    """Everything that determines a sample except its index (picklable, for worker processes)."""

    split: str = "train"
    size: tuple[int, int] = (64, 64)
    domain: str = "render"
    seed: int = 0
    missing_fraction: float = 0.0
    min_box_pixels: int = 16
    shadows: bool = True

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return render_sample(index, self)


def render_sample(index: int, spec: RenderSpec) -> dict[str, np.ndarray]:
    """Render sample `index`: numpy arrays (image HxWx3 uint8, depth HxW, normals HxWx3, ...)."""
    h, w = spec.size
    rng = np.random.default_rng([spec.seed, SPLITS[spec.split], index])
    scene = sample_scene(rng)
    intrinsics = intrinsics_for(spec.size)
    # a photographer frames furniture: of a few candidate views keep the one showing the most objects
    best = None
    for _ in range(3):
        cam = sample_camera(rng, scene)
        candidate = raycast.nearest_hits(scene, cam, spec.size, intrinsics)
        ids, counts = np.unique(candidate["segment"], return_counts=True)
        score = int(((ids > raycast.ROOM_SEGMENTS) & (counts >= spec.min_box_pixels)).sum())
        if best is None or score > best[0]:
            best = (score, cam, candidate)
    _, camera, hits = best
    buf = raycast.surface_buffers(scene, camera, hits)  # points, normals, materials: of the chosen view only
    segment = buf["segment"].reshape(h, w)
    depth = buf["depth"].reshape(h, w)
    normals = (buf["normal"] @ camera.rotation).reshape(h, w, 3)  # world -> camera frame
    instance = np.where(segment > raycast.ROOM_SEGMENTS, segment - raycast.ROOM_SEGMENTS, 0)
    room_label = np.array([0, 0, 2, 1, 1, 1, 1])  # segment 1 floor, 2 ceiling, 3..6 walls
    instance_label = np.array([0, *scene.instance_class])
    semseg = np.where(instance > 0, instance_label[instance], room_label[np.minimum(segment, 6)])

    boxes, labels = [], []
    for k in range(1, len(scene.instance_class) + 1):
        ys, xs = np.nonzero(instance == k)
        if len(ys) >= spec.min_box_pixels:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(scene.instance_class[k - 1] - len(ROOM_CLASSES))

    linear = raycast.shade(scene, buf, shadows=spec.shadows).reshape(h, w, 3)
    # auto-exposure, as a camera does: the bright end of the image (97th percentile) maps to 0.85
    linear = linear * np.clip(0.85 / max(np.percentile(linear.mean(axis=2), 97), 1e-6), 0.3, 3.0)
    if spec.domain == "sensor":
        srng = np.random.default_rng([spec.seed, SPLITS[spec.split], index, 1])
        linear = sensor.camera_image(srng, linear)
        depth_out = sensor.kinect_depth(srng, depth, normals, intrinsics)
        normals_out = sensor.sensor_normals(depth_out, intrinsics)
        scene_out = scene.room_type
        missing = srng.random(len(AUXILIARY)) < spec.missing_fraction
        if missing[0]:
            depth_out = np.zeros_like(depth_out)
        if missing[1]:
            normals_out = np.zeros_like(normals_out)
        if missing[2]:
            scene_out = -1
    else:
        linear = linear + rng.normal(0, 0.01, size=linear.shape)  # a little film grain even when clean
        depth_out, normals_out, scene_out = depth, normals, scene.room_type
    image = np.round(raycast.to_srgb(linear) * 255)
    return {
        "image": image.astype(np.uint8),
        "depth": depth_out.astype(np.float32),
        "normals": normals_out.astype(np.float32),
        "semseg": semseg.astype(np.uint8),
        "instance": instance.astype(np.uint8),
        "edge": _edges(segment, depth).astype(np.uint8),
        "sal": (instance > 0).astype(np.uint8),
        "scene": np.int16(scene_out),
        "intrinsics": intrinsics.astype(np.float32),
        "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.array(labels, dtype=np.int16),
    }


def to_tensors(raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Numpy sample -> the batch-dict convention (unbatched): CHW float maps, int64 labels."""
    normals = torch.from_numpy(np.array(raw["normals"], dtype=np.float32)).permute(2, 0, 1)
    return {
        "image": torch.from_numpy(np.asarray(raw["image"], dtype=np.float32) / 255.0).permute(2, 0, 1),
        "semseg": torch.from_numpy(np.asarray(raw["semseg"], dtype=np.int64)),
        "depth": torch.from_numpy(np.array(raw["depth"], dtype=np.float32))[None],
        "normals": normals.contiguous(),
        "edge": torch.from_numpy(np.asarray(raw["edge"], dtype=np.float32))[None],
        "sal": torch.from_numpy(np.asarray(raw["sal"], dtype=np.float32))[None],
        "scene": torch.tensor(int(raw["scene"]), dtype=torch.int64),
        "boxes": torch.from_numpy(np.array(raw["boxes"], dtype=np.float32)).reshape(-1, 4),
        "labels": torch.from_numpy(np.asarray(raw["labels"], dtype=np.int64)),
        "intrinsics": torch.from_numpy(np.array(raw["intrinsics"], dtype=np.float32)),
        "instance": torch.from_numpy(np.asarray(raw["instance"], dtype=np.int64)),
    }


class SyntheticScenes(Dataset):
    """Procedural indoor scenes with exact multi-task ground truth, cached under `root`.

    Args:
        split: "train", "val" or "test" (disjoint random streams).
        num_samples: number of scenes.
        size: (H, W), multiples of 32; (96, 128) gives NYUv2's 3:4 aspect.
        domain: "render" (clean, full annotations) or "sensor" (Kinect-like, see `sensor.py`).
        seed: base seed; sample i is a pure function of (seed, split, i) and the generator version.
        root: cache folder (default: the project's data/synthetic, or $MTL_CORE_DATA/synthetic).
        missing_fraction: sensor domain only; each auxiliary annotation (depth, normals, scene) of
            a sample is missing with this probability (default 0.3), marked as data/README.md describes.
        transform: a callable applied to each item (see `transforms.py`).
        workers: generation processes (default: all cores). progress: show a progress bar.
        min_box_pixels: objects with fewer visible pixels get no detection box
            (default: max(16, 0.3% of the image)).
    """

    classes = CLASSES
    det_classes = OBJECT_CLASSES
    scene_classes = SCENE_CLASSES
    loss_weights = LOSS_WEIGHTS
    tasks = ("semseg", "depth", "normals", "edge", "sal", "scene", "detection")

    def __init__(self, split: str = "train", num_samples: int = 1000, size=(64, 64), domain: str = "render",
                 seed: int = 0, root: str | os.PathLike | None = None, missing_fraction: float | None = None,
                 transform=None, workers: int | None = None, progress: bool | None = None,
                 min_box_pixels: int | None = None, shadows: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {tuple(SPLITS)}")
        if domain not in DOMAINS:
            raise ValueError(f"domain={domain!r}: expected one of {DOMAINS}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r}: expected a positive integer")
        size = check_size(size)
        if missing_fraction is None:
            missing_fraction = 0.3 if domain == "sensor" else 0.0
        if not 0.0 <= float(missing_fraction) <= 1.0:
            raise ValueError(f"missing_fraction={missing_fraction!r}: expected a value in [0, 1]")
        if domain == "render" and missing_fraction > 0:
            raise ValueError("missing_fraction > 0 needs domain='sensor' "
                             "(the render domain is fully annotated)")
        if min_box_pixels is None:
            min_box_pixels = max(16, math.ceil(0.003 * size[0] * size[1]))
        self.spec = RenderSpec(split, size, domain, int(seed), float(missing_fraction), int(min_box_pixels),
                               bool(shadows))
        self.num_samples = int(num_samples)
        self.transform = transform
        params = {**asdict(self.spec), "num_samples": self.num_samples, "version": GENERATOR_VERSION}
        name = f"{split}-{domain}-{size[0]}x{size[1]}-n{num_samples}-s{seed}"
        self.root = Path(root) if root is not None else default_root()
        self.cache_dir, self._arrays = build_or_load(self.root, name, params, self.num_samples, self.spec,
                                                     varlen=("boxes", "labels"), workers=workers,
                                                     progress=progress)

    def __len__(self) -> int:
        return self.num_samples

    def raw(self, index: int) -> dict[str, np.ndarray]:
        """Sample `index` as stored: numpy arrays (uint8 image HxWx3, ...)."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        index %= self.num_samples
        out = {}
        for name, array in self._arrays.items():
            if name.endswith("__offsets"):
                continue
            offsets = self._arrays.get(f"{name}__offsets")
            out[name] = array[offsets[index]:offsets[index + 1]] if offsets is not None else array[index]
        return out

    def __getitem__(self, index: int) -> dict:
        sample = to_tensors(self.raw(index))
        sample["index"] = int(index)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        s = self.spec
        return (f"SyntheticScenes(split={s.split!r}, num_samples={self.num_samples}, size={s.size}, "
                f"domain={s.domain!r}, seed={s.seed}, missing_fraction={s.missing_fraction})")
