"""The notebook suite: train every run the selected notebooks declare, then execute the notebooks through
papermill, in dependency order, into outputs/<profile>/, and write a report that links them and shows
their headline tables.

    python -m mtl_core suite --profile quick [--jobs 2] [--only 03_mtinet_ablation ...]
    python -m mtl_core plan --profile full [--only ...]      # the runs it would train, without training

Training first: every selected notebook declares the stored runs it needs (experiments.planned_runs,
and the affinity probe of 02 and 05, experiments.planned_probes); the suite deduplicates them by config
hash, skips those already stored, and trains the others in a pool of `jobs` processes, longest first
(estimate_seconds), each through the run store (runs.train_or_load: locking, resume). A run that fails
is reported by name with its error and the others go on; a notebook that needs it fails without
executing. Then the notebooks execute on the stored runs, `jobs` at a time: each reads its runs from
the store instead of training them.

Each notebook writes its figures and a `summary.md` (its headline table) into its own folder
outputs/<profile>/<notebook>/. A failing notebook is reported with its failing cell; the others still
run (those that depend on it are skipped) and the exit code is 1. The report covers the latest result
of every notebook executed into the folder, so a `--only` run updates its notebooks and keeps the others.

Every notebook runs on the project's Jupyter kernel `mtl_core` (registered in this environment on
first use), and gets only the parameters it declares: a misspelt parameter is refused by name.
`MTL_CORE_CELL_TIMEOUT` (seconds) limits each cell: a cell that exceeds it fails its notebook.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .data.cache import exit_with_parent, write_text_atomic
from .profiles import PROFILES
from .train import TrainConfig

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = PROJECT / "notebooks"

# notebook -> the notebooks that execute before it (a notebook is skipped when one of them fails). The
# runs they share in the store are trained before any notebook executes; what else they share is here.
DEPENDS = {
    "00_data_tour": [],
    "01_train": [],
    "01b_sharing": [],  # reads only stored runs, which the pool trains before any notebook
    "02_task_affinity_per_scale": [],
    "03_mtinet_ablation": [],
    "04_rock_ablation": [],
    # 02's gradient-affinity measurement (affinity.training_affinity: a training run outside the run
    # store, cached without a lock) is reused by 05's gradient cosines instead of measured twice at once
    "05_loss_weighting": ["02_task_affinity_per_scale"],
    "06_inspector": ["01_train", "03_mtinet_ablation", "04_rock_ablation"],  # shows their runs
}
NOTEBOOKS = list(DEPENDS)
KERNEL = "mtl_core"  # the kernel every committed notebook names
KERNEL_DISPLAY_NAME = "Python (mtl_core)"


def ensure_kernel() -> str:
    """Register the kernel `mtl_core` for this Python in this environment (sys.prefix, not per user: two
    checkouts never overwrite each other's) unless it is there already; return its name."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def python_of_kernel() -> Path | None:
        try:
            return Path(KernelSpecManager().get_kernel_spec(KERNEL).argv[0]).resolve()
        except NoSuchKernel:
            return None

    here = Path(sys.executable).resolve()
    if python_of_kernel() != here:
        install(kernel_name=KERNEL, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix)
        if python_of_kernel() != here:  # another registration of the name takes precedence over ours
            where = KernelSpecManager().find_kernel_specs().get(KERNEL)
            raise RuntimeError(f"the Jupyter kernel {KERNEL!r} at {where} runs {python_of_kernel()}, not "
                               f"{here}: remove it (`jupyter kernelspec remove {KERNEL}`) and run again")
    return KERNEL


ENGINE = "mtl_core"  # papermill engine name: nbclient without its Output-widget mirror (run_notebook)


def _register_engine() -> None:
    """papermill's nbclient engine with one change: nbclient mirrors ipywidgets' Output widgets by sending
    comm messages on the kernel's shell socket while it polls that same socket for the cell's reply.
    The send swallows the socket's edge-triggered wake-up, so the reply sits unread until the poll times
    out: the cell then "completes" after exactly the cell time limit, or never without one. Without the
    mirror, what an Output widget captures lands in the cell's own outputs, which is what an executed
    (non-interactive) notebook needs anyway."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import Engine, papermill_engines

    class Client(PapermillNotebookClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.widget_registry = {}

    class NoOutputMirrorEngine(Engine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs.pop("input_path", None)
            client = Client(nb_man, kernel_name=kernel_name, timeout=execution_timeout,
                            startup_timeout=start_timeout, log_output=log_output, stdout_file=stdout_file,
                            stderr_file=stderr_file, **kwargs)
            return client.execute()

    papermill_engines.register(ENGINE, NoOutputMirrorEngine)


def declared_parameters(source: Path) -> dict[str, dict]:
    """The parameters a notebook declares in its `parameters` cell (name -> papermill's description)."""
    import papermill

    return papermill.inspect_notebook(str(source))


def check_parameters(source: Path, parameters: dict) -> None:
    """Refuse parameters the notebook does not declare (papermill would only warn and run the defaults)."""
    declared = declared_parameters(source)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{source.name}: unknown parameter(s) {unknown}; it declares {sorted(declared)}")


@dataclass
class NotebookResult:
    name: str
    status: str  # "passed", "failed" or "skipped"
    seconds: float = 0.0
    output: Path | None = None
    error: str = ""  # the failing cell and exception, for a failed notebook
    summary: str = ""  # the notebook's summary.md
    finished: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))


