"""Real-dataset loaders on tiny fixtures written in each release's exact on-disk format.

Fixtures use non-square, asymmetric patterns so that a swapped axis or a missed MATLAB transpose
cannot pass, and every expected value is computed from the fixture, not typed in.
"""

import pickle

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mtl_core.data import (
    DATASETS,
    NYUDMT,
    NYUv2Mat,
    NYUv2MTAN,
    PascalMT,
    SyntheticScenes,
    build_dataset,
    collate_batch,
    dataset_tasks,
)
from mtl_core.data.geometry import nyu_intrinsics
from mtl_core.data.nyud_mt import NYU40_CLASSES
from mtl_core.data.nyuv2_mat import NYU_DETECTION_CLASSES, NYU_SCENE_CLASSES
from mtl_core.data.pascal_mt import PART_CLASSES, PART_OF
from mtl_core.losses import task_losses
from mtl_core.metrics import make_meter
from mtl_core.models import build_model
from mtl_core.tasks import make_tasks

H, W = 64, 96  # non-square, so that a transposed array has the wrong shape


def pattern(seed, shape=(H, W)):
    """A deterministic pattern that differs along rows and columns (no symmetry to hide a flip)."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (rows * 7 + cols * 3 + seed * 11) % 256


def rgb_image(seed):
    """Blocky (JPEG-friendly) image: top-left bright red, varying by row in G and by column in B."""
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img = np.stack([np.where((rows < H // 2) & (cols < W // 3), 230, 20),
                    (rows // 16) * 60, (cols // 24) * 60 + seed * 10], axis=-1)
    return img.astype(np.uint8)


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def normals_field(seed):
    """Unit normals whose components vary along rows (y) and columns (x); a zero block = missing."""
    rows, cols = np.meshgrid(np.linspace(-0.5, 0.5, H), np.linspace(-0.8, 0.8, W), indexing="ij")
    n = unit(np.stack([cols, rows + 0.1 * seed, -np.ones_like(rows)], axis=-1)).astype(np.float32)
    n[:4, :6] = 0
    return n


# ------------------------------------------------------------------------------------------ NYUD-MT


def make_nyud_mt(root, ids=("0001", "0002", "0003"), val=("0004",)):
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    truth = {}
    for k, id_ in enumerate((*ids, *val)):
        seg = (pattern(k) % 41).astype(np.uint8)  # 0 (unlabeled) .. 40
        depth = (1 + pattern(k) / 100).astype(np.float32)
        edge = (pattern(k) % 5 == 0).astype(np.float32)
        Image.fromarray(rgb_image(k)).save(root / "images" / f"{id_}.jpg", quality=95)
        Image.fromarray(seg).save(root / "segmentation" / f"{id_}.png")
        np.save(root / "depth" / f"{id_}.npy", depth)
        np.save(root / "normals" / f"{id_}.npy", normals_field(k))
        np.save(root / "edge" / f"{id_}.npy", edge)
        truth[id_] = {"image": rgb_image(k), "seg": seg, "depth": depth, "normals": normals_field(k),
                      "edge": edge}
    (root / "gt_sets" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "gt_sets" / "val.txt").write_text("\n".join(val) + "\n")
    return truth


def test_nyud_mt_round_trip(tmp_path):
    truth = make_nyud_mt(tmp_path)
    ds = NYUDMT("train", root=tmp_path)
    assert len(ds) == 3 and len(NYUDMT("val", root=tmp_path)) == 1
    assert ds.classes == NYU40_CLASSES and ds.tasks == ("semseg", "depth", "normals", "edge")
    item = ds[1]
    t = truth["0002"]
    expected_seg = np.where(t["seg"] == 0, 255, t["seg"].astype(np.int64) - 1)
    assert torch.equal(item["semseg"], torch.from_numpy(expected_seg))
    assert torch.equal(item["depth"][0], torch.from_numpy(t["depth"]))
    assert torch.allclose(item["normals"], torch.from_numpy(t["normals"]).permute(2, 0, 1), atol=1e-6)
    assert torch.equal(item["edge"][0], torch.from_numpy(t["edge"]))
    # JPEG is lossy, but the blocky pattern survives closely: channel order and orientation are right
    image = item["image"].permute(1, 2, 0).numpy() * 255
    assert np.abs(image - t["image"]).mean() < 4
    # annotations NYUD-MT lacks carry the missing markers
    assert (item["sal"] == 255).all() and item["scene"].item() == -1 and item["boxes"].shape == (0, 4)
    assert torch.allclose(item["intrinsics"], torch.from_numpy(nyu_intrinsics((H, W))))


def test_items_match_synthetic_keys_and_dtypes(tmp_path):
    make_nyud_mt(tmp_path / "nyud")
    synthetic = SyntheticScenes("train", num_samples=1, size=(64, 64), root=tmp_path / "syn", workers=1,
                                progress=False)[0]
    real = NYUDMT("train", root=tmp_path / "nyud")[0]
    assert list(real) == list(synthetic)
    for key, value in synthetic.items():
        if isinstance(value, torch.Tensor):
            assert real[key].dtype == value.dtype, key
            assert real[key].dim() == value.dim(), key
        else:
            assert type(real[key]) is type(value), key


def test_nyud_mt_errors(tmp_path):
    make_nyud_mt(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"gt_sets.*train\.txt not found"):
        NYUDMT("train", root=tmp_path / "images")
    (tmp_path / "depth" / "0003.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"depth.*0003\.npy"):
        NYUDMT("train", root=tmp_path)
    np.save(tmp_path / "depth" / "0003.npy", np.zeros((W, H), np.float32))  # transposed
    with pytest.raises(ValueError, match=r"0003\.npy.*\(96, 64\).*expected \(64, 96\)"):
        NYUDMT("train", root=tmp_path)[2]
    (tmp_path / "normals" / "0003.npy").write_bytes(b"not a numpy file")
    np.save(tmp_path / "depth" / "0003.npy", np.ones((H, W), np.float32))
    with pytest.raises(ValueError, match=r"normals.*0003\.npy.*not a readable \.npy"):
        NYUDMT("train", root=tmp_path)[2]
    (tmp_path / "segmentation" / "0001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"0001\.png.*not a readable image"):
        NYUDMT("train", root=tmp_path)[0]
    with pytest.raises(FileNotFoundError, match="dataset folder"):
        NYUDMT("train", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="split='bogus'"):
        NYUDMT("bogus", root=tmp_path)


def test_resize_keeps_targets_consistent(tmp_path):
    truth = make_nyud_mt(tmp_path)
    item = NYUDMT("train", root=tmp_path, size=(32, 64))[0]
    assert item["image"].shape == (3, 32, 64) and item["semseg"].shape == (32, 64)
    assert item["semseg"].dtype == torch.int64 and item["depth"].shape == (1, 32, 64)
    # nearest neighbour: every value is one of the original values, never a blend
    seg = truth["0001"]["seg"].astype(np.int64)
    assert set(item["semseg"].unique().tolist()) <= set(np.where(seg == 0, 255, seg - 1).ravel().tolist())
    assert set(np.unique(item["depth"].numpy())) <= set(np.unique(truth["0001"]["depth"]))
    norm = item["normals"].norm(dim=0)
    assert torch.allclose(norm[norm > 0], torch.ones_like(norm[norm > 0]), atol=1e-5)
    assert torch.allclose(item["intrinsics"], torch.from_numpy(nyu_intrinsics((32, 64))), atol=1e-4)
    with pytest.raises(ValueError, match="multiples of 32"):
        NYUDMT("train", root=tmp_path, size=(50, 64))


# ------------------------------------------------------------------------------------------ NYUv2 .mat

NAMES = ["wall", "floor", *reversed(NYU_DETECTION_CLASSES), "picture", ""]  # det classes NOT in order
SCENES = ["kitchen", "bedroom", "bathroom", "no_such_room", "office"]
PLANE = unit([0.3, -0.4, -1.0]), -2.0  # n . X = d, facing the camera


def raw_label(name):
    return NAMES.index(name) + 1  # labels index the 1-based MATLAB cell array `names`


def plane_depth(size=(H, W)):
    """z-depth of the plane PLANE seen through the NYU camera at `size` (pixel centres at +0.5)."""
    fx, fy, cx, cy = nyu_intrinsics(size)
    v, u = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5, indexing="ij")
    n, d = PLANE
    return (d / (n[0] * (u - cx) / fx + n[1] * (v - cy) / fy + n[2])).astype(np.float32)


def objects_of(k):
    """Objects drawn into image k: (class name, instance id, [(r0, r1, c0, c1) rectangles])."""
    objects = [("chair", 1, [(5, 15, 10, 30)]), ("chair", 2, [(30, 50, 60, 70)]),
               ("bed", 1, [(20, 40, 35, 45), (35, 40, 45, 55)]),  # an L shape
               ("picture", 1, [(2, 8, 80, 90)]),  # not a detection class: no box
               ("table", 0, [(55, 60, 0, 20)])]  # instance 0: labelled but no object id -> no box
    if k % 2:
        objects += [("table", 1, [(50, 60, 75, 95)]), ("night stand", 1, [(40, 45, 0, 4)])]
    return objects


def expected_boxes(k):
    boxes = set()
    for name, inst, rects in objects_of(k):
        if name in NYU_DETECTION_CLASSES and inst > 0:
            r0, r1 = min(r[0] for r in rects), max(r[1] for r in rects)
            c0, c1 = min(r[2] for r in rects), max(r[3] for r in rects)
            boxes.add((NYU_DETECTION_CLASSES.index(name), (c0, r0, c1, r1)))
    return boxes


def write_matlab_v73(path, arrays, cells):
    """Write arrays the way MATLAB -v7.3 does: column-major, so h5py sees the axes reversed; cell
    arrays of strings as (1, N) datasets of object references to uint16 character columns."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=np.ascontiguousarray(value.transpose(*reversed(range(value.ndim)))))
        refs = f.create_group("#refs#")
        for key, strings in cells.items():
            out = []
            for i, text in enumerate(strings):
                if text:
                    codes = np.array([[ord(c)] for c in text], np.uint16)  # a char row, reversed
                    chars = refs.create_dataset(f"{key}_{i}", data=codes)
                else:  # MATLAB's empty string: its dimensions, flagged MATLAB_empty
                    chars = refs.create_dataset(f"{key}_{i}", data=np.zeros(2, np.uint64))
                    chars.attrs["MATLAB_empty"] = np.uint8(1)
                chars.attrs["MATLAB_class"] = np.bytes_("char")
                out.append(chars.ref)
            f.create_dataset(key, data=np.array(out, dtype=h5py.ref_dtype).reshape(1, -1))


