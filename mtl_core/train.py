"""The training loop: plain PyTorch, top to bottom.

    config -> datasets, model, task specs, weighting, optimizer, schedule
    for each epoch:   (everything random is re-seeded from (seed, epoch): a resumed run repeats it exactly)
        for each batch: forward (bf16 autocast where the machine runs it natively and faster) ->
                        per-task losses in fp32 (deep supervision included) -> weighting.backward ->
                        clip -> optimizer step
        evaluate every `eval_every` epochs -> metrics of every task
        hand the epoch's record and a checkpoint to the run store (atomic writes, rank 0 only)

Runs under `torchrun --nproc_per_node N` use DistributedDataParallel (gloo on CPU, nccl on GPU)
with a DistributedSampler; `batch_size` stays the *global* batch, split over the processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .data import DATASETS, build_dataset, collate_batch, dataset_options, dataset_tasks
from .data.cache import write_text_atomic
from .data.synthetic import check_size
from .data.transforms import BatchAugment, augment_seed
from .losses import task_losses
from .metrics import PROTOCOLS, MetricSuite
from .models import BACKBONES, build_model, list_models
from .progress import progress_bar, report
from .tasks import TASK_NAMES, make_tasks
from .weighting import WEIGHTINGS, build_weighting

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly", "step", "constant")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """Everything that determines a run. A run's identity is the hash of this (see runs.py)."""

    # model
    model: str = "mtl_baseline"
    tasks: tuple[str, ...] = ("semseg", "depth")
    backbone: str = "cnn"
    backbone_options: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    dataset_options: dict = field(default_factory=dict)  # e.g. nyuv2_mat: {"class_mapping": "..."}
    size: tuple[int, int] = (64, 64)
    num_train: int = 2000
    num_val: int = 300
    train_domains: tuple[str, ...] = ("render",)  # several = mixed training data (ROCK: real + synthetic)
    val_domain: str = "render"
    missing_fraction: float | None = None  # sensor domain: share of samples missing each aux annotation
    data_seed: int = 0
    augment: bool = True
    # optimisation
    weighting: str = "fixed"
    weighting_options: dict = field(default_factory=dict)
    loss_weights: dict = field(default_factory=dict)  # per-task loss weights (default: the task spec's)
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    epochs: int = 10
    batch_size: int = 16
    grad_clip: float | None = 10.0
    precision: str = "auto"
    eval_every: int = 1
    eval_protocol: str = "auto"  # metrics.PROTOCOLS; auto: "official" on the papers' datasets (nyud_mt,
    # pascal_mt), so that numbers compare with their tables; "default" elsewhere (the synthetic studies)
    seed: int = 0

    def __post_init__(self):
        self.tasks = tuple(self.tasks) if not isinstance(self.tasks, str) else (self.tasks,)
        self.size = tuple(int(v) for v in self.size) if not isinstance(self.size, str) else self.size
        self.train_domains = tuple(self.train_domains) if not isinstance(self.train_domains, str) \
            else (self.train_domains,)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def validate(config: TrainConfig) -> None:
    """Fail before any work, with a message naming the offending field."""
    def choose(name, value, options):
        if value not in options:
            raise ValueError(f"{name}={value!r}: choose from {sorted(options)}")

    choose("model", config.model, list_models())
    choose("backbone", config.backbone, BACKBONES)
    choose("weighting", config.weighting, WEIGHTINGS)
    choose("optimizer", config.optimizer, OPTIMIZERS)
    choose("schedule", config.schedule, SCHEDULES)
    choose("precision", config.precision, PRECISIONS)
    choose("dataset", config.dataset, DATASETS)
    choose("eval_protocol", config.eval_protocol, ("auto", *PROTOCOLS))
    if config.dataset != "synthetic":
        if config.train_domains != ("render",) or config.val_domain != "render":
            raise ValueError(f"train_domains / val_domain: domains exist only in the synthetic dataset, "
                             f"not in {config.dataset!r}")
    unknown_options = sorted(set(config.dataset_options) - set(dataset_options(config.dataset)))
    if unknown_options:
        raise ValueError(f"dataset_options: {config.dataset!r} has no option(s) {unknown_options}; "
                         f"its options are {list(dataset_options(config.dataset))}")
    provided = dataset_tasks(config.dataset, **config.dataset_options)
    for task in config.tasks:
        choose("tasks", task, TASK_NAMES)
        if task not in provided:
            raise ValueError(f"tasks: dataset {config.dataset!r} has no {task!r} annotations "
                             f"(it provides {list(provided)})")
    unknown_weights = sorted(set(config.loss_weights) - set(config.tasks))
    if unknown_weights:
        raise ValueError(f"loss_weights: {unknown_weights} are not among the tasks {list(config.tasks)}")
    check_size(config.size, "size")
    for name in ("epochs", "batch_size", "num_train", "num_val", "eval_every"):
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{name}={getattr(config, name)!r}: must be a positive integer")
    if not config.lr > 0:
        raise ValueError(f"lr={config.lr!r}: must be positive")
    for domain in (*config.train_domains, config.val_domain):
        choose("train_domains / val_domain", domain, ("render", "sensor"))


