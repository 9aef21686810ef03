"""The results store: one directory per run config, written atomically, reused instead of retrained.

    runs/<model>-<hash>/config.json     the full TrainConfig (the hash is over its canonical JSON)
                        history.json    one record per finished epoch (losses, weights, lr, metrics)
                        checkpoint.pt   the state after the last finished epoch (to resume after a kill)
                        metrics.json    final metrics: present only when the run is complete

Every file is written to a temporary name and moved into place with os.replace, so a crash or a
kill leaves either the old or the new version, never half a file. A lock file serialises processes
asking for the same run: the second one waits and then finds the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from .data import DATASETS
from .data.cache import atomic_write, file_lock
from .tasks import default_weights
from .train import TrainConfig, distributed_context, fit, make_dataset, resolved_precision, validate


def default_runs_root() -> Path:
    """$MTL_CORE_RUNS, else the project's runs/ folder (next to pyproject.toml), else ~/.cache."""
    if os.environ.get("MTL_CORE_RUNS"):
        return Path(os.environ["MTL_CORE_RUNS"])
    project = Path(__file__).resolve().parents[1]
    if (project / "pyproject.toml").exists():
        return project / "runs"
    return Path.home() / ".cache" / "mtl_core" / "runs"


# Part of every run's hash: bumped when the same config would train differently or store an
# incompatible checkpoint (2: PAD-Net / MTI-Net task branches as grouped convolutions; 3: initial
# weights seeded by seed and tasks, gradient weightings that change only the shared parameters;
# 4: MTI-Net's FPM mask normalised over the official code's channel groups, PAD-Net's 1x1 conv on
# the fused map as the official HighResolutionFuse; 5: batch augmentation, the synthetic benchmark's
# own loss weights, fused optimizer steps; 6: single-task networks train their loss at weight 1),
# so older runs are left in place and not mistaken for current ones.
STORE_VERSION = 6

# Part of the hash of these models' runs only, so that every other model's hash stays as it was: bumped
# when the same config of that model would train differently (1: ROCK's reference losses and weights;
# 2: ROCK's reference SSD head by default: 6 levels, its default boxes, foreground bias prior 0.01).
MODEL_VERSIONS = {"ssd": 2, "flat_mtl": 2, "rock": 2}


def dataset_loss_weights(config: TrainConfig) -> dict[str, float]:
    """The loss weights a run takes from code rather than from its config (tasks.default_weights: the
    synthetic benchmark's LOSS_WEIGHTS, 1 for a single task) for the tasks `config.loss_weights` leaves
    to them. They are part of the hash, so that a change of LOSS_WEIGHTS re-trains the runs that use
    them instead of reusing runs trained with the old weights under a config that reads the same."""
    defaults = default_weights(config.tasks, DATASETS.get(config.dataset))
    return {t: w for t, w in defaults.items() if t not in config.loss_weights}


def config_hash(config: TrainConfig) -> str:
    values = {**config.to_dict(), "store_version": STORE_VERSION}
    if config.model in MODEL_VERSIONS:
        values["model_version"] = MODEL_VERSIONS[config.model]
    # "auto" resolves per machine (bf16 autocast on a GPU that has it, fp32 on a CPU): what a run trains
    # at is part of what it is, so one machine's bf16 run is never read as another's fp32 run. fp32 stays
    # out of the hash, which keeps every fp32 run's hash as it was.
    precision = resolved_precision(config.precision)
    if precision != "fp32":
        values["resolved_precision"] = precision
    own_weights = dataset_loss_weights(config)
    if own_weights:
        values["dataset_loss_weights"] = own_weights
    blob = json.dumps(values, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def write_json(path: Path, value) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(value, indent=1, default=list).encode()))


