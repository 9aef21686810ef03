"""Figures for the notebooks: ground truth of every task, benchmark statistics, the two domains.

Every plotting function returns its matplotlib Figure and takes `save_to` (a PNG path, folders are
created), because the notebooks save each figure they show to their output folder. Inputs follow
the batch dict (data/README.md), unbatched: a dataset item (tensors, maps channel-first) or
numpy arrays (maps channel-first or channel-last, as `SyntheticScenes.raw` stores them).
Missing annotations are drawn, never hidden: depth 0 is black, an all-zero normal is grey, a
missing scene label reads "missing".
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.patches import Rectangle
from scipy import ndimage

from .data.geometry import normals_from_depth

IGNORE = 255
MISSING_GREY = 0.45
# floor, wall, ceiling in muted room colours, then strong qualitative colours for objects
ROOM_COLOURS = [(0.55, 0.42, 0.30), (0.72, 0.76, 0.82), (0.93, 0.91, 0.80)]
DENSE_TASKS = ("semseg", "depth", "normals", "edge", "sal")
OVERLAYS = ("none", "boxes", "semseg", "depth", "normals", "edge", "sal")


# ---------------------------------------------------------------- array helpers


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _hw(x) -> np.ndarray:
    """A single-channel map as (H, W): accepts (H, W), (1, H, W) or (H, W, 1)."""
    a = _np(x)
    return a.reshape(a.shape[-2:]) if a.ndim == 3 and a.shape[0] == 1 else a.reshape(a.shape[:2])


def _hwc(x) -> np.ndarray:
    """A 3-channel map as (H, W, 3): accepts channel-first (a dataset item) or channel-last (raw)."""
    a = _np(x)
    return a.transpose(1, 2, 0) if a.shape[0] == 3 and a.shape[-1] != 3 else a


def _image(x) -> np.ndarray:
    a = _hwc(x)
    return a / 255.0 if a.dtype == np.uint8 else np.clip(a, 0, 1)


def _aspect(sample: dict) -> float:
    """Height / width of a sample's image, to size figure rows without empty margins."""
    h, w = _image(sample["image"]).shape[:2]
    return h / w


def save_figure(fig, save_to) -> None:
    """Save `fig` to `save_to` (creating its folder); nothing when `save_to` is None."""
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")