# ----------------------------------------------------------------------------------------------
# the pieces the loop is made of


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- user code may draw from the legacy global RNG
    torch.manual_seed(seed)


def init_seed(config: TrainConfig) -> int:
    """The seed of a network's initial weights: a function of the seed *and* the tasks, so that networks
    of different tasks (e.g. the single-task networks RSA compares) never start from the same weights,
    while a config always starts from the same ones."""
    digest = hashlib.sha256(json.dumps([config.seed, sorted(config.tasks)]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


OFFICIAL_DATASETS = ("nyud_mt", "pascal_mt")  # evaluated by the MTI-Net paper's own code


def eval_protocol(config: TrainConfig) -> str:
    """The evaluation protocol a run uses: its `eval_protocol`, with "auto" resolved by the dataset."""
    if config.eval_protocol != "auto":
        return config.eval_protocol
    return "official" if config.dataset in OFFICIAL_DATASETS else "default"


def cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _time_conv_step(dtype: torch.dtype | None, repeats: int = 5) -> float:
    """Seconds of one training step of a small 3x3-conv stack (the study models' typical layer: batch 16,
    32 channels, 32x32 maps, channels_last), forward and backward, at `dtype` autocast (None: fp32)."""
    generator = torch.Generator().manual_seed(0)
    convs = [torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(3)]
    net = torch.nn.Sequential(*[m for c in convs for m in (c, torch.nn.BatchNorm2d(32), torch.nn.ReLU())])
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(16, 32, 32, 32, generator=generator).to(memory_format=torch.channels_last)
    best = math.inf
    for i in range(repeats + 2):  # two warm-up steps (oneDNN picks and caches its kernels)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = net(x).float().square().mean()
        loss.backward()
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return best


def precision_cache_path() -> Path:
    """Where the machine's measured precision choice is kept: $MTL_CORE_CACHE, else ~/.cache/mtl_core."""
    root = os.environ.get("MTL_CORE_CACHE") or Path.home() / ".cache" / "mtl_core"
    return Path(root) / "precision.json"


def _machine_key() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model} | torch {torch.__version__}"


def cpu_bf16_speedup() -> float:
    """fp32 / bf16-autocast time of a training step on this CPU (>1: bf16 is faster), measured once per
    machine and torch version (one thread, as the suite's runs train) and kept in precision_cache_path().

    Native bf16 (AVX512-BF16 / AMX) does not guarantee a faster step: how oneDNN runs a layer in bf16
    depends on the CPU and the torch version (an earlier torch on an AVX512-BF16 EPYC ran MTI-Net 2.9x
    slower in bf16; torch 2.14 runs every study model 1.15-1.9x faster, benchmarks/speed.py --bf16).
    So `precision="auto"` measures instead of assuming. The cached figure keeps the choice, and so the
    runs' hashes, stable on this machine; delete the file to measure again."""
    path, key = precision_cache_path(), _machine_key()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rounds = [(_time_conv_step(None), _time_conv_step(torch.bfloat16)) for _ in range(3)]
    finally:
        torch.set_num_threads(threads)
    speedup = min(f for f, _ in rounds) / min(b for _, b in rounds)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({**cached, key: round(speedup, 3)}, indent=1))
    return speedup


# `auto` picks bf16 on a CPU only where it measured at least this much faster than fp32: below it, the
# gain would not pay for rounding every activation to 8 bits of mantissa
BF16_MIN_SPEEDUP = 1.1


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run (None: fp32). `auto`: bf16 on a CUDA GPU that supports it; on a CPU,
    bf16 where the CPU runs it natively (AVX512-BF16 / AMX) *and* a training step measured faster in it
    (cpu_bf16_speedup), else fp32. One choice per machine, so a study trains all of its models at one
    precision. `bf16` asks for it where the hardware has it; `fp32` never autocasts."""
    if precision == "fp32":
        return None
    supported = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    if precision == "bf16" and not supported:
        raise ValueError("precision='bf16': this machine has no native bf16 support; use 'fp32' or 'auto'")
    if not supported:
        return None
    if precision == "auto" and device.type != "cuda" and cpu_bf16_speedup() < BF16_MIN_SPEEDUP:
        return None
    return torch.bfloat16


def resolved_precision(precision: str, device: torch.device | None = None) -> str:
    """"fp32" or "bf16": what a run with `precision` trains at on this machine (its default device)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return "bf16" if autocast_dtype(precision, device) == torch.bfloat16 else "fp32"