def make_nyuv2_mat(root, n=5, train=(1, 3, 4), test=(2, 5)):
    """A tiny nyu_depth_v2_labeled.mat + splits.mat; returns the arrays in image orientation."""
    root.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.stack([pattern(k), pattern(k + 1), 255 - pattern(k)], axis=-1)
                       for k in range(n)]).astype(np.uint8)
    depths = np.stack([plane_depth() if k == 0 else (1 + pattern(k) / 50) for k in range(n)])
    depths = depths.astype(np.float32)
    labels = np.zeros((n, H, W), np.uint16)
    instances = np.zeros((n, H, W), np.uint8)
    for k in range(n):
        labels[k, : H // 2] = raw_label("wall")
        labels[k, H // 2:] = raw_label("floor")
        for name, inst, rects in objects_of(k):
            for r0, r1, c0, c1 in rects:
                labels[k, r0:r1, c0:c1] = raw_label(name)
                instances[k, r0:r1, c0:c1] = inst
    # MATLAB arrays are H x W x 3 x N (images) and H x W x N: reversed by h5py to N x 3 x W x H, N x W x H
    write_matlab_v73(root / "nyu_depth_v2_labeled.mat",
                     {"images": images.transpose(1, 2, 3, 0), "depths": depths.transpose(1, 2, 0),
                      "labels": labels.transpose(1, 2, 0), "instances": instances.transpose(1, 2, 0)},
                     {"names": NAMES, "sceneTypes": SCENES[:n]})
    scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array(train, float)[:, None],
                                           "testNdxs": np.array(test, float)[:, None]})
    return {"images": images, "depths": depths, "labels": labels}