@dataclass
class SuiteReport:
    profile: str
    results: list[NotebookResult] = field(default_factory=list)
    path: Path | None = None
    training: str = ""  # what the training pool did, one line
    runs: list[RunOutcome] = field(default_factory=list)  # what the pool trained or failed to train

    @property
    def failed_runs(self) -> list[str]:
        """'<run name>: <error>' of each run that failed to train."""
        return [f"{o.run.name}: {o.error}" for o in self.runs if o.status == "failed"]

    @property
    def passed(self) -> bool:
        return all(r.status == "passed" for r in self.results)


def _describe_failure(exc: Exception, executed: Path) -> str:
    """The failing cell and exception: from papermill's PapermillExecutionError, or, for a cell that
    exceeded the time limit, the last cell that started in the executed notebook."""
    if hasattr(exc, "exec_count"):
        return (f"cell [{exc.exec_count}] (index {exc.cell_index}) raised {exc.ename}: {exc.evalue}\n\n"
                f"```\n{exc.source}\n```")
    from nbclient.exceptions import CellTimeoutError

    if isinstance(exc, CellTimeoutError) and executed.exists():
        import nbformat

        cells = nbformat.read(executed, as_version=4).cells
        started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
        if started:
            index = started[-1]
            limit = os.environ.get("MTL_CORE_CELL_TIMEOUT")
            return (f"cell (index {index}) exceeded the time limit of {limit} s per cell "
                    f"(MTL_CORE_CELL_TIMEOUT)\n\n```\n{cells[index].source}\n```")
    return f"{type(exc).__name__}: {exc}"


def run_notebook(name: str, profile: str, output_root: Path,
                 parameters: dict | None = None) -> NotebookResult:
    """Execute one notebook into output_root/<name>.ipynb (figures and summary in output_root/<name>/).
    Raises ValueError, before anything runs, for a parameter the notebook does not declare."""
    import papermill

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"notebook {name!r}: {source} does not exist; choose from {NOTEBOOKS}")
    out_dir = output_root / name
    target = output_root / f"{name}.ipynb"
    params = {"profile": profile, "output_dir": str(out_dir), **(parameters or {})}
    check_parameters(source, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    timeout = os.environ.get("MTL_CORE_CELL_TIMEOUT")  # seconds per cell; unset: no limit
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")  # executed notebooks: one line per epoch, no bars
    _register_engine()
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(PROJECT),
                                   execution_timeout=int(timeout) if timeout else None, progress_bar=False,
                                   kernel_name=ensure_kernel(), engine_name=ENGINE)
    except Exception as exc:  # noqa: BLE001 -- any failure is reported and the suite goes on
        return NotebookResult(name, "failed", time.perf_counter() - start, target,
                              _describe_failure(exc, target))
    summary = out_dir / "summary.md"
    return NotebookResult(name, "passed", time.perf_counter() - start, target,
                          summary=summary.read_text() if summary.exists() else "")


