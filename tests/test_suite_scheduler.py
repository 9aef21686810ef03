"""The suite's run-level scheduler: the runs the notebooks declare (experiments.planned_runs), deduplicated
by config hash, are trained in a pool of processes before the notebooks execute on the stored runs."""

from pathlib import Path

import pytest

from mtl_core import affinity, cli, experiments, suite
from mtl_core.runs import run_directory

DENSE = ["02_task_affinity_per_scale", "03_mtinet_ablation", "05_loss_weighting"]


def _users(run: suite.PlannedRun) -> set[str]:
    return {notebook for notebook, _ in run.needed_by}


def test_plan_declares_shared_runs_once(tmp_path):
    planned, problems = suite.plan_runs("ci", DENSE, root=tmp_path)
    assert not problems
    names = [r.directory.name for r in planned]
    assert len(names) == len(set(names))  # one entry per config hash
    # every run a notebook declares is in the plan, under that notebook and label
    for notebook in DENSE:
        for label, configs in experiments.planned_runs(notebook, "ci").items():
            for config in configs:
                run = next(r for r in planned if r.directory == run_directory(config, tmp_path))
                assert (notebook, label) in run.needed_by
    # 02, 03 and 05 share the single-task networks (Δm's reference, RSA's networks)
    singles = [r for r in planned if r.config.model == "single_task" and r.config.seed == 0]
    assert sorted(r.config.tasks for r in singles) == sorted((t,) for t in experiments.DENSE_TASKS)
    assert all(_users(r) == set(DENSE) for r in singles)
    # 02 alone trains each task a second time (seed + 1: RSA's same-task ceiling)
    second = [r for r in planned if r.config.model == "single_task" and r.config.seed == 1]
    assert sorted(r.config.tasks for r in second) == sorted((t,) for t in experiments.DENSE_TASKS)
    assert all(_users(r) == {"02_task_affinity_per_scale"} for r in second)
    # 03's MTL baseline is 05's fixed-weight method
    baseline = next(r for r in planned if ("05_loss_weighting", "fixed") in r.needed_by)
    assert ("03_mtinet_ablation", "MTL baseline") in baseline.needed_by
    declared = sum(len(r.needed_by) for r in planned)
    # shared: the singles by 3 notebooks, the baseline by 03 and 05, and 02's affinity probe by 05
    assert declared == len(planned) + 2 * len(singles) + 1 + 1
    assert all(not r.complete and r.epochs_done == 0 and r.seconds > 0 for r in planned)


def test_plan_dedups_within_a_notebook_and_reads_the_store(tmp_path):
    # in the full profile 04's stride comparison trains the 1/4 SSD that its main comparison uses
    planned, _ = suite.plan_runs("full", ["04_rock_ablation"], root=tmp_path)
    ssd = next(r for r in planned if ("04_rock_ablation", "SSD") in r.needed_by and r.config.seed == 0)
    assert ("04_rock_ablation", "SSD, 1/4") in ssd.needed_by
    # a stored run is not trained again, an interrupted one only for its remaining epochs
    (ssd.directory / "metrics.json").parent.mkdir(parents=True)
    (ssd.directory / "metrics.json").write_text("{}")
    rock = next(r for r in planned if ("04_rock_ablation", "ROCK") in r.needed_by and r.config.seed == 0)
    rock.directory.mkdir()
    (rock.directory / "history.json").write_text('[{"epoch": 1}]')
    again = {r.directory.name: r for r in suite.plan_runs("full", ["04_rock_ablation"], root=tmp_path)[0]}
    assert again[ssd.directory.name].complete and again[ssd.directory.name].seconds == 0
    partial = again[rock.directory.name]
    assert not partial.complete and partial.epochs_done == 1
    assert partial.seconds == pytest.approx(rock.seconds * (1 - 1 / rock.config.epochs))


