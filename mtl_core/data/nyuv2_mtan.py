"""NYUv2 as preprocessed for MTAN (Liu et al., CVPR 2019) and reused by LibMTL: 795 train / 654 val
images resized to 288x384, with 13-class segmentation, depth and normals.

On disk (`root` = the folder holding train/ and val/), as read by MTAN's `create_dataset.py`::

    {train,val}/image/<i>.npy    (288, 384, 3) float in [0, 1], channels last
    {train,val}/label/<i>.npy    (288, 384) float class ids 0..12, -1 = unlabeled
    {train,val}/depth/<i>.npy    (288, 384, 1) float, metres, 0 = missing
    {train,val}/normal/<i>.npy   (288, 384, 3) float in [-1, 1], all-zero = missing

with <i> = 0 .. N-1 per split. Conversions: label -1 becomes 255 (ignore); normals are used as
stored; intrinsics are the Kinect's scaled to 288x384 (an approximation: assumes the 640x480 frame
was resized, not cropped). No edge, saliency, scene or box annotations (missing markers).
"""

from __future__ import annotations

import numpy as np

from .geometry import nyu_intrinsics
from .loading import IGNORE, FolderDataset, check_labels, check_shape, load_npy, require_files

# The 13-class NYUv2 labelling (Couprie et al. 2013) in label order 0..12.
NYU13_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "painting", "sofa",
                 "table", "tv", "wall", "window")
FOLDERS = ("image", "label", "depth", "normal")


class NYUv2MTAN(FolderDataset):
    """NYUv2 in the MTAN / LibMTL layout (semseg 13 classes, depth, normals). See the module docstring.

    Args:
        split: "train" or "val" ("test" = "val"). root: default data/nyuv2_mtan.
        size: (H, W) to resize to, multiples of 32; None keeps 288x384.
        transform: callable applied to each item. num_samples: use at most the first N images.
    """

    name = "nyuv2_mtan"
    tasks = ("semseg", "depth", "normals")
    classes = NYU13_CLASSES

    def __init__(self, split: str = "train", root=None, size=None, transform=None, num_samples=None):
        super().__init__(split, root, size, transform, num_samples)
        self.split_dir = self.root / self.split_names[split]
        image_dir = self.split_dir / "image"
        if not image_dir.is_dir():
            layout = f"{self.split_dir}/{{{','.join(FOLDERS)}}}/<i>.npy"
            raise FileNotFoundError(f"{image_dir} not found; expected {layout} (see data/README.md)")
        count = len(list(image_dir.glob("*.npy")))
        if count == 0:
            raise FileNotFoundError(f"{image_dir} holds no .npy files; expected 0.npy ... N-1.npy")
        # MTAN names files by position, so the split is 0..count-1; a gap shows up as a missing file
        self.ids = self._limit(list(range(count)))
        for folder in FOLDERS:
            require_files([self.path(folder, i) for i in self.ids], f"{self.split_dir.name}/{folder}/<i>.npy")

    def path(self, folder: str, index: int):
        return self.split_dir / folder / f"{self.ids[index]}.npy"

    def load(self, index: int) -> dict:
        path = self.path("image", index)
        image = load_npy(path, "an (H, W, 3) float image in [0, 1]")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{path}: image has shape {image.shape}, expected (H, W, 3) (channels last)")
        if image.dtype != np.uint8 and (image.min() < -1e-3 or image.max() > 1 + 1e-3):
            raise ValueError(f"{path}: image values span [{image.min():.3g}, {image.max():.3g}], "
                             f"expected floats in [0, 1]")
        hw = image.shape[:2]

        path = self.path("label", index)
        label = check_shape(load_npy(path, "an (H, W) class-id array"), hw, path, "the label map")
        semseg = np.where(label < 0, IGNORE, np.rint(label)).astype(np.int64)
        check_labels(semseg, len(self.classes), path, "the label map (-1 unlabeled, 0..12 classes)")

        path = self.path("depth", index)
        depth = load_npy(path, "an (H, W, 1) float depth map")
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        depth = check_shape(depth, hw, path, "depth")

        path = self.path("normal", index)
        normals = check_shape(load_npy(path, "an (H, W, 3) normal map"), (*hw, 3), path, "normals")
        return {"image": image, "semseg": semseg, "depth": depth, "normals": normals,
                "intrinsics": nyu_intrinsics(hw)}
