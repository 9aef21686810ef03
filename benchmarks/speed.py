"""Training speed of the study models on this machine, measured against the machine's own 3x3-convolution
peak, and of the data pipeline. Prints tables; asserts nothing.

    .venv/bin/python benchmarks/speed.py [--threads N] [--steps 10] [--rounds 5] [--models mtinet rock ...]
                                         [--bf16] [--csv speed.csv]
    .venv/bin/python benchmarks/speed.py --official-shape [--official-repo /tmp/official_mtinet]

Conv peak table: GFLOP/s of one 3x3 convolution (C -> C channels, batch 16, channels_last, forward +
backward) at the study models' widths and map sizes (8 ... 64 channels, 32x32 ... 4x4), and at one large
shape that shows the machine's best; fp32, and bf16 where the CPU has it natively
(train.cpu_has_native_bf16).

Per-model table: every model the notebooks train, configured by `experiments.base_config("full", ...)`
as they configure it, trained on one augmented batch of its training set:
  params (M)    parameters, millions
  GFLOP/step    FLOPs of one training step, counted by torch.utils.flop_counter.FlopCounterMode
                (convolutions and matrix products, 2 per multiply-add; element-wise ops count 0)
  img/s         images per second through train.train_step (forward, task losses, weighted backward,
                gradient clipping, optimizer step); median over rounds, warm-up steps excluded
  GFLOP/s       GFLOP/step x steps per second
  % typ. peak   GFLOP/s as a share of the best conv GFLOP/s among the typical shapes (same precision)
  % best        GFLOP/s as a share of the best conv GFLOP/s of any shape measured (same precision)
The `data pipeline` row: DataLoader + collate + BatchAugment as train.fit runs them, images/s, no model.
The training set is read from the synthetic cache (data/, or $MTL_CORE_DATA), generated there if missing.

--official-shape: MTI-Net in the official setting (HRNet-W18-small-v2 layout, widths 18/36/72/144,
NYUD semseg with 40 classes + depth, 96x128 input, batch 8, Adam, fp32): our step time, and with
--official-repo PATH (a checkout of SimonVandenhende/Multi-Task-Learning-PyTorch) the official MTI-Net's
step time, timed in alternating rounds in this process, and the ratio of the two. Each side trains as its
own code does: ours channels_last with fused Adam (train.fit), the official NCHW with torch.optim.Adam.
The official code imports termcolor, which this venv lacks: install it outside the project
(pip install --target /tmp/official_deps termcolor) and run with PYTHONPATH=/tmp/official_deps.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from mtl_core import experiments
from mtl_core.data import DATASETS, collate_batch
from mtl_core.data.transforms import BatchAugment
from mtl_core.models import build_model
from mtl_core.models.baselines import head_width_for
from mtl_core.tasks import make_tasks
from mtl_core.train import (
    TrainConfig,
    cpu_has_native_bf16,
    describe_precision,
    make_dataset,
    make_optimizer,
    to_device,
    train_step,
)
from mtl_core.weighting import build_weighting

CPU = torch.device("cpu")
PROFILE = "full"  # the settings the studies report
DENSE_TASKS = ("semseg", "depth", "normals", "edge")  # notebook 03
ROCK_TASKS = ("detection", "scene", "depth", "normals")  # notebook 04: detection first, then the auxiliaries
MODELS = (*(f"single_task/{t}" for t in DENSE_TASKS), "mtl_baseline", "capacity_control", "mtinet", "padnet",
          "ssd", "flat_mtl", "rock")
WARMUP_STEPS = 3  # oneDNN chooses its kernels and the allocator fills up in the first steps

# the conv benchmark: the maps of the dense studies' hrnet (widths 8 ... 64, maps 32x32 ... 4x4 at 64x64),
# and one shape wide enough for oneDNN's best kernels
CONV_BATCH = 16
TYPICAL_WIDTHS = (8, 16, 32, 64)
TYPICAL_MAPS = (32, 16, 8, 4)
LARGE_SHAPE = (128, 32)  # channels, map size
CONV_SECONDS = 0.2  # a round repeats the convolution this long: the small shapes take microseconds

# the official MTI-Net setting (configs/nyud/hrnet18/mti_net.yml there): our hrnet in HRNet-W18-small-v2's
# layout (models/hrnet.py), task features as wide as the backbone, as the official code has them
HRNET_W18_SMALL_V2 = {"widths": [18, 36, 72, 144], "stem_width": 64, "stem_stride": 4, "stem_blocks": 2,
                      "num_modules": [1, 3, 2], "blocks": 2}
NYUD_TASKS = ("semseg", "depth")


# ------------------------------------------------------------------------------------------- timing


def seconds_per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved_medians(fns: dict, calls: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of every function. The rounds alternate between the functions, so that a
    change of the machine's load during the run slows all of them alike."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds_per_call(fn, calls))
    return {name: statistics.median(t) for name, t in times.items()}


def counted_flops(fn) -> int:
    """FLOPs of one call of `fn` (which runs it once)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------ conv peak