def _load_state(output_root: Path) -> dict[str, dict]:
    """The latest result of every notebook executed into `output_root` (suite.json), by earlier
    invocations too: a `--only` run updates its notebooks' entries and keeps the others'."""
    path = output_root / "suite.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # first run, or an unreadable file: start afresh
        return {}


def write_report(report: SuiteReport, output_root: Path, wall_seconds: float | None = None) -> Path:
    """report.md over every notebook with a result in `output_root`: this invocation's, and the latest
    result of the notebooks it did not execute (marked as earlier). suite.json keeps that state."""
    state = _load_state(output_root)
    for r in report.results:
        state[r.name] = {"status": r.status, "seconds": r.seconds, "error": r.error, "finished": r.finished}
    ours = {r.name for r in report.results}
    names = [n for n in NOTEBOOKS if n in state] + sorted(n for n in state if n not in NOTEBOOKS)
    lines = [f"# mtl_core notebook suite — profile `{report.profile}`", ""]
    if wall_seconds is not None:
        lines += [f"This invocation: {len(report.results)} notebook(s) in {wall_seconds / 60:.1f} min "
                  "(wall clock).", ""]
    if report.training:
        lines += [report.training, ""] + [f"- **Run failed**: {failure}" for failure in report.failed_runs]
        lines += [""] if report.failed_runs else []
    from .train import describe_precision

    lines += [f"Training on this machine: {describe_precision()} (each run's history records its device "
              "and precision).", ""]
    lines += ["| notebook | status | minutes | figures | finished |", "|---|---|---|---|---|"]
    for name in names:
        entry, folder = state[name], output_root / name
        figures = sorted(folder.glob("*.png")) if folder.exists() else []
        link = f"[{name}]({name}.ipynb)" if entry["status"] != "skipped" else name
        when = entry["finished"] + ("" if name in ours else " (earlier invocation)")
        minutes = entry["seconds"] / 60
        lines.append(f"| {link} | {entry['status']} | {minutes:.1f} | {len(figures)} | {when} |")
    for name in names:
        entry, folder = state[name], output_root / name
        lines += ["", f"## {name}", ""]
        if entry["status"] == "failed":
            lines += ["**Failed**: " + entry["error"]]
        elif entry["status"] == "skipped":
            lines += [f"Skipped: {entry['error']}"]
        else:
            summary = folder / "summary.md"
            lines += [summary.read_text() if summary.exists() else "_(no summary)_"]
            lines += [""] + [f"![{f.stem}]({name}/{f.name})" for f in sorted(folder.glob("*.png"))]
    write_text_atomic(output_root / "suite.json", json.dumps(state, indent=1))
    write_text_atomic(output_root / "report.md", "\n".join(lines) + "\n")  # never half a report
    return output_root / "report.md"


# ------------------------------------------------------------------------------ training before notebooks


def notebook_parameters(name: str, parameters: dict | None = None) -> dict:
    """The parameters notebook `name` runs with, but profile and output_dir: the defaults of its
    parameters cell, updated by those of `parameters` it declares (as run_suite passes them)."""
    declared = declared_parameters(NOTEBOOK_DIR / f"{name}.ipynb")
    values = {key: ast.literal_eval(spec["default"]) for key, spec in declared.items()}
    values.update({k: v for k, v in (parameters or {}).items() if k in declared})
    return {k: v for k, v in values.items() if k not in ("profile", "output_dir")}


# The estimated training time of a run orders the pool, longest first. It is the images a run trains
# (epochs x num_train x training domains) times a per-image cost: the CPU seconds per image that a
# stored run of the same cost_key measured (measured_seconds_per_image), else one from the model's
# size: 1.9 ms plus 177 ms per GMAC of one forward pass (experiments.resources). That line is fitted
# to the epochs quoted in experiments.py (1000 images, one thread, 2-core CPU, fp32): single-task
# network 9 s (0.040 GMACs), MTL baseline 16 s (0.085), MTI-Net 26 s (0.113), PAD-Net 38 s (0.204),
# each within 15 %; the fixed part covers the detectors, whose GMACs are tiny (an SSD epoch: ~3 s).
# Weightings that take per-task gradients (weighting.needs_task_gradients) cost ~1.7x per step (an
# MGDA run: 29 s per epoch against the fixed baseline's 17 s). Validation passes are left out (a few %
# of a run).
SECONDS_PER_IMAGE = 0.0019
# 02's affinity probe trains the MTL baseline and measures every 25 steps: ~7 min against ~6.4 for the
# plain run in quick (the measurements cost the rest)
PROBE_COST_FACTOR = 1.1
SECONDS_PER_GMAC_IMAGE = 0.177
TASK_GRADIENT_FACTOR = 1.7


