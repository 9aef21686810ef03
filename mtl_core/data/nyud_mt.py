"""NYUD-MT: NYUv2 as released for multi-task learning with ASTMT / MTI-Net (Maninis et al. 2019,
Vandenhende et al. 2020): the 795 train / 654 val images of the NYUv2 labeled set at 480x640.

On disk (`root` = the extracted NYUD_MT folder)::

    images/<id>.jpg          RGB
    segmentation/<id>.png    8-bit class ids: 0 = unlabeled, 1..40 = the 40 NYUv2 classes (Gupta et al.)
    depth/<id>.npy           (H, W) float, metres
    normals/<id>.npy         (H, W, 3) float in [-1, 1]
    edge/<id>.npy            (H, W) float in {0, 1}
    gt_sets/train.txt, gt_sets/val.txt   one <id> per line

Conversions: class c in 1..40 becomes c - 1 and unlabeled becomes 255 (ignore), as MTI-Net does;
normals are used as stored (MTI-Net's horizontal flip negates channel 0, so x is the image-right
axis); the camera is NYUv2's Kinect (`geometry.NYU_KINECT_INTRINSICS`). No scene, saliency or box
annotations: those keys carry the missing markers.
"""

from __future__ import annotations

from .geometry import nyu_intrinsics
from .loading import FolderDataset, check_labels, check_shape, load_image, load_npy, read_ids, require_files

# The 40-class NYUv2 labelling of Gupta et al. (2013), in label order 1..40 (names as in the toolbox).
NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
    "bag", "otherstructure", "otherfurniture", "otherprop",
)

FOLDERS = {"image": ("images", ".jpg"), "semseg": ("segmentation", ".png"), "depth": ("depth", ".npy"),
           "normals": ("normals", ".npy"), "edge": ("edge", ".npy")}


class NYUDMT(FolderDataset):
    """NYUD-MT (semseg 40 classes, depth, normals, edge). See the module docstring for the layout.

    Args:
        split: "train" or "val" ("test" = "val": NYUv2 has no separate validation set).
        root: the NYUD_MT folder (default data/nyud_mt).
        size: (H, W) to resize to, multiples of 32; None keeps 480x640.
        transform: callable applied to each item. num_samples: use at most the first N images.
    """

    name = "nyud_mt"
    tasks = ("semseg", "depth", "normals", "edge")
    classes = NYU40_CLASSES

    def __init__(self, split: str = "train", root=None, size=None, transform=None, num_samples=None):
        super().__init__(split, root, size, transform, num_samples)
        self.ids = self._limit(read_ids(self.root / "gt_sets" / f"{self.split_names[split]}.txt"))
        for key, (folder, ext) in FOLDERS.items():
            require_files([self.path(key, i) for i in range(len(self.ids))], f"NYUD-MT {folder}/*{ext}")

    def path(self, key: str, index: int):
        folder, ext = FOLDERS[key]
        return self.root / folder / f"{self.ids[index]}{ext}"

    def load(self, index: int) -> dict:
        image = load_image(self.path("image", index), "an RGB JPEG", mode="RGB")
        hw = image.shape[:2]

        path = self.path("semseg", index)
        seg = check_shape(load_image(path, "an 8-bit label PNG"), hw, path, "the label map").astype(int)
        check_labels(seg, len(self.classes) + 1, path, "the label map (0 unlabeled, 1..40 classes)")
        semseg = seg - 1
        semseg[seg == 0] = 255

        arrays = {}
        for key, shape in (("depth", hw), ("normals", (*hw, 3)), ("edge", hw)):
            path = self.path(key, index)
            array = load_npy(path, f"a {shape} float array")
            if key == "depth" and array.ndim == 3 and array.shape[2] == 1:
                array = array[..., 0]
            arrays[key] = check_shape(array, shape, path, key)
        edge = (arrays["edge"] > 0.5).astype("float32")
        return {"image": image, "semseg": semseg, "depth": arrays["depth"], "normals": arrays["normals"],
                "edge": edge, "intrinsics": nyu_intrinsics(hw)}
