"""What the real-dataset loaders share: file reading with errors that name the file, the "missing"
markers of the batch dict (data/README.md) for annotations a dataset does not have, and a resize that
keeps targets consistent.

A loader subclasses `FolderDataset` and implements `load(index)`, returning numpy arrays at the
files' own resolution: `image` (H, W, 3) uint8, or float in [0, 1]; and any of `semseg` /
`human_parts` (H, W) class ids with 255 = ignore, `depth` (H, W) metres with 0 = missing, `normals`
(H, W, 3) with all-zero = missing, `edge` / `sal` (H, W) in {0, 1}, `instance` (H, W), `scene`
(int, -1 = missing), `boxes` (N, 4) / `labels` (N,), `intrinsics` (4,). What it leaves out gets the
missing marker, so every item has exactly the keys and dtypes of a `SyntheticScenes` item.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .synthetic import check_size
from .synthetic import default_root as synthetic_root
from .transforms import _resize

IGNORE = 255
LABEL_MAPS = ("semseg", "human_parts", "edge", "sal", "instance")  # resized with nearest neighbour
EPS = 1e-6


def default_root(name: str) -> Path:
    """A real dataset's default folder: data/<name> next to the synthetic cache ($MTL_CORE_DATA/<name>)."""
    return synthetic_root().parent / name


# ---------------------------------------------------------------------------------- reading files


def read_ids(path: Path) -> list[str]:
    """The image ids of a split list: one id per line, blank lines skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} not found; expected a text file, one image id a line")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split list {path} is empty; expected one image id per line")
    return ids


def require_files(paths: list[Path], what: str) -> None:
    """Fail at construction, not mid-epoch, when files that a split list names are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} {what} file(s) are missing, "
                                f"e.g. {missing[0]}")


def load_npy(path: Path, what: str, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; expected {what}") from None
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err}); expected {what}") from None