def test_nyuv2_mat_layout_and_splits(tmp_path):
    truth = make_nyuv2_mat(tmp_path)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat") as f:  # the fixture really is MATLAB's layout
        assert f["images"].shape == (5, 3, W, H) and f["depths"].shape == (5, W, H)
    ds = NYUv2Mat("train", root=tmp_path)
    assert len(ds) == 3 and ds.ids == [1, 3, 4]
    assert NYUv2Mat("test", root=tmp_path).ids == [2, 5] == NYUv2Mat("val", root=tmp_path).ids
    item = ds[1]  # splits.mat's image 3 = array index 2
    assert torch.equal(item["image"], torch.from_numpy(truth["images"][2]).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["depth"][0], torch.from_numpy(truth["depths"][2]))
    assert item["scene"].item() == NYU_SCENE_CLASSES.index(SCENES[2])
    assert ds[2]["scene"].item() == -1  # "no_such_room" is not one of the 27 scene types
    assert ds.tasks == ("depth", "normals", "scene", "detection") == dataset_tasks("nyuv2_mat")
    assert (item["semseg"] == 255).all() and (item["edge"] == 255).all()  # no mapping: no semseg
    # DataLoader workers get a pickled copy: the open HDF5 handle must not travel with it
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1]["image"], item["image"])