@cache
def _gmacs(model_json: str) -> float:
    from .experiments import resources

    return resources(TrainConfig.from_dict(json.loads(model_json)))["GMACs"]


# the fields the model's size depends on: one GMAC count per distinct model, not per run
MODEL_FIELDS = ("model", "tasks", "backbone", "backbone_options", "model_options", "size")


def cost_key(config: TrainConfig, precision: str | None = None) -> str:
    """What a training step's cost depends on: the model, the batch size, the weighting (per-task
    gradients or not) and the precision (`precision`, e.g. what a stored run recorded; else what this
    machine trains `config` in)."""
    from .train import resolved_precision

    fields = {k: getattr(config, k) for k in (*MODEL_FIELDS, "batch_size", "weighting")}
    precision = precision or resolved_precision(config.precision)
    return json.dumps({**fields, "precision": precision}, default=list, sort_keys=True)


def measured_seconds_per_image(root: str | os.PathLike | None = None) -> dict[str, float]:
    """{cost_key: CPU seconds per training image} from the one-thread epochs of the stored runs (their
    `cpu_seconds`, the median over every epoch of every run with that key, validation excluded).

    CPU time, not wall-clock time: a run that shared the cores with other processes took longer on
    the clock but about the same CPU time, so these figures are this machine's one-thread cost."""
    from .runs import default_runs_root

    store = Path(root) if root is not None else default_runs_root()
    samples: dict[str, list[float]] = {}
    for history_file in sorted(store.glob("*/history.json")):
        try:
            history = json.loads(history_file.read_text())
            config = TrainConfig.from_dict(json.loads((history_file.parent / "config.json").read_text()))
        except (OSError, ValueError, TypeError):  # a foreign or unreadable run: it has no say
            continue
        images = config.num_train * len(config.train_domains)
        for r in history:  # keyed by the precision each epoch trained at, as its record says
            if r.get("threads") == 1 and r.get("cpu_seconds", 0) > 0:
                samples.setdefault(cost_key(config, r.get("precision")), []).append(r["cpu_seconds"] / images)
    return {key: statistics.median(values) for key, values in samples.items()}


def estimate_seconds(config: TrainConfig, epochs_done: int = 0,
                     measured: dict[str, float] | None = None) -> float:
    """Estimated seconds to train what is left of `config` on one thread: from `measured`
    (measured_seconds_per_image) when a stored run of the same cost_key measured it, else from the
    model's GMACs (see SECONDS_PER_IMAGE)."""
    from .weighting import WEIGHTINGS

    per_image = (measured or {}).get(cost_key(config))
    if per_image is None:
        model = {k: getattr(config, k) for k in MODEL_FIELDS}
        per_image = SECONDS_PER_IMAGE + SECONDS_PER_GMAC_IMAGE * _gmacs(json.dumps(model, default=list))
        if WEIGHTINGS[config.weighting].needs_task_gradients:
            per_image *= TASK_GRADIENT_FACTOR
    images = (config.epochs - epochs_done) * config.num_train * len(config.train_domains)
    return max(0, images) * per_image


@dataclass
class PlannedRun:
    """A stored run the selected notebooks need, once per config hash."""

    config: TrainConfig
    directory: Path  # its run directory (runs.run_directory)
    needed_by: list[tuple[str, str]]  # (notebook, label) of each notebook that uses it
    epochs_done: int = 0  # finished epochs in the store (an interrupted run resumes after them)
    complete: bool = False  # stored: nothing to train
    seconds: float = 0.0  # estimated training time left, one thread (estimate_seconds)
    # an affinity probe (experiments.planned_probes): trained by affinity.training_affinity with a
    # measurement every `probe_every` steps, stored as one file (`directory`), not as a run
    probe_every: int | None = None
    measured: bool = False  # `seconds` from stored runs' CPU time (measured_seconds_per_image), not GMACs

    @property
    def name(self) -> str:
        """How reports name the run: its notebooks' labels and its run directory."""
        users = ", ".join(f"{notebook}: {label}" for notebook, label in self.needed_by)
        return f"{users} ({self.directory.name})"