def test_inspector_takes_the_runs_other_notebooks_train(tmp_path):
    alone, _ = suite.plan_runs("ci", ["06_inspector"], root=tmp_path)
    assert {label for r in alone for _, label in r.needed_by} == {"MTI-Net", "ROCK"}
    assert all(_users(r) == {"06_inspector"} for r in alone)
    # beside 01 and 04, it shows their MTI-Net and ROCK (inspector.find_run) and trains nothing of its own
    planned, _ = suite.plan_runs("ci", ["01_train", "04_rock_ablation", "06_inspector"], root=tmp_path)
    mtinet = next(r for r in planned if ("06_inspector", "MTI-Net") in r.needed_by)
    rock = next(r for r in planned if ("06_inspector", "ROCK") in r.needed_by)
    assert _users(mtinet) == {"01_train", "06_inspector"}
    assert ("04_rock_ablation", "ROCK") in rock.needed_by  # 04's detector, not 06's own config
    assert all(_users(r) != {"06_inspector"} for r in planned)


def test_cost_estimate_follows_the_measured_epochs():
    def per_epoch(**fields):  # estimated seconds per epoch of 1000 images
        config = experiments.base_config("quick", num_train=1000, **fields)
        return suite.estimate_seconds(config) / config.epochs

    dense = {"tasks": experiments.DENSE_TASKS}
    measured = {"single_task": 9, "mtl_baseline": 16, "mtinet": 26, "padnet": 38}  # experiments.py's figures
    for model, seconds in measured.items():
        estimate = per_epoch(model=model, **({"tasks": ("depth",)} if model == "single_task" else dense))
        assert 0.75 * seconds < estimate < 1.25 * seconds, model
    assert per_epoch(model="mtl_baseline", weighting="mgda", **dense) > 1.5 * per_epoch(model="mtl_baseline",
                                                                                            **dense)
    config = experiments.base_config("quick", model="mtinet", **dense)
    assert suite.estimate_seconds(config, epochs_done=config.epochs // 2) == pytest.approx(
        suite.estimate_seconds(config) / 2)


def _store_history(config, root: Path, records: list[dict]) -> None:
    import json

    directory = run_directory(config, root)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    (directory / "history.json").write_text(json.dumps(records))


def test_cost_estimate_uses_the_cpu_time_stored_runs_measured(tmp_path):
    dense = {"model": "mtinet", "tasks": experiments.DENSE_TASKS}
    config = experiments.base_config("ci", **dense)  # the run 03 plans in ci
    images = config.num_train * len(config.train_domains)
    formula = suite.estimate_seconds(config)
    # two other seeds of the same model measured 0.1 and 0.3 s per image (one thread): median 0.2; a
    # two-thread run, one without CPU times and another model have no say
    _store_history(experiments.base_config("ci", seed=7, **dense), tmp_path,
                   [{"cpu_seconds": 0.1 * images, "threads": 1}, {"cpu_seconds": 0.3 * images, "threads": 1}])
    _store_history(experiments.base_config("ci", seed=8, **dense), tmp_path,
                   [{"cpu_seconds": 0.2 * images, "threads": 1},
                    {"cpu_seconds": 50.0 * images, "threads": 2}])
    _store_history(experiments.base_config("ci", seed=9, **dense), tmp_path, [{"seconds": 99.0 * images}])
    baseline = experiments.base_config("ci", model="mtl_baseline", tasks=experiments.DENSE_TASKS, seed=7)
    _store_history(baseline, tmp_path, [{"cpu_seconds": 9.0 * images, "threads": 1}])
    measured = suite.measured_seconds_per_image(tmp_path)
    assert measured[suite.cost_key(config)] == pytest.approx(0.2)
    assert suite.estimate_seconds(config, 0, measured) == pytest.approx(0.2 * images * config.epochs)
    assert suite.estimate_seconds(config, 1, measured) == pytest.approx(0.2 * images * (config.epochs - 1))
    # another batch size or weighting costs differently: the formula again
    other = experiments.base_config("ci", batch_size=config.batch_size * 2, **dense)
    assert suite.estimate_seconds(other, 0, measured) == pytest.approx(suite.estimate_seconds(other))
    # the plan reads the store it plans over
    planned, _ = suite.plan_runs("ci", ["03_mtinet_ablation"], root=tmp_path)
    mtinet = next(r for r in planned if r.directory == run_directory(config, tmp_path))
    assert mtinet.seconds == pytest.approx(0.2 * images * config.epochs)
    assert abs(formula - mtinet.seconds) > 0.1 * mtinet.seconds  # so the figure did come from the store