def conv_gflops(channels: int, size: int, dtype: torch.dtype, rounds: int) -> float:
    """GFLOP/s of a 3x3 convolution's forward + backward (input and weight gradients, as inside a
    network), median over rounds of CONV_SECONDS each."""
    layout = torch.channels_last
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dtype=dtype, memory_format=layout)
    x = torch.randn(CONV_BATCH, channels, size, size, dtype=dtype).contiguous(memory_format=layout)
    x.requires_grad_()
    grad = torch.randn_like(x)  # the output's gradient: same shape and layout

    def step():
        x.grad = conv.weight.grad = None  # assigned, not accumulated, as after zero_grad(set_to_none=True)
        conv(x).backward(grad)

    flops = counted_flops(step)  # also the warm-up
    per_call = []
    for _ in range(rounds):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < CONV_SECONDS:
            step()
            calls += 1
        per_call.append((time.perf_counter() - start) / calls)
    return flops / statistics.median(per_call) / 1e9


def conv_peak(dtype: torch.dtype, rounds: int) -> tuple[pd.DataFrame, float, float]:
    """(GFLOP/s table: channels x map size, the large shape last; best typical GFLOP/s; best of all)."""
    table = pd.DataFrame({f"{m}x{m}": [conv_gflops(c, m, dtype, rounds) for c in TYPICAL_WIDTHS]
                          for m in TYPICAL_MAPS}, index=pd.Index(TYPICAL_WIDTHS, name="channels"))
    channels, size = LARGE_SHAPE
    large = conv_gflops(channels, size, dtype, rounds)
    table.loc[f"{channels} (large, {size}x{size})"] = [large if m == size else np.nan for m in TYPICAL_MAPS]
    typical = float(table.iloc[:-1].max().max())
    return table, typical, max(typical, large)


# ------------------------------------------------------------------------------ models and data


def study_configs() -> dict[str, TrainConfig]:
    """Every model the notebooks train, configured as they configure it (03: four-task dense models and
    single-task networks; 04: the detectors)."""
    def config(**fields) -> TrainConfig:
        return experiments.base_config(PROFILE, **fields)

    configs = {f"single_task/{t}": config(model="single_task", tasks=(t,)) for t in DENSE_TASKS}
    configs["mtl_baseline"] = config(model="mtl_baseline", tasks=DENSE_TASKS)
    mtinet = config(model="mtinet", tasks=DENSE_TASKS)
    # notebook 03's capacity control: the MTL baseline with its heads widened to MTI-Net's parameter count
    mtinet_params = experiments.resources(mtinet)["params (M)"] * 1e6
    width = head_width_for(mtinet_params, DENSE_TASKS, backbone=mtinet.backbone,
                           backbone_options=mtinet.backbone_options)
    configs["capacity_control"] = config(model="mtl_baseline", tasks=DENSE_TASKS,
                                         model_options={"head_width": width})
    configs["mtinet"] = mtinet
    configs["padnet"] = config(model="padnet", tasks=DENSE_TASKS)
    configs["ssd"] = config(model="ssd", tasks=("detection",), **experiments.DETECTOR)
    configs["flat_mtl"] = config(model="flat_mtl", tasks=ROCK_TASKS, **experiments.DETECTOR)
    configs["rock"] = config(model="rock", tasks=ROCK_TASKS, **experiments.DETECTOR)
    return configs