@dataclass
class RunOutcome:
    run: PlannedRun
    status: str  # "trained" or "failed"
    seconds: float = 0.0
    error: str = ""


def _stored_state(directory: Path) -> tuple[bool, int]:
    history = directory / "history.json"
    try:
        done = len(json.loads(history.read_text())) if history.exists() else 0
    except json.JSONDecodeError:  # written atomically, so only a foreign file reads badly: redo it
        done = 0
    return (directory / "metrics.json").exists(), done


def plan_runs(profile: str, notebooks: list[str], parameters: dict | None = None,
              root: str | os.PathLike | None = None) -> tuple[list[PlannedRun], dict[str, str]]:
    """Every stored run the `notebooks` need in `profile` (experiments.planned_runs with each notebook's
    parameters), one per config hash in the order first declared, with its state in the store; and
    {notebook: error} for the notebooks whose runs could not be planned (e.g. a dataset without a task
    they need: executed, they fail in their own cell as before).

    A notebook of experiments.PICKS_STORED_RUNS (06) needs its own configs only where no stored or
    planned run is like them (inspector.find_run); otherwise it is counted among that run's users."""
    import pandas as pd

    from .affinity import probe_path
    from .experiments import PICKS_STORED_RUNS, planned_probes, planned_runs
    from .inspector import find_run
    from .runs import default_runs_root, load_results, run_directory

    store = Path(root) if root is not None else default_runs_root()
    measured = measured_seconds_per_image(store)  # the store's own one-thread costs, where it has them
    plan: dict[str, PlannedRun] = {}  # run directory name -> run
    problems: dict[str, str] = {}

    def need(config: TrainConfig, notebook: str, label: str, directory: Path | None = None) -> None:
        directory = directory or run_directory(config, store)
        if directory.name not in plan:
            complete, done = _stored_state(directory)
            plan[directory.name] = PlannedRun(config, directory, [], done, complete,
                                              0.0 if complete else estimate_seconds(config, done, measured),
                                              measured=cost_key(config) in measured)
        plan[directory.name].needed_by.append((notebook, label))

    # the notebooks that pick stored runs last: they see what the others will have trained
    for notebook in sorted(notebooks, key=lambda n: n in PICKS_STORED_RUNS):
        try:
            declared = planned_runs(notebook, profile, **notebook_parameters(notebook, parameters))
            probes = planned_probes(notebook, profile, **notebook_parameters(notebook, parameters))
        except Exception as exc:  # noqa: BLE001 -- reported; the notebook still executes
            problems[notebook] = f"{type(exc).__name__}: {exc}"
            continue
        for label, (config, every) in probes.items():
            path = probe_path(config, every, store)
            if path.name not in plan:
                complete = path.exists()
                plan[path.name] = PlannedRun(config, path, [], 0, complete, 0.0 if complete else
                                             estimate_seconds(config, 0, measured) * PROBE_COST_FACTOR, every,
                                             measured=cost_key(config) in measured)
            plan[path.name].needed_by.append((notebook, label))
        picks = notebook in PICKS_STORED_RUNS
        if picks:  # the store as the notebook will see it: stored runs, and the planned ones as complete
            planned = pd.DataFrame([{"run": name, **r.config.to_dict(), "status": "complete"}
                                    for name, r in plan.items() if r.probe_every is None])
            table = pd.concat([load_results(store), planned], ignore_index=True)
        for label, configs in declared.items():
            for config in configs:
                like = find_run(table, config, store) if picks else None
                if like in plan:  # a run another notebook declares
                    need(plan[like].config, notebook, label)
                elif like is not None:  # a complete stored run (its name may predate a hash change)
                    stored = TrainConfig.from_dict(json.loads((store / like / "config.json").read_text()))
                    need(stored, notebook, label, store / like)
                else:
                    need(config, notebook, label)
    return list(plan.values()), problems


