"""The notebook suite: every notebook executes through papermill in the `ci` profile (via the suite
runner, as `python -m mtl_core suite` does), and the runner reports failures without stopping."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from mtl_core import cli, suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = [name for name in suite.NOTEBOOKS if name != "00_data_tour"]  # 00: tests/test_data_tour.py


@pytest.mark.parametrize("name", suite.NOTEBOOKS)
def test_notebook_is_committed_clean_with_one_parameters_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected exactly one cell tagged 'parameters'"
    source = "\n" + tagged[0].source
    for parameter in ("profile", "output_dir", "data_dir"):
        assert f"\n{parameter} = " in source, f"{name}: no {parameter!r} parameter"
    assert "\nseed = " in source or "\nseeds = " in source
    assert '\nprofile = "ci"' in source  # the default executes in seconds
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
    # the project's kernel, so that JupyterLab and papermill open it on the environment with mtl_core
    assert nb.metadata["kernelspec"]["name"] == suite.KERNEL == "mtl_core", name
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3, f"{name}: too little explanation"


@pytest.fixture(scope="module")
def ci_suite(tmp_path_factory):
    """The whole suite (except the data tour) in the ci profile, with its own run store."""
    tmp = tmp_path_factory.mktemp("suite")
    patch = pytest.MonkeyPatch()
    patch.setenv("MTL_CORE_RUNS", str(tmp / "runs"))  # inherited by the notebooks' kernels
    patch.setenv("MTL_CORE_CELL_TIMEOUT", "900")  # a stalled cell fails its notebook instead of hanging CI
    try:
        report = suite.run_suite("ci", jobs=2, output_root=tmp / "outputs", only=SUITE, log=lambda _: None)
    finally:
        patch.undo()
    return report, tmp


def _dangling_widget_outputs(nb) -> list:
    """Widget outputs whose model is not in the notebook's saved widget state: what JupyterLab shows as
    "Error displaying widget: model not found" once the notebook is reopened."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    saved = state.get("state", {})
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in nb.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    return [m for m in views if m not in saved]


def test_every_notebook_executes_in_ci(ci_suite):
    report, tmp = ci_suite
    failures = {r.name: r.error for r in report.results if r.status != "passed"}
    assert not failures, failures
    assert [r.name for r in report.results] == SUITE
    for name in SUITE:
        executed = nbformat.read(tmp / "outputs" / f"{name}.ipynb", as_version=4)
        assert executed.metadata["kernelspec"]["name"] == suite.KERNEL
        assert not _dangling_widget_outputs(executed), name
        shown = "".join(o["data"].get("text/plain", "") for c in executed.cells for o in c.get("outputs", [])
                        if o.get("output_type") in ("display_data", "execute_result"))
        assert not re.findall(r"\d\.\d{5,}", shown), name  # tables are rounded for display
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "ci"' in injected[0].source
        assert all(c.execution_count is not None for c in executed.cells if c.cell_type == "code")
        folder = tmp / "outputs" / name
        summary = (folder / "summary.md").read_text()
        assert summary.startswith("### "), name
        if name != "06_inspector":  # every study names the metric definitions its numbers use
            assert "Evaluation protocol: default" in summary, name
        assert list(folder.glob("*.png")), f"{name} saved no figure"


def test_the_notebooks_use_only_runs_the_pool_trained(ci_suite):
    """Every notebook declares the runs it uses (experiments.planned_runs): the suite trains them before
    the notebooks execute, so the notebooks add no run to the (initially empty) store."""
    report, tmp = ci_suite
    trained = {o.run.directory.name for o in report.runs if o.status == "trained" and not o.run.probe_every}
    stored = {p.name for p in (tmp / "runs").iterdir() if p.is_dir()}
    assert len(trained) >= 10 and stored == trained, sorted(stored - trained)
    # and the affinity probes (02 and 05 share one): measured by the pool, only read by the notebooks
    probes = {o.run.directory.name for o in report.runs if o.status == "trained" and o.run.probe_every}
    assert len(probes) == 1 and {p.name for p in (tmp / "runs").glob("affinity-*.json")} == probes


def test_report_links_notebooks_figures_and_headline_tables(ci_suite):
    report, tmp = ci_suite
    text = report.path.read_text()
    assert report.path == tmp / "outputs" / "report.md"
    for name in SUITE:
        assert f"[{name}]({name}.ipynb)" in text
        figure = sorted((tmp / "outputs" / name).glob("*.png"))[0]
        assert f"({name}/{figure.name})" in text
    assert "| MTI-Net |" in text and "delta_m" in text  # 03's headline table made it into the report


