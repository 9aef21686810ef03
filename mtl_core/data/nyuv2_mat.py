"""NYUv2 from the official labeled release: `nyu_depth_v2_labeled.mat` + `splits.mat` (Silberman et al.,
ECCV 2012), 1449 images of 480x640, 795 train / 654 test. The tasks ROCK trains on: detection of the
19 classes below (boxes = tight bounds of instance masks), scene type, depth and normals; plus
semantic segmentation when a class mapping is supplied.

On disk (`root`)::

    nyu_depth_v2_labeled.mat   MATLAB v7.3, i.e. HDF5. MATLAB stores arrays column-major, so h5py
                               sees every array with its axes reversed:
        images      (N, 3, W, H) uint8     -> image n = images[n].transpose(2, 1, 0), (H, W, 3)
        depths      (N, W, H) float        -> depths[n].T, metres (in-painted: no holes)
        labels      (N, W, H) uint16       -> labels[n].T, 0 = unlabeled, k = names{k} (894 classes)
        instances   (N, W, H) uint8        -> instances[n].T, object ids *within* a class
        names       (1, 894) cell: HDF5 object references to uint16 character arrays
        sceneTypes  (1, N) cell, same encoding: "kitchen", "bedroom", ...
    splits.mat                 MATLAB v5: trainNdxs (795, 1), testNdxs (654, 1), 1-based image numbers
    classMapping40.mat         optional, see `class_mapping`
    normals.npy                optional, see `normals`

Derived targets:
- detection: one box per (label, instance) pair whose class NAME is one of `NYU_DETECTION_CLASSES`
  (several instances of a class give several boxes); labels index that tuple.
- scene: the index of sceneTypes[n] in `NYU_SCENE_CLASSES` (the 27 scene types of the labeled
  set, sorted); a name outside the list gives -1 (missing), never an "other" class.
- semseg (only with `class_mapping`): the 894 classes mapped to 40 (or 13) classes, 0 -> 255 ignore.
- normals: from `normals.npy` when given, else computed from depth with the Kinect intrinsics
  (`geometry.normals_from_depth`); all-zero where undefined (borders, depth discontinuities).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from .geometry import normals_from_depth, nyu_intrinsics
from .loading import IGNORE, FolderDataset, check_shape, load_mat, load_npy

NYU_DETECTION_CLASSES = (
    "bathtub", "bed", "bookshelf", "box", "chair", "counter", "desk", "door", "dresser", "garbage bin",
    "lamp", "monitor", "night stand", "pillow", "sink", "sofa", "table", "television", "toilet",
)
NYU_SCENE_CLASSES = (
    "basement", "bathroom", "bedroom", "bookstore", "cafe", "classroom", "computer_lab", "conference_room",
    "dinette", "dining_room", "excercise_room", "foyer", "furniture_store", "home_office", "home_storage",
    "indoor_balcony", "kitchen", "laundry_room", "living_room", "office", "office_kitchen", "playroom",
    "printer_room", "reception_room", "student_lounge", "study", "study_room",
)  # "excercise_room" is spelled as in the dataset
REQUIRED = ("images", "depths", "labels", "instances", "names", "sceneTypes")


def _matlab_strings(f: h5py.File, key: str) -> list[str]:
    """A v7.3 cell array of strings: each cell is a reference to a uint16 array of character codes."""
    strings = []
    for ref in np.asarray(f[key]).ravel():
        chars = f[ref]
        # MATLAB writes an empty string as its dimensions, flagged by the MATLAB_empty attribute
        empty = bool(chars.attrs.get("MATLAB_empty", 0))
        strings.append("" if empty else "".join(map(chr, np.asarray(chars).ravel())))
    return strings


def _cell_strings(cell) -> list[str]:
    """A cell array of strings as scipy.io.loadmat returns it (object array of 1-element arrays)."""
    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        item = np.asarray(item).ravel()
        out.append(str(item[0]) if item.size else "")
    return out


def _read_mapping(path: Path, num_source: int) -> tuple[np.ndarray, list[str]]:
    """One class-mapping file: (target class 1..K or 0 = unlabeled, per source class 1..num_source; names).

    Accepted: classMapping40.mat (`mapClass` 894 -> 40, `className`), class13Mapping.mat (struct
    `classMapping13` with a 40 -> 13 vector and the 13 names), or a .npy / .txt with one integer per
    source class (classes then get numbered names).
    """
    if not path.is_file():
        raise FileNotFoundError(f"class_mapping file {path} not found")
    names: list[str] = []
    if path.suffix != ".mat":
        try:
            vector = (np.load(path, allow_pickle=False) if path.suffix == ".npy"
                      else np.loadtxt(path, dtype=np.int64, ndmin=1))
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{path}: cannot read a class mapping ({err})") from None
    else:
        mat = load_mat(path, "a class mapping (classMapping40.mat or class13Mapping.mat)")
        if "mapClass" in mat:
            vector = mat["mapClass"]
            names = _cell_strings(mat["className"]) if "className" in mat else []
        elif "classMapping13" in mat:
            struct = mat["classMapping13"].ravel()[0]
            fields = [np.asarray(struct[name]) for name in struct.dtype.names]
            vector = next((f for f in fields if f.dtype != object), np.zeros(0))
            names = next((_cell_strings(f) for f in fields if f.dtype == object), [])
        else:
            keys = sorted(k for k in mat if not k.startswith("__"))
            raise ValueError(f"{path}: no `mapClass` or `classMapping13` variable (it has {keys})")
    vector = np.asarray(vector).ravel()
    if vector.size != num_source:
        raise ValueError(f"{path}: maps {vector.size} classes, but the labels at this point have "
                         f"{num_source} (chain 894 -> 40 -> 13: give classMapping40.mat first)")
    if not np.issubdtype(vector.dtype, np.number) or np.any(vector < 0) or np.any(vector != np.round(vector)):
        raise ValueError(f"{path}: expected non-negative integer class ids, got {vector[:5]}...")
    vector = vector.astype(np.int64)
    if names and len(names) < vector.max():
        raise ValueError(f"{path}: maps to class {vector.max()} but names only {len(names)} classes")
    return vector, names or [f"class {k}" for k in range(int(vector.max()))]


class NYUv2Mat(FolderDataset):
    """NYUv2 labeled set from the official .mat files (detection, scene, depth, normals, [semseg]).

    Args:
        split: "train" (trainNdxs) or "test" / "val" (testNdxs).
        root: folder with the .mat files (default data/nyuv2_mat); the file options below are
            resolved against it when relative.
        size: (H, W) to resize to, multiples of 32; None keeps 480x640.
        class_mapping: None (no semseg task), a mapping file, or a list of files applied in order
            to the 894 raw classes, e.g. "classMapping40.mat" (40 classes) or
            ["classMapping40.mat", "class13Mapping.mat"] (13 classes); see `_read_mapping`.
        normals: "auto" (`normals.npy` under root if present, else from depth), "depth", or a path
            to an (N, H, W, 3) float .npy in image orientation (rows = image rows), camera frame,
            all-zero = missing.
        normals_step: pixel step of the depth differences (2 averages the Kinect's quantisation).
        min_box_pixels: instances with fewer pixels get no box.
        mat_file, splits_file: file names. transform, num_samples: as the other datasets.
    """

    name = "nyuv2_mat"
    tasks = ("depth", "normals", "scene", "detection")
    det_classes = NYU_DETECTION_CLASSES
    scene_classes = NYU_SCENE_CLASSES
    split_names = {"train": "trainNdxs", "val": "testNdxs", "test": "testNdxs"}

    @classmethod
    def provided_tasks(cls, class_mapping=None, **_) -> tuple[str, ...]:
        return ("semseg", *cls.tasks) if class_mapping else cls.tasks

    def __init__(self, split: str = "train", root=None, size=None, transform=None, num_samples=None,
                 class_mapping=None, normals="auto", normals_step: int = 2, min_box_pixels: int = 1,
                 mat_file="nyu_depth_v2_labeled.mat", splits_file="splits.mat"):
        super().__init__(split, root, size, transform, num_samples)
        self.mat_path = self._resolve(mat_file)
        self._h5, self._pid = None, None
        self._read_header()
        self.indices = self._limit(self._read_split(self._resolve(splits_file), split))
        self.ids = [int(i) + 1 for i in self.indices]  # the 1-based image numbers of splits.mat
        self.tasks = self.provided_tasks(class_mapping)
        self._semseg_lut = self._class_lut(class_mapping) if class_mapping else None

        if int(normals_step) < 1:
            raise ValueError(f"normals_step={normals_step!r}: expected a positive integer")
        self.normals_step, self.min_box_pixels = int(normals_step), int(min_box_pixels)
        if normals == "auto":
            normals = "normals.npy" if (self.root / "normals.npy").is_file() else "depth"
        self.normals_path = None if normals == "depth" else self._resolve(normals)
        if self.normals_path is not None:
            # memory-mapped: the full stack is ~5 GB, and only its shape is needed here
            stack = load_npy(self.normals_path, "an (N, H, W, 3) float array of normals", mmap_mode="r")
            check_shape(stack, (self.num_images, *self.image_size, 3), self.normals_path, "the normals stack")
        self._normals = None

    # -------------------------------------------------------------------------------- reading
    def _resolve(self, path) -> Path:
        """A file option: a relative path is taken under root, unless only the path as given exists."""
        path = Path(path)
        if path.is_absolute() or (path.exists() and not (self.root / path).exists()):
            return path
        return self.root / path

    def _open(self) -> h5py.File:
        """The .mat file, opened once per process (an h5py handle must not cross a fork)."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.mat_path, "r"), os.getpid()
        return self._h5

    def __getstate__(self):
        return {**self.__dict__, "_h5": None, "_normals": None}

    def _read_header(self) -> None:
        path = self.mat_path
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected NYUv2's nyu_depth_v2_labeled.mat "
                                    f"(see data/README.md)")
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise ValueError(f"{path}: not a MATLAB v7.3 (HDF5) file ({err}); expected the official "
                             f"nyu_depth_v2_labeled.mat") from None
        with f:
            missing = [key for key in REQUIRED if key not in f]
            if missing:
                raise ValueError(f"{path}: no variable(s) {missing}; expected {list(REQUIRED)}")
            shape = f["images"].shape
            if len(shape) != 4 or shape[1] != 3:
                raise ValueError(f"{path}: images has shape {shape}, expected (N, 3, W, H) as h5py reads "
                                 f"MATLAB's H x W x 3 x N")
            n, _, w, h = shape
            for key in ("depths", "labels", "instances"):
                if f[key].shape != (n, w, h):
                    raise ValueError(f"{path}: {key} has shape {f[key].shape}, expected {(n, w, h)} "
                                     f"to match images {shape}")
            self.num_images, self.image_size = n, (h, w)
            self.class_names = _matlab_strings(f, "names")
            scene_types = _matlab_strings(f, "sceneTypes")
        if len(scene_types) != n:
            raise ValueError(f"{path}: sceneTypes has {len(scene_types)} entries for {n} images")
        lookup = {name: k for k, name in enumerate(NYU_SCENE_CLASSES)}
        self.scene_types = scene_types
        self.scene_ids = np.array([lookup.get(s, -1) for s in scene_types], dtype=np.int64)
        # raw class id (1-based index into names) -> detection class, -1 for the other classes
        self._det_of_label = np.full(len(self.class_names) + 1, -1, dtype=np.int64)
        absent = [c for c in NYU_DETECTION_CLASSES if c not in self.class_names]
        if absent:
            raise ValueError(f"{path}: names lacks the detection classes {absent}")
        for k, cls in enumerate(NYU_DETECTION_CLASSES):
            self._det_of_label[self.class_names.index(cls) + 1] = k

    def _read_split(self, path: Path, split: str) -> list[int]:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected NYUv2's splits.mat (trainNdxs, testNdxs)")
        key = self.split_names[split]
        mat = load_mat(path, "NYUv2's splits.mat (trainNdxs / testNdxs)", variable_names=[key])
        if key not in mat:
            raise ValueError(f"{path}: no variable {key!r}; expected trainNdxs and testNdxs")
        numbers = np.asarray(mat[key]).ravel().astype(np.int64)
        if numbers.size == 0 or numbers.min() < 1 or numbers.max() > self.num_images:
            raise ValueError(f"{path}: {key} must hold 1-based image numbers in 1..{self.num_images}, "
                             f"got range {numbers.min(initial=0)}..{numbers.max(initial=0)}")
        return (numbers - 1).tolist()

    def _class_lut(self, class_mapping) -> np.ndarray:
        """raw label (0..894) -> semseg id (0..K-1, 255 ignore), composing the mapping files in order."""
        files = [class_mapping] if isinstance(class_mapping, str | os.PathLike) else list(class_mapping)
        lut = np.arange(len(self.class_names) + 1)
        names = self.class_names
        for file in files:
            vector, names = _read_mapping(self._resolve(file), len(names))
            lut = np.concatenate([[0], vector])[lut]
        self.classes = tuple(names)
        return np.where(lut == 0, IGNORE, lut - 1)

    # -------------------------------------------------------------------------------- items
    def describe(self, index: int) -> str:
        return f"{self.mat_path} image {self.ids[index]} (1-based)"

    def load(self, index: int) -> dict:
        f, n = self._open(), self.indices[index]
        image = f["images"][n].transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
        depth = f["depths"][n].T.astype(np.float32)
        label = f["labels"][n].T.astype(np.int64)
        instance = f["instances"][n].T.astype(np.int64)
        if label.max(initial=0) > len(self.class_names):
            raise ValueError(f"{self.describe(index)}: label {label.max()} beyond the "
                             f"{len(self.class_names)} names")
        intrinsics = nyu_intrinsics(image.shape[:2])
        boxes, labels, objects = instance_boxes(label, instance, self._det_of_label, self.min_box_pixels)
        raw = {"image": image, "depth": depth, "scene": self.scene_ids[n], "boxes": boxes, "labels": labels,
               "instance": objects, "intrinsics": intrinsics}
        if self._semseg_lut is not None:
            raw["semseg"] = self._semseg_lut[label]
        if self.normals_path is None:
            raw["normals"] = normals_from_depth(depth, intrinsics, step=self.normals_step)
        else:
            if self._normals is None:
                self._normals = load_npy(self.normals_path, "normals", mmap_mode="r")
            raw["normals"] = np.asarray(self._normals[n], dtype=np.float32)
        return raw


def instance_boxes(label: np.ndarray, instance: np.ndarray, class_of_label: np.ndarray, min_pixels: int = 1):
    """Tight xyxy boxes (pixel edges, as SyntheticScenes) of the objects of the detection classes.

    NYUv2 numbers instances within each class, so an object is a (label, instance) pair. Returns
    boxes (K, 4) float32, labels (K,) int64 and an instance map (0 = no box, k = the k-th box).
    """
    det = class_of_label[label]
    obj = (det >= 0) & (instance > 0)
    base = int(instance.max(initial=0)) + 1
    pairs = label * base + instance
    keys = np.unique(pairs[obj])
    ids = np.zeros(label.shape, dtype=np.int64)
    ids[obj] = np.searchsorted(keys, pairs[obj]) + 1
    counts = np.bincount(ids.ravel(), minlength=len(keys) + 1)
    boxes, labels, objects = [], [], np.zeros_like(ids)
    for k, rows_cols in enumerate(ndimage.find_objects(ids, max_label=len(keys)), start=1):
        if rows_cols is None or counts[k] < min_pixels:
            continue
        rows, cols = rows_cols
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        labels.append(class_of_label[keys[k - 1] // base])
        objects[ids == k] = len(boxes)
    return (np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64), objects)
