"""The training engine and the results store: learning, repeatability, resume after a kill,
concurrent writers, cache hits, early validation, NaN handling, and DistributedDataParallel."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtl_core import runs, train
from mtl_core.cli import main as cli_main
from mtl_core.runs import load_results, run_directory, train_or_load
from mtl_core.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_data(tmp_path_factory, monkeypatch):
    data = tmp_path_factory.getbasetemp() / "data"  # shared by the tests of one session: generated once
    monkeypatch.setenv("MTL_CORE_DATA", str(data))
    monkeypatch.setenv("MTL_CORE_PROGRESS", "0")
    return data


def tiny(**overrides) -> TrainConfig:
    values = dict(model="mtl_baseline", tasks=("semseg", "depth"), num_train=32, num_val=16, epochs=3,
                  batch_size=8, lr=2e-3, backbone_options={"widths": [16, 32, 64, 128]}, augment=False)
    values.update(overrides)
    return TrainConfig(**values)


def cli(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mtl_core", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def cli_args(config: TrainConfig, root: Path) -> list[str]:
    args = ["train", "--runs", str(root)]
    for key, value in config.to_dict().items():
        if value is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, dict):
            args += [flag, json.dumps(value)]
        elif isinstance(value, tuple | list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def test_tiny_run_learns(tmp_path):
    result = train_or_load(tiny(epochs=4), root=tmp_path)
    history = result.history
    for task in ("semseg", "depth"):
        assert history[f"loss/{task}"].iloc[-1] < 0.8 * history[f"loss/{task}"].iloc[0]
    assert 0 <= result.metrics["semseg/miou"] <= 100 and result.metrics["depth/rmse"] > 0
    assert (result.directory / "config.json").exists() and (result.directory / "checkpoint.pt").exists()


def test_same_seed_same_metrics_other_seed_differs():
    a, b = fit(tiny(epochs=2)), fit(tiny(epochs=2))
    assert a == b
    c = fit(tiny(epochs=2, seed=1))
    assert c["depth/rmse"] != a["depth/rmse"]


def test_stored_result_is_returned_without_training(tmp_path, monkeypatch):
    first = train_or_load(tiny(epochs=1), root=tmp_path)
    assert first.trained

    def no_training(*args, **kwargs):
        raise AssertionError("a stored run must not be trained again")

    monkeypatch.setattr(runs, "fit", no_training)
    again = train_or_load(tiny(epochs=1).to_dict(), root=tmp_path)
    assert not again.trained and again.metrics == first.metrics
    with pytest.raises(AssertionError, match="must not be trained"):
        train_or_load(tiny(epochs=1), root=tmp_path, force=True)


def test_resume_after_sigkill_gives_the_uninterrupted_result(tmp_path):
    config = tiny(epochs=5, num_train=64)
    proc = cli(*cli_args(config, tmp_path / "killed"), start_new_session=True)
    history = run_directory(config, tmp_path / "killed") / "history.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(json.loads(history.read_text())) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(json.loads(history.read_text()))
    assert 2 <= done < 5 and not (history.parent / "metrics.json").exists()

    # resume and the uninterrupted reference run in the same kind of process (same thread count):
    # floating-point reductions, hence results, depend on it
    printed = {}
    for root in ("killed", "straight"):
        out, err = cli(*cli_args(config, tmp_path / root)).communicate(timeout=600)
        assert "trained" in out, err
        printed[root] = out
    # it says that it resumes, and from where; without a terminal, one line of figures per epoch
    assert f"resuming {history.parent.name} from its checkpoint: epoch {done + 1} of 5" in printed["killed"]
    for root, first in (("killed", done + 1), ("straight", 1)):
        epochs = [line for line in printed[root].splitlines() if " epoch " in f" {line}" and "img/s" in line]
        assert [int(line.split("epoch ")[1].split("/")[0]) for line in epochs] == list(range(first, 6))
        assert "loss semseg " in epochs[-1] and "| val " in epochs[-1]  # the last epoch is validated
    assert "resuming" not in printed["straight"]
    resumed = json.loads((history.parent / "metrics.json").read_text())
    assert [r["epoch"] for r in json.loads(history.read_text())] == [1, 2, 3, 4, 5]
    straight = json.loads((run_directory(config, tmp_path / "straight") / "metrics.json").read_text())
    assert resumed == straight


def test_concurrent_runs_all_complete_and_readable(tmp_path):
    configs = [tiny(epochs=1, seed=s) for s in (0, 1, 2)] + [tiny(epochs=1, seed=0)]  # one duplicate
    procs = [cli(*cli_args(c, tmp_path)) for c in configs]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    table = load_results(tmp_path)
    assert len(table) == 3 and set(table["seed"]) == {0, 1, 2} and (table["status"] == "complete").all()
    assert table["depth/rmse"].notna().all()
    assert sum("loaded stored result" in out for out, _ in outputs) == 1  # the duplicate waited, then read
    assert not list(tmp_path.glob("*/.*.json.*")) and not list(tmp_path.glob("*/.checkpoint.pt.*"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny(epochs=3)
    calls = {"n": 0}
    original = train.task_losses

    def poisoned(outputs, batch, tasks):
        calls["n"] += 1
        losses = original(outputs, batch, tasks)
        if calls["n"] > 4 + 2:  # 4 training steps per epoch (+ 2 validation batches): epoch 2 breaks
            losses["depth"] = losses["depth"] * math.nan
        return losses

    monkeypatch.setattr(train, "task_losses", poisoned)
    with pytest.raises(FloatingPointError, match=r"'depth'.*nan.*epoch 2.*last good checkpoint"):
        train_or_load(config, root=tmp_path)
    directory = run_directory(config, tmp_path)
    assert not (directory / "metrics.json").exists()
    assert [r["epoch"] for r in json.loads((directory / "history.json").read_text())] == [1]
    import torch

    assert torch.load(directory / "checkpoint.pt", weights_only=False)["epoch"] == 0


@pytest.mark.parametrize("field, value, message", [
    ("model", "resnet_mtl", "model='resnet_mtl'"),
    ("tasks", ("semseg", "albedo"), "tasks='albedo'"),
    ("backbone", "vgg16", "backbone='vgg16'"),
    ("weighting", "magic", "weighting='magic'"),
    ("size", (60, 64), "size=(60, 64)"),
    ("optimizer", "lbfgs", "optimizer='lbfgs'"),
    ("loss_weights", {"normals": 2.0}, "loss_weights"),
])
def test_invalid_configs_fail_before_training_naming_the_field(tmp_path, field, value, message):
    config = tiny(**{field: value})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_or_load(config, root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_task_missing_from_the_dataset_is_rejected(tmp_path, monkeypatch):
    from mtl_core import data

    class DepthOnly:
        tasks = ("depth",)

    monkeypatch.setitem(data.DATASETS, "depth_only", DepthOnly)
    with pytest.raises(ValueError, match="no 'semseg' annotations"):
        train_or_load(tiny(dataset="depth_only"), root=tmp_path)


def test_cli_reports_invalid_config_and_has_help(tmp_path):
    proc = cli("train", "--runs", str(tmp_path), "--model", "nope", "--epochs", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "model='nope'" in err and not any(tmp_path.iterdir())
    proc = cli("train", "--help")
    out, _ = proc.communicate(timeout=120)
    for option in ("--model", "--tasks", "--weighting", "--precision", "--train-domains", "--force"):
        assert option in out


def test_data_command_builds_every_set_the_suite_trains_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_CORE_DATA", str(tmp_path))
    assert cli_main(["data", "--profile", "ci", "--workers", "1"]) == 0

    def cached():
        return sorted(p.name for p in (tmp_path / "synthetic").iterdir() if p.is_dir())

    built = cached()
    assert len(built) == 5 and any(n.startswith("train-render-") and "-s1-" in n for n in built)
    # sensor + render training takes its render part from the next seed (make_datasets): no new set
    config = TrainConfig(train_domains=("sensor", "render"), val_domain="sensor", num_train=64, num_val=32)
    train.make_datasets(config)
    assert cached() == built


def test_cli_results_table(tmp_path):
    train_or_load(tiny(epochs=1), root=tmp_path)
    proc = cli("results", "--runs", str(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "mtl_baseline" in out and "depth/rmse" in out


def test_torchrun_two_processes_match_one_process(tmp_path):
    """DDP with 2 CPU processes and the same global batch ends close to the single-process run.

    Not bit-identical: each process normalises BatchNorm over its half of the batch, and gradients
    are averaged in a different order. Tolerance: 10% relative on every metric."""
    config = tiny(epochs=2, precision="fp32")
    single = train_or_load(config, root=tmp_path / "single").metrics
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "mtl_core", *cli_args(config, tmp_path / "ddp")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = load_results(tmp_path / "ddp")
    assert len(table) == 1
    ddp = json.loads((run_directory(config, tmp_path / "ddp") / "metrics.json").read_text())
    # continuous quantities: after 2 epochs mIoU is an argmax statistic near the one-class floor, which
    # a half-batch BatchNorm difference can flip from one class to another
    for key in ("val_loss/semseg", "depth/rmse", "depth/abs_rel"):
        assert ddp[key] == pytest.approx(single[key], rel=0.10), key


class _Built(Exception):
    pass


def test_networks_of_different_tasks_or_seeds_start_from_different_weights(monkeypatch):
    """RSA compares single-task networks: identical initial weights would show up as affinity."""
    first_weights, real = [], train.build_model

    def capture(*args, **kwargs):
        model = real(*args, **kwargs)
        first_weights.append(next(model.backbone.parameters()).detach().clone())
        raise _Built

    monkeypatch.setattr(train, "build_model", capture)
    for tasks, seed in ((("semseg",), 0), (("depth",), 0), (("semseg",), 1), (("semseg",), 0)):
        with pytest.raises(_Built):
            fit(tiny(model="single_task", tasks=tasks, seed=seed, epochs=1))
    semseg, depth, other_seed, again = first_weights
    assert not torch.equal(semseg, depth) and not torch.equal(semseg, other_seed)
    assert torch.equal(semseg, again)  # a config always starts from the same weights


def test_a_run_records_and_prints_its_device_and_precision(tmp_path, capsys):
    result = train_or_load(tiny(epochs=1), root=tmp_path)
    assert list(result.history["device"]) == ["cpu"]
    # auto: what this machine chose (fp32, or bf16 where native and measured faster)
    assert list(result.history["precision"]) == [train.resolved_precision("auto")]
    assert f"training on {train.describe_precision('auto')}" in capsys.readouterr().out
    assert train.describe_precision("fp32").startswith("cpu, fp32 (asked for)")
    forced = train_or_load(tiny(epochs=1, precision="fp32"), root=tmp_path)
    assert list(forced.history["precision"]) == ["fp32"]


def test_an_epoch_records_its_cpu_time_and_threads(tmp_path):
    # the CPU seconds compare runs trained under different machine loads (05's cost column)
    result = train_or_load(tiny(epochs=2), root=tmp_path)
    assert list(result.history["threads"]) == [torch.get_num_threads()] * 2
    cpu, wall = result.history["cpu_seconds"], result.history["seconds"]
    assert (cpu > 0).all()
    # a process cannot use more CPU time than its threads have wall time (slack for clock granularity)
    assert (cpu <= wall * result.history["threads"] + 0.05).all()


def test_auto_precision_on_a_cpu_follows_native_support_and_the_measured_speedup(monkeypatch):
    cpu = torch.device("cpu")

    def unmeasurable():
        raise AssertionError("measured on a CPU without native bf16")

    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(train, "cpu_bf16_speedup", unmeasurable)
    assert train.autocast_dtype("auto", cpu) is None and train.resolved_precision("auto", cpu) == "fp32"
    assert "no AVX512-BF16 / AMX" in train.describe_precision("auto", cpu)
    with pytest.raises(ValueError, match="precision='bf16'"):
        train.autocast_dtype("bf16", cpu)
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(train, "cpu_bf16_speedup", lambda: 1.6)
    assert train.autocast_dtype("auto", cpu) == torch.bfloat16
    text = train.describe_precision("auto", cpu)
    assert "bf16 autocast (auto" in text and "1.60x" in text
    assert train.autocast_dtype("fp32", cpu) is None
    monkeypatch.setattr(train, "cpu_bf16_speedup", lambda: 1.02)  # native but not faster: fp32
    assert train.autocast_dtype("auto", cpu) is None and train.autocast_dtype("bf16", cpu) == torch.bfloat16
    assert train.describe_precision("auto", cpu).startswith("cpu, fp32 (auto")


def test_the_bf16_speedup_is_measured_once_per_machine_and_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_CORE_CACHE", str(tmp_path / "cache"))
    calls = []

    def step(dtype, repeats=5):
        calls.append(dtype)
        return 1.0 if dtype is not None else 2.0  # bf16 twice as fast

    monkeypatch.setattr(train, "_time_conv_step", step)
    assert train.cpu_bf16_speedup() == pytest.approx(2.0)
    measured = len(calls)
    assert measured >= 2 and {None, torch.bfloat16} <= set(calls)
    assert train.cpu_bf16_speedup() == pytest.approx(2.0) and len(calls) == measured  # read, not measured
    kept = json.loads(train.precision_cache_path().read_text())
    assert list(kept.values()) == [2.0] and torch.__version__ in next(iter(kept))
    train.precision_cache_path().write_text("{not json")  # a damaged cache is measured again
    assert train.cpu_bf16_speedup() == pytest.approx(2.0) and len(calls) == 2 * measured


def test_the_conv_step_timer_runs_both_precisions():
    assert train._time_conv_step(None, repeats=1) > 0
    if train.cpu_has_native_bf16():
        assert train._time_conv_step(torch.bfloat16, repeats=1) > 0


def test_bf16_trains_dilated_models_in_the_contiguous_layout():
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    dilated = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3, padding=1), torch.nn.Conv2d(24, 16, 3, padding=2,
                                                                                       dilation=2))
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3, padding=1))
    assert train.training_layout(dilated, bf16, cpu) == torch.contiguous_format
    assert train.training_layout(dilated, None, cpu) == torch.channels_last
    assert train.training_layout(plain, bf16, cpu) == torch.channels_last
    if not train.cpu_has_native_bf16():
        return
    # the oneDNN case behind the rule (24 input channels, dilation 2, 32 px): in the contiguous layout the
    # bf16 weight gradient is finite and close to fp32's
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 24, 32, 32, generator=generator).relu()
    weight = torch.randn(16, 24, 3, 3, generator=generator) * 0.1
    grad_out = torch.randn(16, 16, 32, 32, generator=generator) * 0.01

    def weight_grad(dtype):
        w = weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=bf16, enabled=dtype is not None):
            y = torch.nn.functional.conv2d(x, w, None, 1, 2, 2)
        return torch.autograd.grad(y, w, grad_out.to(y.dtype))[0].float()

    exact, rounded = weight_grad(None), weight_grad(bf16)
    assert torch.isfinite(rounded).all()
    assert (rounded - exact).norm() / exact.norm() < 0.02


def test_a_dilated_detector_trains_in_bf16_without_diverging(tmp_path, monkeypatch):
    """The ci SSD (cnn backbone kept at 1/4 by dilation, 24-channel stage) diverged at step 2 in bf16
    channels_last; in the layout training_layout picks it trains (bf16 where the CPU has it, else the
    machine's "auto", fp32)."""
    from mtl_core import experiments

    precision = "bf16" if train.cpu_has_native_bf16() else "auto"
    config = experiments.base_config("ci", model="ssd", tasks=("detection",), precision=precision, epochs=1,
                                     num_train=48, num_val=16, **experiments.DETECTOR)
    assert config.backbone_options["widths"][2] == 24  # the shape of the oneDNN case
    metrics = fit(config)
    assert math.isfinite(metrics["detection/map50"])