def training_batches(config: TrainConfig):
    """Endless training batches as train.fit makes them: the config's training set through a shuffling
    DataLoader with collate_batch, then to_device and BatchAugment on the whole batch."""
    train_set = make_dataset(config, "train", config.train_domains[0])
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, collate_fn=collate_batch,
                        drop_last=True, generator=torch.Generator().manual_seed(0))
    augment, generator = BatchAugment(), torch.Generator().manual_seed(0)
    while True:  # epoch after epoch
        for batch in loader:
            batch = to_device(batch, CPU)
            yield augment(batch, generator) if config.augment else batch


def training_step(config: TrainConfig, batch: dict, dtype: torch.dtype | None):
    """(a function running one train.train_step of the config's model on `batch`, its parameter count).
    The model, task specs, weighting and optimizer are built as train.fit builds them; the task specs'
    class lists and loss weights come from the dataset class, so no data has to be on disk."""
    tasks = make_tasks(config.tasks, dataset=DATASETS[config.dataset], weights=config.loss_weights)
    torch.manual_seed(config.seed)
    model = build_model(config.model, tasks, backbone=config.backbone,
                        backbone_options=config.backbone_options, **config.model_options)
    model = model.to(CPU, memory_format=torch.channels_last).train()
    weighting = build_weighting(config.weighting, list(tasks), **config.weighting_options)
    optimizer = make_optimizer(config, model.parameters(), weighting.parameters())

    def step():
        train_step(model, batch, tasks, weighting, optimizer, dtype, config.grad_clip)

    return step, sum(p.numel() for p in model.parameters())


def warm_up(step) -> int:
    """FLOPs of one call of `step`; runs it once to count them and WARMUP_STEPS times more."""
    flops = counted_flops(step)
    for _ in range(WARMUP_STEPS):
        step()
    return flops


def data_pipeline_speed(config: TrainConfig, steps: int, rounds: int) -> float:
    batches = training_batches(config)
    next(batches)  # the loader's first batch starts its iterator
    seconds = [seconds_per_call(lambda: next(batches), steps) for _ in range(rounds)]
    return config.batch_size / statistics.median(seconds)


def model_table(configs: dict[str, TrainConfig], precisions: dict[str, torch.dtype | None], peaks: dict,
                steps: int, rounds: int) -> pd.DataFrame:
    """One row per (model, precision); all models are timed in alternating rounds."""
    fns, rows = {}, {}
    for name, config in configs.items():
        batch = next(training_batches(config))
        for precision, dtype in precisions.items():
            fns[name, precision], params = training_step(config, batch, dtype)
            flops = warm_up(fns[name, precision])
            rows[name, precision] = {"params (M)": params / 1e6, "GFLOP/step": flops / 1e9}
    for (name, precision), seconds in interleaved_medians(fns, steps, rounds).items():
        row, (typical, best) = rows[name, precision], peaks[precision]
        row["img/s"] = configs[name].batch_size / seconds
        row["GFLOP/s"] = row["GFLOP/step"] / seconds
        row["% typ. peak"] = 100 * row["GFLOP/s"] / typical
        row["% best"] = 100 * row["GFLOP/s"] / best
    table = pd.DataFrame(rows).T
    table.index.names = ["model", "precision"]
    return table


# ------------------------------------------------------------------------------- official shape


def official_shape_config() -> TrainConfig:
    """Our MTI-Net in the official NYUD setting; no gradient clipping, as the official training loop."""
    return experiments.base_config(
        PROFILE, dataset="nyud_mt", model="mtinet", tasks=NYUD_TASKS, backbone="hrnet",
        backbone_options=HRNET_W18_SMALL_V2, model_options={"task_widths": HRNET_W18_SMALL_V2["widths"]},
        size=(96, 128), batch_size=8, optimizer="adam", lr=1e-4, weight_decay=1e-4, grad_clip=None,
        precision="fp32")