class RunStore:
    """The directory of one run; the training loop calls load_checkpoint / save_epoch / save_final."""

    def __init__(self, directory: Path, config: TrainConfig):
        self.directory = directory
        self.config = config
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "config.json").exists():
            write_json(directory / "config.json", config.to_dict())

    @property
    def complete(self) -> bool:
        return (self.directory / "metrics.json").exists()

    def history(self) -> list[dict]:
        path = self.directory / "history.json"
        return json.loads(path.read_text()) if path.exists() else []

    def load_checkpoint(self) -> dict | None:
        path = self.directory / "checkpoint.pt"
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def save_epoch(self, record: dict, state: dict) -> None:
        # checkpoint first, then history: after a kill between the two the epoch is simply redone
        atomic_write(self.directory / "checkpoint.pt", lambda f: torch.save(state, f))
        history = [r for r in self.history() if r["epoch"] < record["epoch"]] + [record]
        write_json(self.directory / "history.json", history)

    def save_final(self, metrics: dict) -> None:
        write_json(self.directory / "metrics.json", metrics)

    def metrics(self) -> dict:
        return json.loads((self.directory / "metrics.json").read_text())


@dataclass
class RunResult:
    config: TrainConfig
    directory: Path
    metrics: dict
    history: pd.DataFrame
    trained: bool  # False when the stored result was returned

    def load_model(self):
        """The trained model (CPU, eval mode) rebuilt from the config and the checkpoint."""
        from .models import build_model
        from .tasks import make_tasks

        cfg = self.config
        probe = make_dataset(cfg, "val", cfg.val_domain)
        model = build_model(cfg.model, make_tasks(cfg.tasks, dataset=probe, weights=cfg.loss_weights),
                            backbone=cfg.backbone, backbone_options=cfg.backbone_options, **cfg.model_options)
        state = torch.load(self.directory / "checkpoint.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        return model.eval()


def run_directory(config: TrainConfig, root: str | os.PathLike | None = None) -> Path:
    root = Path(root) if root is not None else default_runs_root()
    return root / f"{config.model}-{config_hash(config)}"


def train_or_load(config: TrainConfig | dict, root: str | os.PathLike | None = None, force: bool = False,
                  progress: bool | None = None) -> RunResult:
    """The run's result: read from the store if this exact config already finished, else trained
    (resuming from its last checkpoint if an earlier attempt was interrupted). `force` retrains."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    validate(config)
    directory = run_directory(config, root)
    directory.mkdir(parents=True, exist_ok=True)
    rank, world = distributed_context()
    # under torchrun only rank 0 takes the lock (the others would wait on it while rank 0 waits for
    # them in the process group); the ranks agree on the store's state through barriers
    def waiting() -> None:
        print(f"{directory.name}: another process holds {directory / '.lock'} (it is training this run); "
              "waiting for it to finish, then reading its result", file=sys.stderr, flush=True)

    with file_lock(directory / ".lock", waiting) if rank == 0 else nullcontext():
        if rank == 0:
            store = RunStore(directory, config)
            if force:
                for name in ("metrics.json", "checkpoint.pt", "history.json"):
                    (directory / name).unlink(missing_ok=True)
        if world > 1:
            dist.barrier()
            store = RunStore(directory, config) if rank else store
        trained = False
        if not store.complete:
            fit(config, store, progress=progress)
            trained = True
        if world > 1:
            dist.barrier()
        return RunResult(config, directory, store.metrics(), pd.DataFrame(store.history()), trained)


def load_results(root: str | os.PathLike | None = None, complete_only: bool = True) -> pd.DataFrame:
    """One row per stored run: its config fields, `status`, `epochs_done`, `trained_precision` (what its
    last epoch trained at) and every final metric."""
    root = Path(root) if root is not None else default_runs_root()
    rows = []
    for config_path in sorted(root.glob("*/config.json")):
        directory = config_path.parent
        store_complete = (directory / "metrics.json").exists()
        if complete_only and not store_complete:
            continue
        row = {"run": directory.name, **json.loads(config_path.read_text())}
        history_path = directory / "history.json"
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        row["epochs_done"] = len(history)
        # what the run trained at ("fp32" / "bf16"): its config may say "auto", which resolves per machine
        row["trained_precision"] = history[-1].get("precision") if history else None
        row["status"] = "complete" if store_complete else "incomplete"
        if store_complete:
            row.update(json.loads((directory / "metrics.json").read_text()))
        rows.append(row)
    return pd.DataFrame(rows)