def test_notebook_parameters_are_the_declared_defaults_with_the_suites():
    params = suite.notebook_parameters("01_train", {"dataset": "nyud_mt", "not_declared": 1})
    assert params["dataset"] == "nyud_mt" and params["model"] == "mtinet" and params["overrides"] == {}
    assert "not_declared" not in params and "profile" not in params and "output_dir" not in params
    # a parameter a notebook declares but its plan does not know fails the plan, by name
    with pytest.raises(TypeError, match="image"):
        experiments.planned_runs("03_mtinet_ablation", "ci", image=0)


def test_a_failing_run_is_reported_by_name_and_the_others_train(tmp_path):
    store = tmp_path / "runs"
    tiny = {"model": "single_task", "num_train": 16, "num_val": 8, "epochs": 1}
    good = experiments.base_config("ci", tasks=("edge",), **tiny)
    bad = experiments.base_config("ci", tasks=("depth",), dataset="nyud_mt",  # its folder does not exist
                                  data_dir=str(tmp_path / "no_such_folder"), **tiny)
    runs = [suite.PlannedRun(c, run_directory(c, store), [("nb", label)], seconds=1.0)
            for c, label in ((bad, "broken run"), (good, "good run"))]
    lines = []
    outcomes = suite.train_planned(runs, 2, 1, root=store, log=lines.append)
    broken, fine = (next(o for o in outcomes if o.run is run) for run in runs)
    assert broken.status == "failed"
    assert "FileNotFoundError" in broken.error and "no_such_folder" in broken.error
    assert fine.status == "trained" and not fine.error
    assert (run_directory(good, store) / "metrics.json").exists()
    assert not (run_directory(bad, store) / "metrics.json").exists()
    failure = next(line for line in lines if "FAILED" in line)
    assert "nb: broken run" in failure and run_directory(bad, store).name in failure


def test_a_notebook_whose_run_failed_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_CORE_RUNS", str(tmp_path / "runs"))
    missing = str(tmp_path / "no_such_folder")
    report = suite.run_suite("ci", jobs=1, output_root=tmp_path / "out", only=["01_train", "06_inspector"],
                             parameters={"dataset": "nyud_mt", "data_dir": missing}, log=lambda _: None)
    status = {r.name: r for r in report.results}
    assert status["01_train"].status == "failed" and status["06_inspector"].status == "skipped"
    assert "not executed" in status["01_train"].error and "FileNotFoundError" in status["01_train"].error
    assert "01_train: mtinet" in status["01_train"].error
    assert not (tmp_path / "out" / "01_train.ipynb").exists()  # the notebook never started
    assert len(report.failed_runs) == 1 and "06_inspector: MTI-Net" in report.failed_runs[0]
    assert "**Run failed**" in report.path.read_text()