def figure_png(fig) -> bytes:
    """`fig` as PNG bytes (what the explorers' image widgets show), closed afterwards."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def describe_sample(sample: dict) -> pd.DataFrame:
    """One row per key of a dataset item: shape, dtype and value range (the batch-dict at a glance)."""
    rows = {}
    for key, value in sample.items():
        a = _np(value)
        rows[key] = {"shape": tuple(a.shape), "dtype": str(getattr(value, "dtype", a.dtype)),
                     "min": a.min() if a.size else None, "max": a.max() if a.size else None}
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------- colours


def semseg_palette(num_classes: int) -> np.ndarray:
    """A fixed (num_classes, 3) palette: the three room classes, then tab10, tab20b, tab20c, ..."""
    colours = list(ROOM_COLOURS)
    for name in ("tab10", "tab20b", "tab20c", "Set3", "Dark2"):
        colours += [c[:3] for c in colormaps[name].colors]
    return np.array([colours[i % len(colours)] for i in range(num_classes)])


def colorize_semseg(semseg, num_classes: int) -> np.ndarray:
    """Class ids (H, W) -> RGB (H, W, 3) in [0, 1]; ignore (255, or any id >= num_classes) is black."""
    labels = _hw(semseg).astype(np.int64)
    lut = np.zeros((max(int(labels.max(initial=0)), num_classes) + 1, 3))
    lut[:num_classes] = semseg_palette(num_classes)
    return lut[np.where(labels < 0, num_classes, labels)]  # negative ids are ignore too


def colorize_normals(normals) -> np.ndarray:
    """Unit normals -> RGB (n + 1) / 2 (x right = red, y down = green, z forward = blue); missing is grey."""
    n = _hwc(normals).astype(np.float64)
    rgb = np.clip((n + 1) / 2, 0, 1)
    rgb[~np.any(n != 0, axis=-1)] = MISSING_GREY
    return rgb


def colorize_depth(depth, vmin: float | None = None, vmax: float | None = None, cmap: str = "turbo"):
    """Depth (H, W) in metres -> RGB (H, W, 3); near = blue, far = red, missing (0) = black.

    The colour map's darkest ends are cut off so that no valid depth looks like a hole.
    """
    d = _hw(depth).astype(np.float64)
    valid = d > 0
    lo = vmin if vmin is not None else (float(d[valid].min()) if valid.any() else 0.0)
    hi = vmax if vmax is not None else (float(d[valid].max()) if valid.any() else 1.0)
    t = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = colormaps[cmap](0.1 + 0.8 * t)[..., :3]
    rgb[~valid] = 0.0
    return rgb


def _colorize_binary(x) -> np.ndarray:
    """{0, 1} map -> black / white; 255 (ignore) -> grey."""
    a = _hw(x)
    rgb = np.repeat((a == 1)[..., None].astype(np.float64), 3, axis=-1)
    rgb[a == IGNORE] = MISSING_GREY
    return rgb


def _colorize(task: str, sample: dict, num_classes: int) -> np.ndarray:
    if task == "semseg":
        return colorize_semseg(sample["semseg"], num_classes)
    if task == "depth":
        return colorize_depth(sample["depth"])
    if task == "normals":
        return colorize_normals(sample["normals"])
    return _colorize_binary(sample[task])


def _is_missing(task: str, sample: dict) -> bool:
    """A whole modality marked missing (the batch dict, data/README.md): depth all 0, normals all 0,
    edge/sal all 255."""
    a = _np(sample[task])
    if task in ("depth", "normals"):
        return not np.any(a != 0)
    return task in ("edge", "sal") and bool(np.all(a == IGNORE))


def _mark_missing(ax, text: str = "missing") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="white", fontsize=9,
            fontweight="bold", bbox={"facecolor": "crimson", "alpha": 0.85, "boxstyle": "round"})


def _box_colour(name: str, classes) -> tuple:
    palette = semseg_palette(len(classes))
    return tuple(palette[list(classes).index(name)]) if name in classes else (1.0, 0.85, 0.0)


def draw_boxes(ax, boxes, labels, det_classes, classes=(), fontsize: float = 6) -> None:
    """Detection boxes (xyxy pixels) with class names; box colours match the semseg palette."""
    for (x0, y0, x1, y1), label in zip(_np(boxes).reshape(-1, 4), _np(labels).reshape(-1), strict=True):
        name = det_classes[int(label)]
        colour = _box_colour(name, classes)
        # pixel (i, j) spans [j, j+1): imshow centres it on j, so box edges sit at -0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.2, ec=colour))
        # the name goes inside the box: above it, boxes touching the top border would lose it
        ax.text(x0 - 0.5, y0 - 0.5, name, fontsize=fontsize, va="top", ha="left", color="black",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.5, "lw": 0}, clip_on=True)


# ---------------------------------------------------------------- one sample, a gallery


def scene_name(scene, scene_classes) -> str:
    s = int(_np(scene))
    return "missing" if s < 0 else scene_classes[s]


def show_sample(sample: dict, classes, det_classes, scene_classes, tasks=None, axes=None,
                overlay: str = "boxes", titles: bool = True, save_to=None):
    """One row: the image (with an overlay: boxes by default) and the ground truth of each dense task.

    `tasks`: which dense maps to show (default: all of semseg, depth, normals, edge, sal present).
    `overlay`: what to draw over the image: one of OVERLAYS. The scene label is in the image title.
    """
    tasks = [t for t in (DENSE_TASKS if tasks is None else tasks) if t in sample]
    if axes is None:
        size = (2.1 * (1 + len(tasks)), 2.1 * _aspect(sample) + 0.4)
        fig, axes = plt.subplots(1, 1 + len(tasks), figsize=size, squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    image = _image(sample["image"])
    ax = axes[0]
    if overlay in (None, "none", "boxes"):
        ax.imshow(image)
    else:
        ax.imshow(np.clip(0.4 * image + 0.6 * _colorize(overlay, sample, len(classes)), 0, 1))
    if overlay == "boxes" and "boxes" in sample:
        draw_boxes(ax, sample["boxes"], sample["labels"], det_classes, classes)
    scene = scene_name(sample["scene"], scene_classes) if "scene" in sample else "?"
    index = f"#{sample['index']} " if "index" in sample else ""
    missing = scene == "missing"
    ax.set_title(f"{index}{'scene missing' if missing else scene}", fontsize=9,
                 color="crimson" if missing else "black")
    for ax, task in zip(axes[1:], tasks, strict=False):
        ax.imshow(_colorize(task, sample, len(classes)), interpolation="nearest")
        if _is_missing(task, sample):
            _mark_missing(ax, f"{task}\nmissing")
        if titles:
            ax.set_title(task, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, save_to)
    return fig


def sample_gallery(dataset, indices, tasks=None, save_to=None):
    """Rows of `show_sample`: every task's ground truth for a few scenes."""
    indices = list(indices)
    shown = list(DENSE_TASKS if tasks is None else tasks)
    size = (2.0 * (1 + len(shown)), (2.0 * _aspect(dataset[indices[0]]) + 0.2) * len(indices))
    fig, axes = plt.subplots(len(indices), 1 + len(shown), figsize=size, squeeze=False)
    for row, i in enumerate(indices):
        show_sample(dataset[i], dataset.classes, dataset.det_classes, dataset.scene_classes, tasks=shown,
                    axes=axes[row], titles=row == 0)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def semseg_legend(classes, save_to=None):
    """The semantic palette as a strip of named swatches (the gallery's key)."""
    fig, ax = plt.subplots(figsize=(1.0 * len(classes), 0.5))
    ax.imshow(semseg_palette(len(classes))[None], aspect="auto")
    for k, name in enumerate(classes):
        bright = semseg_palette(len(classes))[k].mean() > 0.5
        ax.text(k, 0, name, ha="center", va="center", fontsize=8, color="black" if bright else "white")
    ax.set_axis_off()
    save_figure(fig, save_to)
    return fig


