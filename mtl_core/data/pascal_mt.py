"""PASCAL-Context for multi-task learning: the PASCAL_MT release of ASTMT / MTI-Net (Maninis et al.
2019, Vandenhende et al. 2020), 4998 train / 5105 val images of about 500x375.

On disk (`root` = the extracted PASCAL_MT folder)::

    JPEGImages/<id>.jpg                    RGB
    ImageSets/Context/{train,val}.txt      one <id> per line
    semseg/pascal-context/<id>.png         8-bit class ids 0..20 (background + the 20 VOC classes)
    pascal-context/trainval/<id>.mat       `LabelMap`: the full PASCAL-Context labelling (459 classes)
    human_parts/<id>.mat                   PASCAL-Part: struct `anno.objects(class, class_ind, mask,
                                           parts(part_name, mask))`
    sal_distill/<id>.png                   8-bit saliency (distilled from a saliency network)
    normals_distill/<id>.png               RGB normals n = 2 * rgb / 255 - 1 (distilled from an NYUD model)

Derived targets, following MTI-Net's loader:
- human_parts: the parts of every person (class_ind 15) grouped into 6 parts (`PART_CLASSES`),
  0 = background; an image without an annotated person has no parts label: all 255 (ignore).
- edge: 1-pixel boundaries of the Context `LabelMap` (MTI-Net thins its Laplacian instead).
- sal: 1 where the PNG is above half intensity.
- normals: only on Context classes that also exist in NYUv2, where the distilled normals are
  meaningful (`NORMALS_CONTEXT_IDS`); all-zero (missing) elsewhere.
No depth, scene, boxes or calibration: missing markers, intrinsics all-zero (unknown).
Images differ in size, so items are resized to `size` (512x512 by default, as MTI-Net).
"""

from __future__ import annotations

import numpy as np

from .loading import (
    IGNORE,
    FolderDataset,
    check_labels,
    check_shape,
    label_edges,
    load_image,
    load_mat,
    read_ids,
    require_files,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
PART_CLASSES = ("background", "head", "torso", "upper arm", "lower arm", "upper leg", "lower leg")
PERSON = 15  # class_ind of a person in PASCAL-Part (the VOC index)
_PART_GROUPS = {  # PASCAL-Part person part names -> PART_CLASSES index (the 6-part grouping of ASTMT)
    1: ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"),
    2: ("neck", "torso"),
    3: ("luarm", "ruarm"),
    4: ("llarm", "rlarm", "lhand", "rhand"),
    5: ("luleg", "ruleg"),
    6: ("llleg", "rlleg", "lfoot", "rfoot"),
}
PART_OF = {name: k for k, names in _PART_GROUPS.items() for name in names}

# Context LabelMap ids (1..459) of the classes whose name is also an NYUv2 class name (except
# "unknown"), plus tvmonitor: the classes on which MTI-Net keeps the NYUD-distilled normals.
NORMALS_CONTEXT_IDS = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53,
    55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111,
    113, 115, 122, 124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184,
    191, 193, 195, 197, 199, 202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242,
    243, 246, 250, 251, 252, 255, 260, 261, 263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288,
    290, 291, 292, 293, 295, 304, 307, 309, 310, 314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349,
    350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411,
    412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441, 442, 443, 444, 446, 454, 457,
))
FILES = {"image": ("JPEGImages", ".jpg"), "semseg": ("semseg/pascal-context", ".png"),
         "context": ("pascal-context/trainval", ".mat"), "human_parts": ("human_parts", ".mat"),
         "sal": ("sal_distill", ".png"), "normals": ("normals_distill", ".png")}


def _loadmat(path, what: str) -> dict:
    # struct fields by name (anno.objects[i].parts[j].part_name), 1x1 arrays as scalars
    return load_mat(path, what, squeeze_me=True, struct_as_record=False)