def test_nyuv2_mat_boxes_from_instance_masks(tmp_path):
    make_nyuv2_mat(tmp_path)
    ds = NYUv2Mat("train", root=tmp_path)
    for index, k in ((0, 0), (1, 2), (2, 3)):
        item = ds[index]
        got = {(int(label), tuple(int(v) for v in box)) for label, box in zip(item["labels"], item["boxes"],
                                                                              strict=True)}
        assert got == expected_boxes(k)
        assert len(got) == len(item["boxes"])  # no duplicates
        # the instance map numbers the boxed objects 1..K in box order
        for j, box in enumerate(item["boxes"].long().tolist(), start=1):
            ys, xs = torch.nonzero(item["instance"] == j, as_tuple=True)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
    assert sum(label == NYU_DETECTION_CLASSES.index("chair") for label in ds[0]["labels"]) == 2
    resized = NYUv2Mat("train", root=tmp_path, size=(32, 64))[0]
    scale = torch.tensor([64 / W, 32 / H] * 2)
    assert torch.allclose(resized["boxes"], ds[0]["boxes"] * scale)


def test_nyuv2_mat_normals_from_depth_match_the_plane(tmp_path):
    make_nyuv2_mat(tmp_path)
    normals = NYUv2Mat("train", root=tmp_path)[0]["normals"].permute(1, 2, 0).numpy()
    valid = np.abs(normals).sum(-1) > 0
    assert valid.mean() > 0.8  # all but the borders
    angle = np.degrees(np.arccos(np.clip(normals[valid] @ PLANE[0], -1, 1)))
    assert angle.max() < 0.5
    assert (normals[~valid] == 0).all()