def load_image(path: Path, what: str, mode: str | None = None) -> np.ndarray:
    """A PNG / JPEG as an array; `mode` converts (e.g. "RGB"), None keeps palette indices as they are."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert(mode) if mode else im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; expected {what}") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: not a readable image ({err}); expected {what}") from None


def load_mat(path: Path, what: str, **options) -> dict:
    """An old-style (v5) MATLAB file via scipy.io.loadmat."""
    try:
        return scipy.io.loadmat(path, **options)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; expected {what}") from None
    except Exception as err:  # scipy raises assorted types (MatReadError, IndexError, ...) on corrupt files
        raise ValueError(f"{path}: cannot read as a MATLAB file ({type(err).__name__}: {err}); "
                         f"expected {what}") from None


def check_shape(array: np.ndarray, shape: tuple, path, what: str) -> np.ndarray:
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{path}: {what} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    return array


def check_labels(labels: np.ndarray, num_classes: int, path, what: str) -> None:
    bad = np.setdiff1d(np.unique(labels), [*range(num_classes), IGNORE])
    if bad.size:
        raise ValueError(f"{path}: {what} has values {bad[:5].tolist()}; expected 0..{num_classes - 1} "
                         f"or {IGNORE} (ignore)")


def label_edges(labels: np.ndarray) -> np.ndarray:
    """1-pixel-thin boundaries of a label map: a pixel whose right or lower neighbour differs."""
    edge = np.zeros(labels.shape, dtype=np.float32)
    edge[:, :-1] = labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] = np.maximum(edge[:-1, :], labels[:-1, :] != labels[1:, :])
    return edge


# ---------------------------------------------------------------------------------- samples


def unit_normals(normals: np.ndarray) -> np.ndarray:
    """Rescale to unit length (PNG-quantised or resized normals drift); all-zero (missing) stays zero."""
    normals = np.nan_to_num(np.asarray(normals, dtype=np.float32))
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    return np.where(norm > EPS, normals / np.maximum(norm, EPS), 0.0).astype(np.float32)


def to_sample(raw: dict, source: str) -> dict:
    """Numpy arrays from `load` -> the batch-dict item (CHW float maps, int64 labels), with markers."""
    image = np.asarray(raw["image"])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{source}: image has shape {image.shape}, expected (H, W, 3)")
    h, w = image.shape[:2]
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    for key in ("semseg", "human_parts", "depth", "normals", "edge", "sal", "instance"):
        if key in raw and tuple(np.shape(raw[key])[:2]) != (h, w):
            raise ValueError(f"{source}: {key} is {np.shape(raw[key])[:2]}, the image {h}x{w}")

    def dense(key: str, fill, dtype=np.float32) -> torch.Tensor:
        """The (H, W) map `key`, or `fill` everywhere when the dataset has no such annotation."""
        value = raw.get(key)
        array = np.full((h, w), fill, dtype) if value is None else np.asarray(value, dtype)
        return torch.from_numpy(np.ascontiguousarray(array))

    normals = unit_normals(raw["normals"]) if "normals" in raw else np.zeros((h, w, 3), np.float32)
    sample = {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "semseg": dense("semseg", IGNORE, np.int64),
        "depth": dense("depth", 0.0).nan_to_num(nan=0.0).clamp_min(0)[None],  # NaN / negative = no reading
        "normals": torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1))),
        "edge": dense("edge", IGNORE)[None],
        "sal": dense("sal", IGNORE)[None],
        "scene": torch.tensor(int(raw.get("scene", -1)), dtype=torch.int64),
        "boxes": torch.as_tensor(np.asarray(raw.get("boxes", np.zeros((0, 4))), np.float32)).reshape(-1, 4),
        "labels": torch.as_tensor(np.asarray(raw.get("labels", ()), np.int64)).reshape(-1),
        # all-zero intrinsics = uncalibrated (PASCAL's photos); fx = 0 survives flips and crops
        "intrinsics": torch.as_tensor(np.asarray(raw.get("intrinsics", np.zeros(4)), np.float32)),
        "instance": dense("instance", 0, np.int64),
    }
    if "human_parts" in raw:
        sample["human_parts"] = dense("human_parts", IGNORE, np.int64)
    return sample


def resize_sample(sample: dict, size: tuple[int, int]) -> dict:
    """Resize every map to (H, W) `size`: the image bilinearly (antialiased when shrinking), labels,
    depth and normals by nearest neighbour (no blended classes, no fake depth between a surface
    and a hole); boxes and intrinsics are scaled to match."""
    h, w = sample["image"].shape[-2:]
    if (h, w) == tuple(size):
        return sample
    out = dict(sample)
    out["image"] = F.interpolate(sample["image"][None], size=size, mode="bilinear", align_corners=False,
                                 antialias=True)[0].clamp(0, 1)
    for key in (*LABEL_MAPS, "depth", "normals"):
        if key in out:
            out[key] = _resize(out[key], size, "nearest-exact")
    norm = out["normals"].norm(dim=0, keepdim=True)
    out["normals"] = torch.where(norm > EPS, out["normals"] / norm.clamp_min(EPS), 0.0)
    scale = torch.tensor([size[1] / w, size[0] / h] * 2)
    out["boxes"] = sample["boxes"] * scale
    out["intrinsics"] = sample["intrinsics"] * scale
    return out


class FolderDataset(Dataset):
    """Base of the real-data loaders: split handling, `size` / `num_samples` / `transform`, item assembly.

    Subclasses set `name`, `tasks`, the class lists, `split_names` ({split argument: name on disk})
    and `self.ids` (one entry per image of the split), and implement `load(index)`.
    """

    name = ""
    tasks: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    scene_classes: tuple[str, ...] = ()
    det_classes: tuple[str, ...] = ()
    # NYUv2 and PASCAL-Context have no separate test set: "test" is the usual evaluation split.
    split_names = {"train": "train", "val": "val", "test": "val"}

    def __init__(self, split: str, root, size, transform, num_samples):
        if split not in self.split_names:
            raise ValueError(f"split={split!r}: {self.name} has splits {tuple(self.split_names)}")
        self.split = split
        self.root = Path(root) if root is not None else default_root(self.name)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: dataset folder {self.root} not found; see data/README.md "
                                    f"for how to lay it out (or pass data_dir=...)")
        self.size = check_size(size) if size is not None else None
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                        or num_samples < 1):
            raise ValueError(f"num_samples={num_samples!r}: expected a positive integer or None (all)")
        self.num_samples = num_samples
        self.transform = transform
        self.ids: list = []

    def _limit(self, ids: list) -> list:
        """At most `num_samples` of the split (the first ones), for quick runs."""
        return ids[: self.num_samples] if self.num_samples else ids

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"{self.name} {self.split} image {self.ids[index]!r}"

    def __getitem__(self, index: int) -> dict:
        n = len(self.ids)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        sample = to_sample(self.load(index), self.describe(index))
        h, w = sample["image"].shape[-2:]
        if self.size is not None:
            sample = resize_sample(sample, self.size)
        elif h % 32 or w % 32:
            raise ValueError(f"{self.describe(index)} is {h}x{w}; the models need multiples of 32: "
                             f"pass size=(H, W), e.g. size=(512, 512)")
        sample["index"] = int(index)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, root={os.fspath(self.root)!r}, "
                f"n={len(self)}, size={self.size})")