def random_nyud_batch(config: TrainConfig, classes: int) -> dict:
    """A batch shaped like NYUD's (no NYUD data is needed to time a step): labels 0 ... classes - 1 with
    10 % unlabelled pixels (255), depth in metres with 5 % missing (0)."""
    g = torch.Generator().manual_seed(0)
    b, (h, w) = config.batch_size, config.size
    semseg = torch.randint(0, classes, (b, h, w), generator=g)
    semseg[torch.rand(b, h, w, generator=g) < 0.1] = 255
    depth = torch.rand(b, 1, h, w, generator=g) * 9 + 0.5
    depth[torch.rand(b, 1, h, w, generator=g) < 0.05] = 0
    return to_device({"image": torch.randn(b, 3, h, w, generator=g), "semseg": semseg, "depth": depth}, CPU)


@contextlib.contextmanager
def official_code(repo: Path):
    """Make the official repository's top-level packages (models, losses, ...) importable, with the two
    names that newer releases of this venv's packages removed restored as aliases while its modules
    load and its model is built: torchvision.models.utils.load_state_dict_from_url (moved to torch.hub in
    torchvision 0.13; imported by its models/resnet.py) and np.int (removed in NumPy 1.24; its HRNet
    computes a width with it)."""
    tv_utils = types.ModuleType("torchvision.models.utils")
    tv_utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    sys.path.insert(0, str(repo))
    sys.modules["torchvision.models.utils"] = tv_utils
    np.int = int  # noqa: NPY001 -- restoring the removed alias is the point
    try:
        yield
    except ModuleNotFoundError as exc:
        raise SystemExit(f"the official code needs the package {exc.name!r}, which this venv lacks: install "
                         f"it outside the project (e.g. pip install --target /tmp/official_deps {exc.name}) "
                         f"and run with PYTHONPATH=/tmp/official_deps") from exc
    finally:
        del np.int  # noqa: NPY001
        del sys.modules["torchvision.models.utils"]
        sys.path.remove(str(repo))