def test_second_suite_run_reuses_stored_runs(ci_suite, monkeypatch):
    _, tmp = ci_suite
    runs = tmp / "runs"
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.pt")}
    assert len(before) >= 10
    monkeypatch.setenv("MTL_CORE_RUNS", str(runs))
    again = suite.run_suite("ci", output_root=tmp / "again", only=["03_mtinet_ablation"], log=lambda _: None)
    assert again.passed
    after = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.pt")}
    assert after == before  # nothing retrained, nothing new
    # the same numbers as the first execution
    first = (tmp / "outputs" / "03_mtinet_ablation" / "summary.md").read_text()
    assert (tmp / "again" / "03_mtinet_ablation" / "summary.md").read_text() == first


# ---------------------------------------------------------------- the runner on toy notebooks


def _notebook(path: Path, *bodies: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "ci"\noutput_dir = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *map(nbformat.v4.new_code_cell, bodies)]
    nb.metadata["kernelspec"] = {"name": suite.KERNEL, "display_name": suite.KERNEL_DISPLAY_NAME,
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def toy_suite(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write = 'from pathlib import Path\nPath(output_dir, "summary.md").write_text("### ok " + profile)'
    _notebook(folder / "a_ok.ipynb", write)
    _notebook(folder / "b_fails.ipynb", 'x = 1\nraise ValueError("the model diverged")')
    _notebook(folder / "c_needs_b.ipynb", write)
    _notebook(folder / "d_ok.ipynb", write)
    depends = {"a_ok": [], "b_fails": [], "c_needs_b": ["b_fails"], "d_ok": ["a_ok"]}
    monkeypatch.setattr(suite, "NOTEBOOK_DIR", folder)
    monkeypatch.setattr(suite, "DEPENDS", depends)
    monkeypatch.setattr(suite, "NOTEBOOKS", list(depends))
    return tmp_path


def test_failing_notebook_is_reported_with_its_cell_and_the_others_still_run(toy_suite):
    report = suite.run_suite("ci", jobs=2, output_root=toy_suite / "out", log=lambda _: None)
    status = {r.name: r.status for r in report.results}
    assert status == {"a_ok": "passed", "b_fails": "failed", "c_needs_b": "skipped", "d_ok": "passed"}
    assert not report.passed
    failed = next(r for r in report.results if r.name == "b_fails")
    assert "ValueError" in failed.error and "the model diverged" in failed.error
    assert 'raise ValueError("the model diverged")' in failed.error  # the failing cell's source
    text = report.path.read_text()
    assert "**Failed**" in text and "the model diverged" in text and "### ok ci" in text
    assert "depends on failed ['b_fails']" in text


def test_report_keeps_the_notebooks_of_earlier_invocations(toy_suite):
    out = toy_suite / "out"
    suite.run_suite("ci", output_root=out, only=["a_ok"], log=lambda _: None)
    second = suite.run_suite("ci", output_root=out, only=["b_fails"], log=lambda _: None)
    assert [r.name for r in second.results] == ["b_fails"]
    text = second.path.read_text()
    assert "[a_ok](a_ok.ipynb) | passed" in text and "(earlier invocation)" in text and "### ok ci" in text
    assert "[b_fails](b_fails.ipynb) | failed" in text and "the model diverged" in text
    assert "This invocation: 1 notebook(s)" in text
    assert set(json.loads((out / "suite.json").read_text())) == {"a_ok", "b_fails"}
    # a later run of a notebook replaces its entry
    suite.run_suite("ci", output_root=out, only=["b_fails", "c_needs_b"], log=lambda _: None)
    state = json.loads((out / "suite.json").read_text())
    assert state["c_needs_b"]["status"] == "skipped" and state["a_ok"]["status"] == "passed"


def test_cli_exit_codes(toy_suite, capsys):
    assert cli.main(["suite", "--profile", "ci", "--output", str(toy_suite / "o1"), "--only", "a_ok"]) == 0
    assert cli.main(["suite", "--profile", "ci", "--output", str(toy_suite / "o2"), "--only", "b_fails"]) == 1
    assert "not passed: ['b_fails']" in capsys.readouterr().out
    assert cli.main(["suite", "--profile", "ci", "--only", "nope"]) == 2
    assert "unknown notebook(s) ['nope']" in capsys.readouterr().err
    assert cli.main(["suite", "--profile", "ci", "--jobs", "0"]) == 2


def test_run_suite_rejects_bad_arguments(toy_suite):
    with pytest.raises(ValueError, match="profile='huge'"):
        suite.run_suite("huge")
    with pytest.raises(ValueError, match="jobs=0"):
        suite.run_suite("ci", jobs=0)
    (toy_suite / "notebooks" / "d_ok.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match="d_ok"):
        suite.run_suite("ci", only=["d_ok"])


def test_notebook_parameters_reach_the_kernel(toy_suite):
    out = toy_suite / "params"
    result = suite.run_notebook("a_ok", "quick", out)
    assert result.status == "passed" and result.summary == "### ok quick"
    executed = json.loads((out / "a_ok.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])


def test_a_cell_over_the_time_limit_fails_the_suite(toy_suite, monkeypatch, capsys):
    _notebook(toy_suite / "notebooks" / "e_sleeps.ipynb", "x = 1", "import time\ntime.sleep(120)")
    monkeypatch.setitem(suite.DEPENDS, "e_sleeps", [])
    monkeypatch.setattr(suite, "NOTEBOOKS", list(suite.DEPENDS))
    monkeypatch.setenv("MTL_CORE_CELL_TIMEOUT", "5")
    out = toy_suite / "timeout"
    assert cli.main(["suite", "--profile", "ci", "--output", str(out), "--only", "a_ok", "e_sleeps"]) == 1
    report = json.loads((out / "suite.json").read_text())
    assert report["a_ok"]["status"] == "passed" and report["e_sleeps"]["status"] == "failed"
    error = report["e_sleeps"]["error"]
    # index 3: the parameters cell, papermill's injected parameters, "x = 1", then the sleeping cell
    assert "cell (index 3) exceeded the time limit of 5 s" in error and "time.sleep(120)" in error
    assert "time.sleep(120)" in (out / "report.md").read_text()


def test_output_widgets_and_progress_bars_neither_stall_nor_dangle(toy_suite, monkeypatch):
    """ipywidgets' Output widget used to stall nbclient until its cell timeout (the cell then passed,
    late); tqdm's widget bars left outputs without a saved model."""
    widget = ("import ipywidgets as w\nfrom IPython.display import display\n"
              "o = w.Output()\nwith o:\n    print('inside')\ndisplay(w.VBox([w.IntSlider(), o]))")
    bar = ("import os\nos.environ['MTL_CORE_PROGRESS'] = '1'\nfrom mtl_core.progress import progress_bar\n"
           "with progress_bar(5, 'steps') as b:\n    for _ in range(5):\n        b.update(1)")
    _notebook(toy_suite / "notebooks" / "f_widgets.ipynb", bar, *[widget] * 40)
    monkeypatch.setitem(suite.DEPENDS, "f_widgets", [])
    monkeypatch.setenv("MTL_CORE_CELL_TIMEOUT", "30")
    result = suite.run_notebook("f_widgets", "ci", toy_suite / "widgets")
    assert result.status == "passed", result.error
    nb = nbformat.read(result.output, as_version=4)
    durations = [c.metadata["papermill"]["duration"] for c in nb.cells if c.cell_type == "code"]
    assert max(durations) < 30  # no cell waited for the limit: a missed reply would take exactly 30 s
    assert not _dangling_widget_outputs(nb)
    progress = "".join(o.get("text", "") for o in nb.cells[2].outputs)  # after the injected parameters
    assert "steps" in progress and not any("data" in o for o in nb.cells[2].outputs)  # text, no widget


def test_undeclared_parameters_are_refused_by_name(toy_suite, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['modle'\]; it declares \['output_dir', "
                                         r"'profile'\]"):
        suite.run_notebook("a_ok", "ci", toy_suite / "typo", {"modle": "mtinet"})
    assert not (toy_suite / "typo" / "a_ok.ipynb").exists()  # refused before anything ran
    # the suite passes its own parameters (dataset) only to the notebooks that declare them
    assert suite.run_suite("ci", output_root=toy_suite / "s", only=["a_ok"], parameters={"dataset": "x"},
                           log=lambda _: None).passed
    # the command line: `python -m mtl_core notebook NAME -p key value`
    assert cli.main(["notebook", "a_ok", "-p", "modle", "mtinet", "--output", str(toy_suite / "c")]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) ['modle']" in err and "it declares ['output_dir', 'profile']" in err
    assert cli.main(["notebook", "a_ok", "-p", "profile", "quick", "--output", str(toy_suite / "c")]) == 0
    assert (toy_suite / "c" / "a_ok" / "summary.md").read_text() == "### ok quick"


def test_the_real_notebooks_refuse_a_misspelt_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"01_train.ipynb: unknown parameter\(s\) \['modle'\].*'model'"):
        suite.run_notebook("01_train", "ci", tmp_path, {"modle": "mtinet"})


@pytest.mark.parametrize("name", suite.NOTEBOOKS)
def test_files_named_in_a_notebooks_text_exist_in_the_repository(name):
    """A reader follows `mtl_core/models/rock.py` or `data/README.md` from the text: they must be there."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    top = "mtl_core|data|notebooks|benchmarks|tests"
    paths = re.findall(rf"\b((?:{top})/[\w/.-]*\w\.(?:py|md|ipynb))\b", text)
    docs = re.findall(r"(?<![\w/])([A-Z][A-Z_]+\.md)\b", text)  # README.md, DESIGN.md, ...
    missing = [p for p in paths + docs if not (ROOT / p).exists()]
    assert not missing, f"{name} names files that are not in the repository: {missing}"