def describe_precision(precision: str = "auto", device: torch.device | None = None) -> str:
    """What `precision` resolves to on this machine, and why (printed by every run and the suite)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = autocast_dtype(precision, device)
    if device.type == "cuda":
        why = "bf16 autocast" if dtype else "fp32 (this GPU has no bf16)"
    elif precision == "fp32":
        why = "fp32 (asked for)"
    elif not cpu_has_native_bf16():
        why = "fp32 (no AVX512-BF16 / AMX on this CPU: bf16 would be emulated, slower than fp32)"
    elif precision == "bf16":
        why = "bf16 autocast (asked for; the CPU has AVX512-BF16 or AMX)"
    else:
        speedup = cpu_bf16_speedup()
        why = (f"bf16 autocast (auto: native bf16, a training step measured {speedup:.2f}x as fast as fp32)"
               if dtype else f"fp32 (auto: native bf16, but a training step measured only {speedup:.2f}x as "
               f"fast as fp32; bf16 needs {BF16_MIN_SPEEDUP}x)")
    return f"{device.type}, {why}"


def make_dataset(config: TrainConfig, split: str, domain: str = "render", seed: int | None = None,
                 transform=None):
    """One split of the config's dataset (synthetic: of one domain, generated from `seed`)."""
    num = config.num_train if split == "train" else config.num_val
    options = {"num_samples": num, "size": config.size, "transform": transform, **config.dataset_options}
    if config.dataset == "synthetic":  # a real dataset has one domain and fixed scenes
        options.update(domain=domain, seed=config.data_seed if seed is None else seed)
        if domain == "sensor":
            options["missing_fraction"] = config.missing_fraction
    return build_dataset(config.dataset, split, config.data_dir, **options)


def make_datasets(config: TrainConfig):
    """Training set (several domains are concatenated), validation set, first training part. Items are
    not augmented here: `fit` augments whole batches (BatchAugment) when `config.augment` is set."""
    # each extra training domain gets its own seed, so mixed domains show different rooms
    parts = [make_dataset(config, "train", d, config.data_seed + i)
             for i, d in enumerate(config.train_domains)]
    train = parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
    val = make_dataset(config, "val", config.val_domain)
    return train, val, parts[0]


def make_optimizer(config: TrainConfig, model_params, weighting_params) -> torch.optim.Optimizer:
    # the weighting's own parameters (uncertainty log-variances) must not be decayed towards 0
    groups = [{"params": list(model_params)}]
    if weighting_params:
        groups.append({"params": list(weighting_params), "weight_decay": 0.0})
    # fused: one kernel for all tensors instead of a Python loop over them; MTI-Net's 383 tensors step in
    # 1.7 ms instead of 10.8 ms on one CPU thread (foreach: 6.8 ms); the same update up to rounding
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                               fused=True)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def make_schedule(config: TrainConfig, optimizer, steps: int):
    """Per-step learning-rate factor: cosine, poly (power 0.9, as MTI-Net), step (x0.1 at 2/3), constant."""
    def factor(step: int) -> float:
        progress = min(step / max(steps, 1), 1.0)
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if config.schedule == "poly":
            return (1 - progress) ** 0.9
        if config.schedule == "step":
            return 0.1 if progress >= 2 / 3 else 1.0
        return 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def training_layout(model: torch.nn.Module, dtype: torch.dtype | None,
                    device: torch.device) -> torch.memory_format:
    """The memory layout a model trains in: channels_last (NHWC, oneDNN's fastest on a CPU), except for a
    model with dilated convolutions in bf16 autocast on a CPU. There oneDNN (torch 2.14) returns NaN
    weight gradients in channels_last when a dilated 3x3 convolution has 8 mod 16 input channels (24,
    40, 56, ...) on maps of 32 px or more (the `cnn` backbone at output stride 4 with the ci widths
    diverged at step 2); in the contiguous layout no such case was found (720 shapes swept), at a cost of
    ~9 % for the SSD (tests/test_train.py checks both)."""
    dilated = any(isinstance(m, torch.nn.Conv2d) and max(m.dilation) > 1 for m in model.modules())
    if dtype == torch.bfloat16 and device.type == "cpu" and dilated:
        return torch.contiguous_format
    return torch.channels_last