def official_training_step(repo: Path, batch: dict, classes: int):
    """(one training step of the official MTI-Net on `batch`, its parameter count), built as its
    utils/common_config.py builds it for configs/nyud/hrnet18/mti_net.yml without pretrained weights,
    stepped as train/train_utils.py's train_vanilla steps (without its loss meters and metrics)."""
    with official_code(repo):
        from losses.loss_functions import DepthLoss, SoftMaxwithLoss
        from losses.loss_schemes import MTINetLoss
        from models.mti_net import MTINet
        from models.seg_hrnet import HighResolutionHead, hrnet_w18

        with contextlib.chdir(repo):  # hrnet_w18 reads its layout from a path relative to the working dir
            backbone = hrnet_w18(pretrained=False)
    outputs = {"semseg": classes, "depth": 1}
    tasks = types.SimpleNamespace(NAMES=list(outputs), NUM_OUTPUT=outputs)  # the config's p.TASKS
    p = types.SimpleNamespace(TASKS=tasks, AUXILARY_TASKS=tasks)
    channels = HRNET_W18_SMALL_V2["widths"]  # get_backbone's backbone_channels of hrnet_w18
    heads = nn.ModuleDict({t: HighResolutionHead(channels, n) for t, n in outputs.items()})
    torch.manual_seed(0)
    model = MTINet(p, backbone, channels, heads).train()
    criterion = MTINetLoss(list(outputs), list(outputs),
                           nn.ModuleDict({"semseg": SoftMaxwithLoss(), "depth": DepthLoss("l1")}),
                           {"semseg": 1.0, "depth": 1.0})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    # its inputs as its data pipeline gives them: NCHW images, (B, 1, H, W) label maps with 255 where a
    # label is missing (AddIgnoreRegions)
    images = batch["image"].contiguous()
    targets = {"semseg": batch["semseg"].unsqueeze(1).float(),
               "depth": torch.where(batch["depth"] > 0, batch["depth"], 255.0)}

    def step():
        loss = criterion(model(images), targets)
        optimizer.zero_grad()
        loss["total"].backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def official_shape(repo: Path | None, steps: int, rounds: int) -> None:
    config = official_shape_config()
    tasks = make_tasks(config.tasks, dataset=DATASETS[config.dataset])
    classes = tasks["semseg"].channels
    batch = random_nyud_batch(config, classes)
    fns, params = {}, {}
    fns["ours"], params["ours"] = training_step(config, batch, None)
    if repo is not None:
        fns["official"], params["official"] = official_training_step(repo, batch, classes)
    flops = {name: warm_up(step) for name, step in fns.items()}
    seconds = interleaved_medians(fns, steps, rounds)
    h, w = config.size
    print(f"MTI-Net, official setting: HRNet-W18-small-v2 layout {tuple(HRNET_W18_SMALL_V2['widths'])}, "
          f"NYUD semseg ({classes} classes) + depth, {h}x{w}, batch {config.batch_size}, Adam, fp32, "
          f"full training step; {steps} steps x {rounds} rounds")
    for name, s in seconds.items():
        print(f"  {name:9s} {params[name] / 1e6:6.2f} M params  {flops[name] / 1e9:6.2f} GFLOP/step  "
              f"{1e3 * s:8.1f} ms/step  {config.batch_size / s:7.1f} img/s  "
              f"{flops[name] / s / 1e9:6.1f} GFLOP/s")
    if "official" in seconds:
        print(f"  official / ours step time: {seconds['official'] / seconds['ours']:.2f}x "
              "(above 1: ours is faster)")


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=10, help="training steps (or batches) per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; the median is reported")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), metavar="MODEL",
                        help=f"a subset of {', '.join(MODELS)}")
    parser.add_argument("--bf16", action="store_true", help="add bf16-autocast rows where the CPU has bf16")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-model table here")
    parser.add_argument("--official-shape", action="store_true",
                        help="time MTI-Net in the official setting instead of the study models")
    parser.add_argument("--official-repo", type=Path, default=None,
                        help="a checkout of the official code to time against (implies --official-shape)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; training runs on "
          f"{describe_precision()}\n")
    if args.official_shape or args.official_repo:
        official_shape(args.official_repo, args.steps, args.rounds)
        return

    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if cpu_has_native_bf16() else {})}
    peaks = {}
    for precision, dtype in dtypes.items():
        table, typical, best = conv_peak(dtype, args.rounds)
        peaks[precision] = typical, best
        print(f"3x3 conv, forward + backward, batch {CONV_BATCH}, channels_last, {precision}: GFLOP/s "
              f"(typical peak {typical:.1f}, best {best:.1f})")
        print(table.round(1).to_string(na_rep=""), "\n")
    if "bf16" not in dtypes:
        print("bf16: not native on this CPU (train.cpu_has_native_bf16), fp32 only\n")

    configs = study_configs()
    precisions = {"fp32": None}
    if args.bf16 and "bf16" in dtypes:
        precisions["bf16"] = torch.bfloat16  # autocast, as train_step runs precision="bf16"
    table = model_table({name: configs[name] for name in args.models}, precisions, peaks, args.steps,
                        args.rounds)
    data_config = configs[args.models[0]]
    table.loc[("data pipeline", "-"), "img/s"] = data_pipeline_speed(data_config, args.steps, args.rounds)
    print(f"training step, profile {PROFILE!r} ({data_config.size[0]}x{data_config.size[1]}, batch "
          f"{data_config.batch_size}); {args.steps} steps x {args.rounds} rounds, median")
    if "capacity_control" in args.models:
        width = configs["capacity_control"].model_options["head_width"]
        print(f"capacity_control: the MTL baseline with task heads {width} channels wide, MTI-Net's size")
    print(table.round(2).to_string(na_rep=""))
    if args.csv is not None:
        table.to_csv(args.csv)
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    main()