def test_nyuv2_mat_user_normals_and_class_mappings(tmp_path):
    truth = make_nyuv2_mat(tmp_path)
    stack = np.stack([normals_field(k) for k in range(5)])
    np.save(tmp_path / "normals.npy", stack)
    # 894 -> 40 stage (here: len(NAMES) -> 3 classes) as classMapping40.mat, then 40 -> 13 (here 3 -> 2)
    map40 = np.arange(len(NAMES)) % 4  # 0 = unlabeled
    scipy.io.savemat(tmp_path / "classMapping40.mat",
                     {"mapClass": map40[None].astype(float),
                      "className": np.array(["a", "b", "c"], dtype=object)[None]})
    scipy.io.savemat(tmp_path / "class13Mapping.mat",
                     {"classMapping13": {"labelIdx": np.array([[2, 1, 2]], float),
                                         "labelName": np.array(["x", "y"], dtype=object)[None]}})
    ds = NYUv2Mat("test", root=tmp_path, class_mapping="classMapping40.mat")
    item = ds[0]  # image 2 = index 1
    lut = np.concatenate([[255], np.where(map40 == 0, 255, map40 - 1)])
    assert torch.equal(item["semseg"], torch.from_numpy(lut[truth["labels"][1]]))
    assert ds.classes == ("a", "b", "c") and ds.tasks[0] == "semseg"
    assert dataset_tasks("nyuv2_mat", class_mapping="classMapping40.mat")[0] == "semseg"
    assert torch.allclose(item["normals"], torch.from_numpy(stack[1]).permute(2, 0, 1), atol=1e-6)

    ds13 = NYUv2Mat("test", root=tmp_path, class_mapping=["classMapping40.mat", "class13Mapping.mat"])
    lut13 = np.array([255, 1, 0, 1])[np.concatenate([[0], map40])]
    assert torch.equal(ds13[0]["semseg"], torch.from_numpy(lut13[truth["labels"][1]]))
    assert ds13.classes == ("x", "y")
    with pytest.raises(ValueError, match=rf"class13Mapping\.mat: maps 3 classes.*have {len(NAMES)}"):
        NYUv2Mat("test", root=tmp_path, class_mapping="class13Mapping.mat")
    np.save(tmp_path / "normals.npy", stack[:, :, :, :2])
    with pytest.raises(ValueError, match=r"normals\.npy.*\(5, 64, 96, 3\)"):
        NYUv2Mat("test", root=tmp_path)


def test_nyuv2_mat_errors(tmp_path):
    make_nyuv2_mat(tmp_path)
    with pytest.raises(FileNotFoundError, match="splits.mat"):
        NYUv2Mat("train", root=tmp_path, splits_file="nope.mat")
    scipy.io.savemat(tmp_path / "bad_splits.mat", {"trainNdxs": np.array([[0], [1]]), "testNdxs": [[1]]})
    with pytest.raises(ValueError, match=r"bad_splits\.mat.*1-based"):
        NYUv2Mat("train", root=tmp_path, splits_file="bad_splits.mat")
    (tmp_path / "garbage.mat").write_bytes(b"MATLAB 5.0 MAT-file, not really")
    with pytest.raises(ValueError, match=r"garbage\.mat.*not a MATLAB v7\.3"):
        NYUv2Mat("train", root=tmp_path, mat_file="garbage.mat")
    with pytest.raises(ValueError, match=r"garbage\.mat: cannot read as a MATLAB file.*splits\.mat"):
        NYUv2Mat("train", root=tmp_path, splits_file="garbage.mat")
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "a") as f:
        del f["depths"]
        f.create_dataset("depths", data=np.zeros((5, H, W), np.float32))  # not transposed
    with pytest.raises(ValueError, match=r"depths has shape \(5, 64, 96\), expected \(5, 96, 64\)"):
        NYUv2Mat("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.mat not found; expected .*nyu_depth_v2_labeled"):
        NYUv2Mat("train", root=tmp_path, mat_file="missing.mat")


# ------------------------------------------------------------------------------------------ MTAN layout