def human_parts_map(path, shape) -> np.ndarray:
    """The 7-class parts map of a PASCAL-Part annotation; all 255 without an annotated person."""
    what = "a PASCAL-Part annotation (struct anno.objects with class_ind, mask, parts)"
    try:
        objects = np.atleast_1d(_loadmat(path, what)["anno"].objects)
    except (KeyError, AttributeError):
        raise ValueError(f"{path}: no struct anno.objects; expected {what}") from None
    target = None
    for obj in objects:
        parts = np.atleast_1d(getattr(obj, "parts", []))
        if int(obj.class_ind) != PERSON or parts.size == 0:
            continue
        if target is None:
            target = np.zeros(shape, dtype=np.int64)
        for part in parts:
            if part.part_name not in PART_OF:
                raise ValueError(f"{path}: unknown person part {part.part_name!r}; expected one of "
                                 f"{sorted(PART_OF)}")
            mask = check_shape(np.asarray(part.mask), shape, path, f"the mask of part {part.part_name}")
            target[mask.astype(bool)] = PART_OF[part.part_name]
    return np.full(shape, IGNORE, dtype=np.int64) if target is None else target


class PascalMT(FolderDataset):
    """PASCAL-Context MT (semseg 21 classes, human parts, saliency, normals, edges). See the module docstring.

    Args:
        split: "train" or "val" ("test" = "val"). root: default data/pascal_mt.
        size: (H, W), multiples of 32 (default (512, 512); None only works if every image fits).
        normals_classes: Context LabelMap ids where normals count (default `NORMALS_CONTEXT_IDS`).
        transform: callable applied to each item. num_samples: use at most the first N images.
    """

    name = "pascal_mt"
    tasks = ("semseg", "human_parts", "sal", "normals", "edge")
    classes = VOC_CLASSES
    part_classes = PART_CLASSES

    def __init__(self, split: str = "train", root=None, size=(512, 512), transform=None, num_samples=None,
                 normals_classes=None):
        super().__init__(split, root, size, transform, num_samples)
        ids = read_ids(self.root / "ImageSets" / "Context" / f"{self.split_names[split]}.txt")
        self.ids = self._limit(ids)
        for key, (folder, ext) in FILES.items():
            require_files([self.path(key, i) for i in range(len(self.ids))], f"PASCAL_MT {folder}/*{ext}")
        self.normals_classes = np.array(sorted(NORMALS_CONTEXT_IDS if normals_classes is None
                                               else {int(c) for c in normals_classes}))

    def path(self, key: str, index: int):
        folder, ext = FILES[key]
        return self.root / folder / f"{self.ids[index]}{ext}"

    def load(self, index: int) -> dict:
        image = load_image(self.path("image", index), "an RGB JPEG", mode="RGB")
        hw = image.shape[:2]

        path = self.path("semseg", index)
        semseg = check_shape(load_image(path, "an 8-bit label PNG"), hw, path, "the label map")
        semseg = semseg.astype(np.int64)
        check_labels(semseg, len(self.classes), path, "the label map")

        path = self.path("context", index)
        context = _loadmat(path, "a PASCAL-Context annotation with a LabelMap").get("LabelMap")
        if context is None:
            raise ValueError(f"{path}: no LabelMap variable; expected the PASCAL-Context annotation")
        context = check_shape(np.asarray(context), hw, path, "LabelMap")

        path = self.path("sal", index)
        sal = check_shape(load_image(path, "a saliency PNG", mode="L"), hw, path, "the saliency map")

        path = self.path("normals", index)
        rgb = check_shape(load_image(path, "an RGB normals PNG", mode="RGB"), (*hw, 3), path, "the normals")
        normals = 2.0 * rgb.astype(np.float32) / 255.0 - 1.0
        normals[~np.isin(context, self.normals_classes)] = 0.0

        return {"image": image, "semseg": semseg, "edge": label_edges(context),
                "sal": (sal > 127).astype(np.float32), "normals": normals,
                "human_parts": human_parts_map(self.path("human_parts", index), hw)}