def _start_training_process(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # a killed suite's pool processes end with it (their runs resume from the last finished epoch)
    exit_with_parent(os.getppid())


def _train_run(config: TrainConfig, root: str, probe_every: int | None = None) -> tuple[bool, float, str]:
    """In a pool process: train `config` through the run store (or find it stored, e.g. trained by another
    process meanwhile); with `probe_every`, measure it with affinity.training_affinity instead. Returns
    (trained, seconds, error); the error as text, since not every exception pickles back to the parent."""
    import traceback

    from .affinity import probe_path, training_affinity
    from .experiments import progress_enabled, run

    start = time.perf_counter()
    try:
        if probe_every is None:
            trained = run(config, root).trained
        else:
            trained = not probe_path(config, probe_every, root).exists()
            training_affinity(config, every=probe_every, root=root, progress=progress_enabled())
    except Exception as exc:  # noqa: BLE001 -- reported by run, the other runs go on
        traceback.print_exc()  # the whole traceback on the suite's console
        return False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    return trained, time.perf_counter() - start, ""


def train_planned(runs: list[PlannedRun], processes: int, threads: int,
                  root: str | os.PathLike | None = None, log=print) -> list[RunOutcome]:
    """Train `runs` in a pool of `processes` spawned processes with `threads` torch threads each, longest
    (estimated) first so that the last runs to start are short ones. A run that fails is reported by name
    and the others go on; a process that dies fails the runs it had not finished."""
    from .runs import default_runs_root

    todo = sorted(runs, key=lambda r: r.seconds, reverse=True)
    if not todo:
        return []
    root = str(root if root is not None else default_runs_root())
    # spawn, not fork: a forked copy of a parent that already ran torch can deadlock in its thread pools
    context = multiprocessing.get_context("spawn")
    outcomes = []
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_training_process,
                               initargs=(threads,))
    try:
        futures = {pool.submit(_train_run, r.config, root, r.probe_every): r for r in todo}
        for future in as_completed(futures):
            run = futures[future]
            try:
                trained, seconds, error = future.result()
            except Exception as exc:  # noqa: BLE001 -- e.g. BrokenProcessPool: the process died
                trained, seconds, error = False, 0.0, f"{type(exc).__name__}: {exc}"
            outcomes.append(RunOutcome(run, "failed" if error else "trained", seconds, error))
            finished = f"{'trained' if trained else 'found stored'} in {seconds / 60:.1f} min"
            log(f"[suite] run {run.name}: " + (f"FAILED: {error}" if error else finished))
    except BaseException:
        # e.g. Ctrl-C: stop the processes rather than let them work through their queue (no public
        # call before Python 3.14); their runs resume from the last finished epoch next time
        for process in list(pool._processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def plan_table(runs: list[PlannedRun]) -> str:
    """The planned runs as text, one line per notebook and label: model, seed, run directory, state in
    the store, estimated minutes left on one thread, and the other notebooks that use the same run."""
    import pandas as pd

    rows = []
    for run in runs:
        state = ("stored" if run.complete else
                 f"partial ({run.epochs_done}/{run.config.epochs} epochs)" if run.epochs_done else "to train")
        for notebook, label in run.needed_by:
            others = sorted({n for n, _ in run.needed_by} - {notebook})
            rows.append({"notebook": notebook, "label": label, "model": run.config.model,
                         "seed": run.config.seed, "run": run.directory.name, "state": state,
                         "est. min": round(run.seconds / 60, 1),
                         "shared with": ", ".join(n.split("_")[0] for n in others)})
    if not rows:
        return "no runs"
    return pd.DataFrame(rows).sort_values("notebook", kind="stable").to_string(index=False)


def pool_seconds(runs: list[PlannedRun], processes: int) -> float:
    """Estimated wall time of training `runs` in `processes` processes, longest first (each process
    taking the next run when it finishes one), at the one-thread speed of estimate_seconds."""
    finish = [0.0] * processes
    for run in sorted(runs, key=lambda r: r.seconds, reverse=True):
        finish[finish.index(min(finish))] += run.seconds
    return max(finish)


def default_jobs() -> int:
    """Processes in the training pool (and notebooks executed at once): one per core, one thread each.
    benchmarks/pool.py measured that 2 processes x 1 thread train two runs sooner than 1 process x 2
    threads on a 2-core CPU (see its docstring for the figures)."""
    return os.cpu_count() or 1


def run_suite(profile: str = "quick", jobs: int | None = None, output_root: str | os.PathLike | None = None,
              only: list[str] | None = None, parameters: dict | None = None, log=print,
              threads: int | None = None) -> SuiteReport:
    """Train the runs the selected notebooks declare (`jobs` processes of `threads` torch threads each;
    default: default_jobs() and the cores shared among them), then execute the notebooks, `jobs` at
    a time, in dependency order."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: choose from {list(PROFILES)}")
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be at least 1")
    threads = max(1, (os.cpu_count() or 1) // jobs) if threads is None else threads
    if threads < 1:
        raise ValueError(f"threads={threads}: must be at least 1")
    selected = list(only or NOTEBOOKS)
    unknown = [n for n in selected if n not in DEPENDS]
    if unknown:
        raise ValueError(f"only: unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    for name in selected:
        if not (NOTEBOOK_DIR / f"{name}.ipynb").exists():
            raise FileNotFoundError(f"notebook {name!r}: {NOTEBOOK_DIR / (name + '.ipynb')} is missing")
    output_root = Path(output_root or PROJECT / "outputs" / profile)
    output_root.mkdir(parents=True, exist_ok=True)
    ensure_kernel()  # once, before the notebooks run side by side
    # the kernels and training processes share the cores: each gets its share of threads (the kernels
    # through the environment they inherit)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    # idle OpenMP threads sleep instead of spinning, so parallel processes do not starve each other
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")  # one line per epoch from every process, no bars

    report, done, start = SuiteReport(profile), {}, time.perf_counter()
    planned, problems = plan_runs(profile, selected, parameters)
    for name, problem in problems.items():
        log(f"[suite] {name}: its runs could not be planned ({problem}); it trains what it needs itself")
    todo = [r for r in planned if not r.complete]
    log(f"[suite] {len(planned)} run(s) declared, {len(planned) - len(todo)} stored: training {len(todo)} in "
        f"{jobs} process(es) x {threads} thread(s), longest first "
        f"(estimated {sum(r.seconds for r in todo) / 60:.0f} min on one thread)")
    outcomes = train_planned(todo, jobs, threads, log=log)
    failed_runs = [o for o in outcomes if o.status == "failed"]
    report.training = (f"Training before the notebooks: {len(outcomes) - len(failed_runs)} run(s) trained, "
                       f"{len(planned) - len(todo)} stored, {len(failed_runs)} failed, in "
                       f"{(time.perf_counter() - start) / 60:.1f} min ({jobs} process(es) x {threads} "
                       "thread(s)).")
    report.runs = outcomes

    pending = list(selected)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {}
        while pending or running:
            for name in list(pending):
                needs = [d for d in DEPENDS[name] if d in selected]
                failed = [d for d in needs if d in done and done[d].status != "passed"]
                untrained = [o for o in failed_runs if name in {n for n, _ in o.run.needed_by}]
                if failed:
                    done[name] = NotebookResult(name, "skipped", error=f"depends on failed {failed}")
                    pending.remove(name)
                    log(f"[suite] {name}: skipped (depends on {failed})")
                elif untrained:  # it would only fail on them (or train them again)
                    reasons = "; ".join(f"{o.run.name}: {o.error}" for o in untrained)
                    error = f"not executed: run(s) it needs failed to train: {reasons}"
                    done[name] = NotebookResult(name, "failed", error=error)
                    pending.remove(name)
                    log(f"[suite] {name}: failed\n{done[name].error}")
                elif all(d in done for d in needs) and len(running) < jobs:
                    log(f"[suite] {name}: running")
                    # suite-wide parameters (e.g. dataset) go to the notebooks that declare them
                    declared = declared_parameters(NOTEBOOK_DIR / f"{name}.ipynb")
                    own = {k: v for k, v in (parameters or {}).items() if k in declared}
                    running[pool.submit(run_notebook, name, profile, output_root, own)] = name
                    pending.remove(name)
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()
                done[running.pop(future)] = result
                log(f"[suite] {result.name}: {result.status} in {result.seconds / 60:.1f} min"
                    + (f"\n{result.error}" if result.error else ""))
    report.results = [done[name] for name in selected]
    report.path = write_report(report, output_root, time.perf_counter() - start)
    return report