# ---------------------------------------------------------------- geometry check


def normals_agreement(sample: dict) -> float:
    """Median angle (degrees) between a sample's normals and the normals of its depth surface.

    n ∝ ∂P/∂u × ∂P/∂v with P = Z K⁻¹ [u, v, 1]ᵀ, by central differences (`normals_from_depth`),
    over pixels where both are defined.
    """
    fx, fy, cx, cy = (float(v) for v in _np(sample["intrinsics"]))
    estimate = normals_from_depth(_hw(sample["depth"]), (fx, fy, cx, cy))
    given = _hwc(sample["normals"])
    valid = np.any(estimate != 0, axis=-1) & np.any(given != 0, axis=-1)
    if not valid.any():
        return float("nan")
    cos = np.clip((estimate[valid] * given[valid]).sum(-1), -1.0, 1.0)
    return float(np.degrees(np.median(np.arccos(cos))))


# ---------------------------------------------------------------- benchmark statistics


DEPTH_BINS = np.arange(0.0, 15.01, 0.1)  # far beyond any room's diagonal: no pixel falls outside


def instance_table(dataset, max_samples: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Per visible object instance and per image statistics of a SyntheticScenes split.

    Returns (objects, pixels, depth_hist): `objects` has one row per instance visible in an image
    (image, scene, class, pixels, box_area, boxed = enough pixels to get a detection box);
    `pixels` one row per image (scene + the fraction of the image each semantic class covers);
    `depth_hist` counts of valid depth pixels in DEPTH_BINS. Reads the cached numpy arrays only.
    """
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    classes, scenes = list(dataset.classes), list(dataset.scene_classes)
    min_pixels = dataset.spec.min_box_pixels
    rows, fractions, scene_of = [], np.zeros((n, len(classes))), []
    depth_hist = np.zeros(len(DEPTH_BINS) - 1, dtype=np.int64)
    for i in range(n):
        raw = dataset.raw(i)
        sem, inst, depth = np.asarray(raw["semseg"]), np.asarray(raw["instance"]), np.asarray(raw["depth"])
        scene = "missing" if int(raw["scene"]) < 0 else scenes[int(raw["scene"])]
        scene_of.append(scene)
        counts = np.bincount(sem.ravel(), minlength=256)[: len(classes)]  # 255 (ignore) not counted
        fractions[i] = counts / sem.size
        depth_hist += np.histogram(depth[depth > 0], DEPTH_BINS)[0]
        pixels = np.bincount(inst.ravel())
        cls = np.zeros(len(pixels), dtype=np.int64)
        cls[inst.ravel()] = sem.ravel()  # all pixels of an instance carry its class
        for k, box in enumerate(ndimage.find_objects(inst), start=1):
            if box is None:
                continue
            area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
            rows.append((i, scene, classes[cls[k]], int(pixels[k]), area, bool(pixels[k] >= min_pixels)))
    objects = pd.DataFrame(rows, columns=["image", "scene", "class", "pixels", "box_area", "boxed"])
    objects["box_fraction"] = objects["box_area"] / sem.size
    pixels = pd.DataFrame(fractions, columns=classes)
    pixels.insert(0, "scene", scene_of)
    return objects, pixels, depth_hist


def benchmark_statistics(dataset, max_samples: int | None = None, save_to=None):
    """Class, scene, box-size and depth statistics of a split in one figure.

    Returns (figure, {"objects": ..., "pixels": ..., "presence": ..., "depth_hist": ...}); see
    `instance_table`. `presence` is P(at least one boxed object of a class | scene type): the
    heatmap that shows the room type informs detection.
    """
    objects, pixels, depth_hist = instance_table(dataset, max_samples)
    det_classes = [c for c in dataset.det_classes if c in dataset.classes]
    scene_order = [s for s in (*dataset.scene_classes, "missing") if s in set(pixels["scene"])]
    boxed = objects[objects["boxed"]]
    per_image = boxed.groupby(["image", "class"]).size().unstack(fill_value=0).reindex(
        index=range(len(pixels)), columns=det_classes, fill_value=0)
    presence = (per_image > 0).groupby(pixels["scene"]).mean().reindex(scene_order)

    fig = plt.figure(figsize=(17, 10))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.1, 1, 1], hspace=0.35, wspace=0.35)
    ax = fig.add_subplot(grid[0, 0])
    share = pixels[list(dataset.classes)].mean() * 100
    present = (pixels[list(dataset.classes)] > 0).mean() * 100
    sns.barplot(x=share.values, y=share.index, hue=share.index, palette=list(semseg_palette(len(share))),
                legend=False, ax=ax)
    ax.set_xscale("log")
    ax.set(xlabel="% of all pixels (log scale)", ylabel="", title="Pixel share per semantic class")
    for k, (s, p) in enumerate(zip(share.values, present.values, strict=True)):
        ax.text(max(s, 0.05) * 1.1, k, f"{s:.1f}%  (in {p:.0f}% of images)", va="center", fontsize=8)
    ax.set_xlim(0.05, share.max() * 12)  # log scale: a class absent from the split sits at the left edge

    ax = fig.add_subplot(grid[0, 1])
    scene_counts = pixels["scene"].value_counts().reindex(scene_order)
    sns.barplot(x=scene_counts.index, y=scene_counts.values, color="steelblue", ax=ax)
    ax.set(xlabel="", ylabel="images", title=f"Scene types ({len(pixels)} images)")
    ax.tick_params(axis="x", rotation=30)

    ax = fig.add_subplot(grid[0, 2])
    centres = (DEPTH_BINS[:-1] + DEPTH_BINS[1:]) / 2
    ax.fill_between(centres, depth_hist / max(depth_hist.sum(), 1) / 0.1, step="mid", alpha=0.6)
    far = DEPTH_BINS[np.flatnonzero(depth_hist).max() + 2] if depth_hist.any() else DEPTH_BINS[-1]
    ax.set(xlabel="depth (m)", ylabel="density", title="Depth of all valid pixels", xlim=(0, far))

    ax = fig.add_subplot(grid[1, :2])
    sns.heatmap(presence, annot=True, fmt=".2f", cmap="mako_r", vmin=0, vmax=1, cbar_kws={"shrink": 0.8},
                annot_kws={"fontsize": 8}, ax=ax)
    ax.set(xlabel="object class", ylabel="scene type",
           title="P(object class visible with a box | scene type): the room type informs detection")
    ax.tick_params(axis="x", rotation=30)

    ax = fig.add_subplot(grid[1, 2])
    with warnings.catch_warnings():  # seaborn 0.13 still passes matplotlib's deprecated `vert`
        warnings.filterwarnings("ignore", message="vert: bool", category=DeprecationWarning)
        sns.boxplot(data=boxed, x=boxed["box_fraction"] * 100, y="class", order=det_classes, hue="class",
                    palette={c: _box_colour(c, dataset.classes) for c in det_classes}, legend=False,
                    fliersize=1, ax=ax)
    ax.set_xscale("log")
    ax.set(xlabel="box area (% of image, log scale)", ylabel="",
           title=f"Box sizes ({len(boxed)} boxes)")
    save_figure(fig, save_to)
    return fig, {"objects": objects, "pixels": pixels, "presence": presence, "depth_hist": depth_hist}


# ---------------------------------------------------------------- the two domains


def domain_comparison(render_ds, sensor_ds, indices, save_to=None):
    """The same scenes rendered clean and seen by the Kinect-like sensor: image, depth, normals of each.

    Depth shares one colour scale per row; holes are black (depth) and grey (normals); an
    annotation dropped for the whole sample is marked in red.
    """
    indices = list(indices)
    row_height = 2.0 * _aspect(render_ds[indices[0]]) + 0.25
    fig, axes = plt.subplots(len(indices), 6, figsize=(13, row_height * len(indices)), squeeze=False)
    for row, i in zip(axes, indices, strict=True):
        r, s = render_ds[i], sensor_ds[i]
        valid = _hw(r["depth"])[_hw(r["depth"]) > 0]
        vmin, vmax = (float(valid.min()), float(valid.max())) if valid.size else (None, None)
        for offset, sample, name in ((0, r, "render"), (3, s, "sensor")):
            scene = scene_name(sample["scene"], sensor_ds.scene_classes)
            row[offset].imshow(_image(sample["image"]))
            missing = scene == "missing"
            row[offset].set_title(f"#{i} {name}: {'scene missing' if missing else scene}", fontsize=9,
                                  color="crimson" if missing else "black")
            row[offset + 1].imshow(colorize_depth(sample["depth"], vmin, vmax), interpolation="nearest")
            row[offset + 2].imshow(colorize_normals(sample["normals"]), interpolation="nearest")
            for k, task in ((1, "depth"), (2, "normals")):
                if _is_missing(task, sample):
                    _mark_missing(row[offset + k], f"{task}\nmissing")
                row[offset + k].set_title(f"{name} {task}", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Same rooms, two domains (black depth / grey normals = no measurement)", y=1.0)
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig


def annotation_coverage(datasets: dict, max_samples: int | None = None) -> pd.DataFrame:
    """Per domain: the fraction of samples missing each auxiliary annotation, and of pixels without
    depth / normals among the samples that do have them (holes, as opposed to dropped annotations)."""
    rows = {}
    for name, ds in datasets.items():
        n = len(ds) if max_samples is None else min(max_samples, len(ds))
        no_depth = no_normals = no_scene = 0
        depth_holes, normal_holes = [], []
        for i in range(n):
            raw = ds.raw(i)
            depth = np.asarray(raw["depth"])
            has_normal = np.any(np.asarray(raw["normals"]) != 0, axis=-1)
            no_scene += int(raw["scene"]) < 0
            if depth.any():
                depth_holes.append(np.mean(depth == 0))
            else:
                no_depth += 1
            if has_normal.any():
                normal_holes.append(1 - has_normal.mean())
            else:
                no_normals += 1
        rows[name] = {"samples without depth": no_depth / n, "samples without normals": no_normals / n,
                      "samples without scene": no_scene / n,
                      "depth pixels missing": float(np.mean(depth_holes)) if depth_holes else float("nan"),
                      "normal pixels missing": float(np.mean(normal_holes)) if normal_holes else float("nan")}
    return pd.DataFrame(rows).T


def fully_annotated(dataset, max_samples: int | None = None) -> float:
    """The share of samples that keep every auxiliary annotation (depth, normals and scene): what a
    loss needing all three at once could train on. Each is dropped independently (`missing_fraction`),
    so the share falls as the product of the three survival rates, faster than any one of them."""
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    kept = 0
    for i in range(n):
        raw = dataset.raw(i)
        kept += bool(np.asarray(raw["depth"]).any() and np.asarray(raw["normals"]).any()
                     and int(raw["scene"]) >= 0)
    return kept / n


def same_holes(first, second, max_samples: int | None = None) -> tuple[int, int]:
    """(samples that keep their depth in both splits, those among them whose hole masks are identical):
    two sensor-domain versions of the same scenes (e.g. two `missing_fraction`s) that drill the same
    holes differ only in which whole annotations they drop."""
    n = min(len(first), len(second)) if max_samples is None else min(max_samples, len(first), len(second))
    compared = identical = 0
    for i in range(n):
        a, b = np.asarray(first.raw(i)["depth"]), np.asarray(second.raw(i)["depth"])
        if a.any() and b.any():
            compared += 1
            identical += bool(np.array_equal(a == 0, b == 0))
    return compared, identical


def furniture_table(stats: dict, dataset) -> pd.DataFrame:
    """Per detection class, from `benchmark_statistics`'s tables: boxes per image, the mean box area and
    pixels of a boxed object (in pixels), its fill (object pixels / box area, %: thin objects fill
    little of their box) and the class's share of all pixels of the split (%). Sorted by box area."""
    objects, pixels = stats["objects"], stats["pixels"]
    boxed = objects[objects["boxed"]]
    classes = [c for c in dataset.det_classes if c in pixels]
    grouped = boxed.groupby("class")
    table = pd.DataFrame({
        "boxes per image": grouped.size().reindex(classes, fill_value=0) / max(len(pixels), 1),
        "box area (px)": grouped["box_area"].mean().reindex(classes),
        "object pixels": grouped["pixels"].mean().reindex(classes),
        "fill (%)": (boxed["pixels"] / boxed["box_area"] * 100).groupby(boxed["class"]).mean()
        .reindex(classes),
        "pixel share (%)": pixels[classes].mean() * 100,
    })
    return table.sort_values("box area (px)")


def _binned(ax, x, y, width: float, stat: str, **style) -> None:
    """Plot stat(y) per bin of x (bins of `width`), skipping bins with too few pixels to trust."""
    table = y.groupby((x // width) * width + width / 2).agg([stat, "size"])
    table = table[table["size"] >= 200]
    ax.plot(table.index, table[stat], marker="o", ms=3, **style)
    ax.grid(alpha=0.3)


def sensor_statistics(render_ds, sensor_ds, max_samples: int | None = 500, save_to=None):
    """Where the sensor loses depth and how noisy it is, against the exact render of the same room.

    Over all pixels of samples that kept their depth annotation: the share of holes vs true depth
    (range limit), vs the angle between surface normal and viewing ray for pixels nearer than 3.5 m
    (grazing angles, without the range limit mixed in), and the noise |sensor - true| vs true depth.
    Returns (figure, per-pixel DataFrame: true_depth, sensor_depth, incidence, hole, error_mm).
    """
    n = min(len(render_ds), len(sensor_ds), max_samples or len(sensor_ds))
    columns = {"true_depth": [], "sensor_depth": [], "incidence": []}
    for i in range(n):
        r, s = render_ds.raw(i), sensor_ds.raw(i)
        if not np.any(s["depth"]):  # the whole annotation was dropped: not a hole pattern
            continue
        fx, fy, cx, cy = np.asarray(r["intrinsics"], dtype=np.float64)
        h, w = r["depth"].shape
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
        cos = -(np.asarray(r["normals"]) * rays).sum(-1) / np.linalg.norm(rays, axis=-1)
        columns["true_depth"].append(np.ravel(r["depth"]))
        columns["sensor_depth"].append(np.ravel(s["depth"]))
        columns["incidence"].append(np.degrees(np.arccos(np.clip(cos, -1, 1))).ravel())
    df = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
    df["hole"] = (df["sensor_depth"] == 0).astype(float) * 100
    df["error_mm"] = (df["sensor_depth"] - df["true_depth"]).abs() * 1000

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    _binned(axes[0], df["true_depth"], df["hole"], 0.25, "mean")
    axes[0].set(xlabel="true depth (m)", ylabel="% pixels without depth",
                title="Holes vs depth (range limit)")
    near = df[df["true_depth"] < 3.5]
    _binned(axes[1], near["incidence"], near["hole"], 5, "mean", color="darkorange")
    axes[1].set(xlabel="angle between normal and viewing ray (°)", ylabel="% pixels without depth",
                title="Holes vs incidence angle (depth < 3.5 m)")
    kept = df[df["hole"] == 0]
    _binned(axes[2], kept["true_depth"], kept["error_mm"], 0.25, "median", color="seagreen")
    axes[2].set(xlabel="true depth (m)", ylabel="median |sensor - true| (mm)", title="Depth noise grows ∝ z²")
    fig.tight_layout()
    save_figure(fig, save_to)
    return fig, df