def test_plan_command_lists_runs_without_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTL_CORE_RUNS", str(tmp_path / "runs"))
    assert cli.main(["plan", "--profile", "ci", "--only", *DENSE, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    planned, _ = suite.plan_runs("ci", DENSE)
    declared = sum(len(r.needed_by) for r in planned)
    assert f"{declared} run(s) declared by 3 notebook(s), {len(planned)} distinct; 0 stored" in out
    assert "single_task" in out and "to train" in out and "03, 05" in out
    assert f"estimates: 0 of {len(planned)} from the CPU time" in out  # an empty store measured nothing
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    assert cli.main(["plan", "--profile", "ci", "--only", "nope"]) == 2


@pytest.mark.slow
def test_notebooks_train_nothing_after_the_pool(tmp_path, monkeypatch):
    """The ci suite on notebooks that share runs: everything in the store afterwards was trained by the
    pool, so the notebooks declared every run they use."""
    store = tmp_path / "runs"
    monkeypatch.setenv("MTL_CORE_RUNS", str(store))  # inherited by the pool and the kernels
    monkeypatch.setenv("MTL_CORE_CELL_TIMEOUT", "900")
    only = ["01_train", "04_rock_ablation", "06_inspector"]
    report = suite.run_suite("ci", jobs=2, output_root=tmp_path / "out", only=only, log=lambda _: None)
    assert {r.name: r.status for r in report.results} == dict.fromkeys(only, "passed"), \
        [r.error for r in report.results]
    trained = {o.run.directory.name for o in report.runs if o.status == "trained"}
    stored = {p.name for p in store.iterdir() if p.is_dir()}
    assert trained and stored == trained
    assert all(Path(store, name, "metrics.json").exists() for name in stored)


def test_the_affinity_probe_is_declared_and_trained_by_the_pool(tmp_path):
    """02's gradient-affinity measurement trains in the pool like a run: declared by the plan with the
    notebook's own config and interval, stored as one file, and read (not retrained) afterwards."""
    store = tmp_path / "runs"
    planned, _ = suite.plan_runs("ci", ["02_task_affinity_per_scale"], root=store)
    probes = [r for r in planned if r.probe_every is not None]
    config, every = experiments.affinity_probe("ci", 0, **experiments.study_common("synthetic", None, None))
    assert len(probes) == 1 and probes[0].probe_every == every == experiments.study("ci")["affinity_every"]
    probe = probes[0]
    assert probe.directory == affinity.probe_path(config, every, store) and not probe.complete
    assert probe.seconds == pytest.approx(suite.estimate_seconds(config) * suite.PROBE_COST_FACTOR)
    assert _users(probe) == {"02_task_affinity_per_scale"}
    # 05 measures gradient conflict on the same probe: one entry, two users
    both = [r for r in suite.plan_runs("ci", DENSE, root=store)[0] if r.probe_every is not None]
    assert len(both) == 1 and _users(both[0]) == {"02_task_affinity_per_scale", "05_loss_weighting"}
    small = config.to_dict() | {"num_train": 32, "num_val": 8, "epochs": 1}  # seconds, not minutes
    small = experiments.base_config("ci", **small)
    job = suite.PlannedRun(small, affinity.probe_path(small, 1, store), [("02", "probe")], probe_every=1)
    outcomes = suite.train_planned([job], 1, 1, root=store, log=lambda _: None)
    assert outcomes[0].status == "trained", outcomes[0].error
    records = affinity.training_affinity(small, every=1, root=store)  # read from the file
    assert set(records["kind"]) >= {"cosine", "lookahead"} and records["step"].max() == 32 // 16
    assert not run_directory(small, store).exists()  # a probe is not a run
    again = suite.plan_runs("ci", ["02_task_affinity_per_scale"], root=store)[0]
    assert not next(r for r in again if r.probe_every is not None).complete  # another config: still to do
    affinity.probe_path(config, every, store).write_text("[]")
    again = suite.plan_runs("ci", ["02_task_affinity_per_scale"], root=store)[0]
    stored = next(r for r in again if r.probe_every is not None)
    assert stored.complete and stored.seconds == 0


def test_pool_processes_end_when_the_suite_is_killed(tmp_path, survivors):
    """SIGKILL gives the suite no chance to stop its pool: each pool process must notice on its own, or
    it would train on and hold its run's lock while a restarted suite waits for it."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    script = f"""
import multiprocessing, time
from concurrent.futures import ProcessPoolExecutor
from mtl_core import suite

def work(path):
    import os
    open(path, "w").write(str(os.getpid()))
    time.sleep(300)  # a long run

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=suite._start_training_process, initargs=(1,))
    pool.submit(work, {str(pid_file)!r})
    time.sleep(300)
"""
    (tmp_path / "fake_suite.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "fake_suite.py")], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait(30)

    assert not survivors([worker]), "the pool process outlived the killed suite"