def to_device(batch: dict, device: torch.device,
              layout: torch.memory_format = torch.channels_last) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if key == "image":
                value = value.contiguous(memory_format=layout)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            value = [v.to(device) for v in value]
        out[key] = value
    return out


def shared_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters every task depends on: the backbone (what gradient-based weightings act on)."""
    return [p for p in unwrap(model).backbone.parameters() if p.requires_grad]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def as_float(outputs):
    """`outputs` (tensors, possibly in dicts and lists) with every reduced-precision tensor in fp32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype in (torch.bfloat16, torch.float16) else outputs
    if isinstance(outputs, dict):
        return {k: as_float(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float(v) for v in outputs)
    return outputs


def train_step(model, batch, tasks, weighting, optimizer, dtype, grad_clip=None) -> dict[str, float]:
    """One optimisation step; returns the (unweighted-by-method) task losses as floats."""
    optimizer.zero_grad(set_to_none=True)
    features = []  # the shared representation, for weightings that work on it (MGDA-UB)
    hook = (unwrap(model).backbone.register_forward_hook(lambda module, args, out: features.extend(out))
            if getattr(weighting, "uses_features", False) else None)
    with torch.autocast(batch["image"].device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        outputs = model(batch["image"])
    # the losses in fp32, outside autocast: box encoding, log-depth, the detection loss's log-softmax and
    # its hard-negative ranking would otherwise round to bf16's 8-bit mantissa
    losses = task_losses(as_float(outputs), batch, tasks)
    if hook is not None:
        hook.remove()
    weighted = {t: loss.float() * tasks[t].weight for t, loss in losses.items()}
    for name, loss in weighted.items():
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss of task {name!r} is {loss.item()}")
    weights = weighting.backward(weighted, shared_parameters(model), features=features or None)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    record = {f"loss/{t}": float(v.detach()) for t, v in weighted.items()}
    record.update({f"weight/{t}": float(w) for t, w in weights.items()})
    return record


@torch.no_grad()
def evaluate(model, loader, tasks, device, dtype, protocol: str = "default") -> dict[str, float]:
    """All task metrics on a loader under `protocol` (metrics.PROTOCOLS), flattened to
    {"task/metric": value}, plus the mean val losses."""
    model.eval()
    suite = MetricSuite(tasks, protocol=protocol)
    loss_sums, batches = {t: 0.0 for t in tasks}, 0
    layout = training_layout(model, dtype, device)
    for batch in loader:
        batch = to_device(batch, device, layout)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = model(batch["image"])
        outputs = as_float({k: v for k, v in outputs.items() if k != "features"})
        suite.update(outputs, batch)
        for t, loss in task_losses(outputs, batch, tasks).items():
            loss_sums[t] += float(loss) * tasks[t].weight
        batches += 1
    model.train()
    metrics = {f"{t}/{m}": v for t, values in suite.compute().items() for m, v in values.items()}
    metrics.update({f"val_loss/{t}": s / max(batches, 1) for t, s in loss_sums.items()})
    return metrics


# ----------------------------------------------------------------------------------------------
# the loop


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def fit(config: TrainConfig, store=None, progress: bool | None = None, step_callback=None) -> dict:
    """Train `config` to the end and return its final metrics.

    `store` (a runs.RunStore, or None) provides `load_checkpoint()`, `save_epoch(record, state)` and
    `save_final(metrics)`; with a checkpoint present the run resumes after its last finished epoch.
    `step_callback(model, batch, tasks, optimizer, step)` is called after every optimisation step
    (e.g. affinity.AffinityProbe, which measures task interactions during training).
    """
    validate(config)
    rank, world = distributed_context()
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    dtype = autocast_dtype(config.precision, device)
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size}: must be divisible by the {world} processes")

    train_set, val_set, first_train = make_datasets(config)
    tasks = make_tasks(config.tasks, dataset=first_train, weights=config.loss_weights)
    seed_everything(init_seed(config))
    model = build_model(config.model, tasks, backbone=config.backbone,
                        backbone_options=config.backbone_options, **config.model_options)
    layout = training_layout(model, dtype, device)
    model = model.to(device, memory_format=layout)
    weighting = build_weighting(config.weighting, list(tasks), **config.weighting_options)
    optimizer = make_optimizer(config, model.parameters(), weighting.parameters())
    sampler = (DistributedSampler(train_set, world, rank, shuffle=True, seed=config.seed)
               if world > 1 else None)
    loader_generator = torch.Generator()
    train_loader = DataLoader(train_set, batch_size=config.batch_size // world, shuffle=sampler is None,
                              sampler=sampler, collate_fn=collate_batch, drop_last=True,
                              generator=loader_generator)
    # augmentation of the collated batch: tensor operations instead of a per-image Python chain
    augment = BatchAugment() if config.augment else None
    augment_generator = torch.Generator()
    val_loader = DataLoader(val_set, batch_size=config.batch_size, collate_fn=collate_batch)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"num_train={config.num_train} is smaller than one batch of {config.batch_size}")
    schedule = make_schedule(config, optimizer, config.epochs * steps_per_epoch)

    start_epoch, metrics = 0, {}
    if rank == 0:
        name = f"{store.directory.name}: " if store is not None else ""
        print(f"{name}training on {describe_precision(config.precision, device)}", flush=True)
    state = store.load_checkpoint() if store is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        weighting.load_state_dict(state["weighting"])
        start_epoch, metrics = state["epoch"] + 1, state.get("metrics", {})
        if rank == 0:
            print(f"resuming {store.directory.name} from its checkpoint: epoch {start_epoch + 1} of "
                  f"{config.epochs} ({start_epoch} done)", flush=True)
    if world > 1:
        if getattr(weighting, "needs_task_gradients", False):
            raise ValueError(f"weighting={config.weighting!r} manipulates per-task gradients, which "
                             "DistributedDataParallel does not synchronise; run it in one process")
        model = torch.nn.parallel.DistributedDataParallel(model)

    model.train()
    for epoch in range(start_epoch, config.epochs):
        # all randomness of an epoch derives from (seed, epoch): resuming repeats the epoch exactly
        seed_everything(config.seed * 100_003 + epoch)
        loader_generator.manual_seed(config.seed * 100_003 + epoch)
        augment_generator.manual_seed(augment_seed(config.seed, epoch, rank))
        if sampler is not None:
            sampler.set_epoch(epoch)
        start, cpu_start, sums = time.perf_counter(), time.process_time(), {}
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}",
                           enable=progress if rank == 0 else False)
        for step, batch in enumerate(train_loader):
            batch = to_device(batch, device, layout)
            if augment is not None:
                batch = augment(batch, augment_generator)
            try:
                record = train_step(model, batch, tasks, weighting, optimizer, dtype, config.grad_clip)
            except FloatingPointError as exc:
                where = f" (the last good checkpoint is in {store.directory})" if store is not None else ""
                raise FloatingPointError(f"{exc} at epoch {epoch + 1}, step {step + 1}; stopping{where}") \
                    from None
            schedule.step()
            if step_callback is not None:
                step_callback(unwrap(model), batch, tasks, optimizer, epoch * steps_per_epoch + step + 1)
            for key, value in record.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix({k.split("/")[1]: f"{v:.3f}" for k, v in record.items() if k.startswith("loss/")})
        bar.close()
        means = {k: v / steps_per_epoch for k, v in sums.items()}
        weighting.epoch_end({t: means[f"loss/{t}"] for t in tasks})
        record = {"epoch": epoch + 1, "device": device.type, "precision": "bf16" if dtype else "fp32",
                  "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - start,
                  # CPU seconds of this process over its `threads` threads: unlike the wall-clock
                  # seconds they hardly change when other processes share the cores, so they compare
                  # the cost of runs trained under different machine loads
                  "cpu_seconds": time.process_time() - cpu_start, "threads": torch.get_num_threads(),
                  "images_per_second": steps_per_epoch * config.batch_size / (time.perf_counter() - start),
                  **means}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            if rank == 0:
                metrics = evaluate(unwrap(model), val_loader, tasks, device, dtype, eval_protocol(config))
                record.update(metrics)
        if rank == 0:
            name = f"{store.directory.name} " if store is not None else ""
            losses = " ".join(f"{k[5:]} {v:.4g}" for k, v in record.items() if k.startswith("loss/"))
            validated = " ".join(f"{k} {v:.4g}" for k, v in record.items()
                                 if "/" in k and not k.startswith(("loss/", "weight/", "val_loss/")))
            report(bar, f"{name}epoch {epoch + 1}/{config.epochs}: loss {losses}"
                   + (f" | val {validated}" if validated else "")
                   + f" | {record['images_per_second']:.0f} img/s, {record['seconds']:.1f} s")
        if store is not None and rank == 0:
            state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "weighting": weighting.state_dict(),
                     "epoch": epoch, "metrics": metrics}
            store.save_epoch(record, state)
        if world > 1:
            dist.barrier()
    if store is not None and rank == 0:
        store.save_final(metrics)
    return metrics
