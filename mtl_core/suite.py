"""The notebook suite: execute every notebook through papermill, in dependency order, into
outputs/<profile>/, and write a report that links them and shows their headline tables.

    python -m mtl_core suite --profile quick [--jobs 2] [--only 03_mtinet_ablation ...]

Each notebook writes its figures and a `summary.md` (its headline table) into its own folder
outputs/<profile>/<notebook>/. Training goes through the run store, so a second suite run, or a
notebook that needs the same config as another, reuses stored runs instead of training again.
A failing notebook is reported with its failing cell; the others still run (those that depend on
it are skipped) and the exit code is 1. The report covers the latest result of every notebook
executed into the folder, so a `--only` run updates its notebooks and keeps the others.

Every notebook runs on the project's Jupyter kernel `mtl_core` (registered in this environment on
first use), and gets only the parameters it declares: a misspelt parameter is refused by name.
`MTL_CORE_CELL_TIMEOUT` (seconds) limits each cell: a cell that exceeds it fails its notebook.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .data.cache import write_text_atomic
from .profiles import PROFILES

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = PROJECT / "notebooks"

# notebook -> the notebooks whose stored runs it reads (it would train them itself otherwise, but
# running after them avoids training the same config twice in parallel)
DEPENDS = {
    "00_data_tour": [],
    "01_train": [],
    "02_task_affinity_per_scale": [],
    "03_mtinet_ablation": ["02_task_affinity_per_scale"],  # shares the single-task networks
    "04_rock_ablation": [],
    "05_loss_weighting": ["02_task_affinity_per_scale"],  # shares the single-task networks (and with 03,
    # which may run beside it, the fixed-weight MTL baseline: the run store's lock trains it once)
    "06_inspector": ["01_train", "03_mtinet_ablation", "04_rock_ablation"],
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


def run_suite(profile: str = "quick", jobs: int = 1, output_root: str | os.PathLike | None = None,
              only: list[str] | None = None, parameters: dict | None = None, log=print) -> SuiteReport:
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: choose from {list(PROFILES)}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be at least 1")
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
    # the kernels share the cores: each gets its share of threads (inherited through the environment)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    # idle OpenMP threads sleep instead of spinning, so parallel kernels do not starve each other
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    report, done, start = SuiteReport(profile), {}, time.perf_counter()
    pending = list(selected)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {}
        while pending or running:
            for name in list(pending):
                needs = [d for d in DEPENDS[name] if d in selected]
                failed = [d for d in needs if d in done and done[d].status != "passed"]
                if failed:
                    done[name] = NotebookResult(name, "skipped", error=f"depends on failed {failed}")
                    pending.remove(name)
                    log(f"[suite] {name}: skipped (depends on {failed})")
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