def make_mtan(root, counts=(("train", 3), ("val", 1))):
    truth = {}
    for split, count in counts:
        for folder in ("image", "label", "depth", "normal"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            k = 10 * (split == "val") + i
            arrays = {"image": (np.stack([pattern(k), pattern(k + 1), pattern(k + 2)], -1) / 255.0),
                      "label": (pattern(k) % 14 - 1).astype(np.float64),  # -1 .. 12
                      "depth": (1 + pattern(k) / 80)[..., None], "normal": normals_field(k)}
            for folder, array in arrays.items():
                np.save(root / split / folder / f"{i}.npy", array.astype(np.float32))
            truth[split, i] = arrays
    return truth


def test_nyuv2_mtan_round_trip(tmp_path):
    truth = make_mtan(tmp_path)
    ds = NYUv2MTAN("train", root=tmp_path)
    assert len(ds) == 3 and len(NYUv2MTAN("test", root=tmp_path)) == 1 and len(ds.classes) == 13
    item, t = ds[2], truth["train", 2]
    assert torch.allclose(item["image"], torch.from_numpy(t["image"]).permute(2, 0, 1).float())
    label = t["label"].astype(np.int64)
    assert torch.equal(item["semseg"], torch.from_numpy(np.where(label < 0, 255, label)))
    assert torch.allclose(item["depth"], torch.from_numpy(t["depth"]).permute(2, 0, 1).float())
    assert torch.allclose(item["normals"], torch.from_numpy(t["normal"]).permute(2, 0, 1), atol=1e-6)
    assert (item["normals"][:, :4, :6] == 0).all()  # missing normals stay all-zero
    assert len(NYUv2MTAN("train", root=tmp_path, num_samples=2)) == 2


def test_nyuv2_mtan_errors(tmp_path):
    make_mtan(tmp_path)
    np.save(tmp_path / "train" / "image" / "1.npy", np.zeros((3, H, W), np.float32))  # channels first
    with pytest.raises(ValueError, match=r"image[/\\]1\.npy.*\(3, 64, 96\).*channels last"):
        NYUv2MTAN("train", root=tmp_path)[1]
    np.save(tmp_path / "train" / "image" / "1.npy", np.full((H, W, 3), 200.0, np.float32))  # 0..255
    with pytest.raises(ValueError, match=r"1\.npy.*expected floats in \[0, 1\]"):
        NYUv2MTAN("train", root=tmp_path)[1]
    np.save(tmp_path / "train" / "label" / "0.npy", np.full((H, W), 13.0, np.float32))
    with pytest.raises(ValueError, match=r"label[/\\]0\.npy.*\[13\]"):
        NYUv2MTAN("train", root=tmp_path)[0]
    (tmp_path / "train" / "depth" / "2.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"depth[/\\]2\.npy.*not a readable"):
        NYUv2MTAN("train", root=tmp_path)[2]
    (tmp_path / "train" / "normal" / "2.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"train/normal/<i>\.npy.*2\.npy"):
        NYUv2MTAN("train", root=tmp_path)


# ------------------------------------------------------------------------------------------ PASCAL-MT

CONTEXT_WALL, CONTEXT_SKY = 440, 360  # PASCAL-Context ids: wall also exists in NYUv2, sky does not


def struct_array(records, fields):
    """A MATLAB struct array (1 x N) for scipy.io.savemat."""
    array = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        for f in fields:
            array[0, i][f] = record[f]
    return array


def part(name, r0, r1, c0, c1):
    mask = np.zeros((H, W), np.uint8)
    mask[r0:r1, c0:c1] = 1
    return {"part_name": name, "mask": mask}


def person(parts, class_ind=15, name="person"):
    mask = np.zeros((H, W), np.uint8)
    for p in parts:
        mask |= p["mask"]
    return {"class": name, "class_ind": class_ind, "mask": mask,
            "parts": struct_array(parts, ("part_name", "mask")) if parts else np.zeros((0, 0))}


PEOPLE = {  # image -> PASCAL-Part objects (image 1 shows only a cat)
    0: [person([part("head", 0, 10, 0, 10), part("luarm", 10, 20, 0, 10), part("rfoot", 50, 60, 0, 10)]),
        person([], class_ind=8, name="cat")],
    1: [person([], class_ind=8, name="cat")],
    2: [person([part("torso", 5, 25, 40, 60)]), person([part("llleg", 30, 40, 70, 80)]), person([])],
}


def make_pascal(root, train=("2008_000001", "2008_000002", "2008_000003"), val=("2008_000004",)):
    for sub in ("JPEGImages", "ImageSets/Context", "semseg/pascal-context", "pascal-context/trainval",
                "human_parts", "sal_distill", "normals_distill"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    truth = {}
    for k, id_ in enumerate((*train, *val)):
        semseg = (pattern(k) % 21).astype(np.uint8)
        semseg[:2] = 255
        context = np.where(np.arange(W) < 48, CONTEXT_WALL, CONTEXT_SKY)[None].repeat(H, 0).astype(np.uint16)
        normals_rgb = np.stack([pattern(k), pattern(k + 5), 255 - pattern(k) // 2], -1).astype(np.uint8)
        sal = pattern(k + 3).astype(np.uint8)
        Image.fromarray(rgb_image(k)).save(root / "JPEGImages" / f"{id_}.jpg", quality=95)
        Image.fromarray(semseg).save(root / "semseg" / "pascal-context" / f"{id_}.png")
        scipy.io.savemat(root / "pascal-context" / "trainval" / f"{id_}.mat", {"LabelMap": context})
        objects = struct_array(PEOPLE.get(k, []), ("class", "class_ind", "mask", "parts")) if k in PEOPLE \
            else np.zeros((0, 0))
        scipy.io.savemat(root / "human_parts" / f"{id_}.mat", {"anno": {"imname": id_, "objects": objects}})
        Image.fromarray(sal).save(root / "sal_distill" / f"{id_}.png")
        Image.fromarray(normals_rgb).save(root / "normals_distill" / f"{id_}.png")
        truth[id_] = {"semseg": semseg, "normals_rgb": normals_rgb, "sal": sal}
    (root / "ImageSets" / "Context" / "train.txt").write_text("\n".join(train))
    (root / "ImageSets" / "Context" / "val.txt").write_text("\n".join(val))
    return truth


def test_pascal_mt_round_trip(tmp_path):
    truth = make_pascal(tmp_path)
    ds = PascalMT("train", root=tmp_path, size=None)  # the fixture is already 64x96
    assert len(ds) == 3 and ds.part_classes == PART_CLASSES and len(ds.classes) == 21
    item, t = ds[0], truth["2008_000001"]
    assert torch.equal(item["semseg"], torch.from_numpy(t["semseg"].astype(np.int64)))
    assert torch.equal(item["sal"][0], torch.from_numpy((t["sal"] > 127).astype(np.float32)))
    # edges: the boundary of the LabelMap (wall | sky between columns 47 and 48), one pixel thin
    assert torch.equal(torch.nonzero(item["edge"][0])[:, 1].unique(), torch.tensor([47]))
    assert item["edge"][0, :, 47].all()
    # distilled normals kept on wall (an NYUv2 class), dropped on sky
    n = unit(2 * t["normals_rgb"].astype(np.float64) / 255 - 1)
    assert torch.allclose(item["normals"][:, :, :48], torch.from_numpy(n[:, :48]).permute(2, 0, 1).float(),
                          atol=1e-5)
    assert (item["normals"][:, :, 48:] == 0).all()
    assert (item["depth"] == 0).all() and item["scene"].item() == -1 and (item["intrinsics"] == 0).all()


def test_pascal_mt_human_parts(tmp_path):
    make_pascal(tmp_path)
    ds = PascalMT("train", root=tmp_path, size=None)
    parts = ds[0]["human_parts"]
    expected = torch.zeros(H, W, dtype=torch.int64)
    expected[0:10, 0:10] = PART_CLASSES.index("head")
    expected[10:20, 0:10] = PART_CLASSES.index("upper arm")
    expected[50:60, 0:10] = PART_CLASSES.index("lower leg")
    assert torch.equal(parts, expected)
    assert (ds[1]["human_parts"] == 255).all()  # no person: no parts label at all
    two = ds[2]["human_parts"]
    assert (two[5:25, 40:60] == PART_OF["torso"]).all() and (two[30:40, 70:80] == PART_OF["llleg"]).all()
    assert (two == 0).sum() == H * W - 20 * 20 - 10 * 10
    assert (PascalMT("val", root=tmp_path, size=None)[0]["human_parts"] == 255).all()  # no objects


def test_pascal_mt_errors(tmp_path):
    make_pascal(tmp_path)
    with pytest.raises(ValueError, match="multiples of 32"):
        PascalMT("train", root=tmp_path, size=(60, 90))
    (tmp_path / "human_parts" / "2008_000002.mat").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"human_parts[/\\]2008_000002\.mat: cannot read as a MATLAB"):
        PascalMT("train", root=tmp_path)[1]
    scipy.io.savemat(tmp_path / "human_parts" / "2008_000002.mat", {"other": 1})
    with pytest.raises(ValueError, match=r"2008_000002\.mat: no struct anno\.objects"):
        PascalMT("train", root=tmp_path)[1]
    out_of_range = np.full((H, W), 30, np.uint8)
    Image.fromarray(out_of_range).save(tmp_path / "semseg" / "pascal-context" / "2008_000003.png")
    with pytest.raises(ValueError, match=r"2008_000003\.png.*\[30\]"):
        PascalMT("train", root=tmp_path)[2]
    (tmp_path / "sal_distill" / "2008_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"sal_distill.*2008_000001\.png"):
        PascalMT("train", root=tmp_path)


# ------------------------------------------------------------------------------------------ registry + model


def test_registry(tmp_path):
    assert set(DATASETS) == {"synthetic", "nyud_mt", "nyuv2_mat", "nyuv2_mtan", "pascal_mt"}
    make_mtan(tmp_path)
    ds = build_dataset("nyuv2_mtan", "val", tmp_path, size=(32, 64))
    assert isinstance(ds, NYUv2MTAN) and ds[0]["image"].shape == (3, 32, 64)
    assert dataset_tasks("pascal_mt") == ("semseg", "human_parts", "sal", "normals", "edge")
    with pytest.raises(ValueError, match=r"no option\(s\) \['domain'\]"):
        build_dataset("nyuv2_mtan", "val", tmp_path, domain="sensor")


SMALL = {"backbone": "cnn", "backbone_options": {"widths": (16, 32, 64, 128)}}


@pytest.mark.parametrize("name", ["pascal_mt", "nyuv2_mat"])
def test_model_runs_on_real_format_batches(tmp_path, name):
    if name == "pascal_mt":
        make_pascal(tmp_path)
        ds = build_dataset(name, "train", tmp_path, size=(64, 64))
    else:
        make_nyuv2_mat(tmp_path)
        scipy.io.savemat(tmp_path / "classMapping40.mat", {"mapClass": (np.arange(len(NAMES)) % 4)[None]})
        ds = build_dataset(name, "train", tmp_path, size=(64, 64), class_mapping="classMapping40.mat")
    names = [t for t in ds.tasks if t != "detection"]
    tasks = make_tasks(names, dataset=ds)
    if name == "pascal_mt":
        assert tasks["human_parts"].channels == 7 and tasks["human_parts"].classes == PART_CLASSES
    else:
        assert tasks["scene"].channels == len(NYU_SCENE_CLASSES) and tasks["semseg"].channels == 3
    batch = collate_batch([ds[0], ds[1]])
    model = build_model("mtl_baseline", tasks, **SMALL)
    outputs = model(batch["image"])
    losses = task_losses(outputs, batch, tasks)
    assert set(losses) == set(names)
    assert all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    for task, spec in tasks.items():
        meter = make_meter(spec)
        meter.update(outputs[task].detach(), batch)
        assert tuple(meter.compute()) == spec.metrics
