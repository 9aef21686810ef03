"""Command line: `python -m mtl_core <command> --help`.

    data     generate / verify the synthetic benchmark of a profile
    train    train one config (or return its stored result); works under `torchrun --nproc_per_node N`
    results  a table of the stored runs
    suite    train the runs the notebooks declare, then execute them through papermill into outputs/<profile>/
    plan     the runs the suite would train (per notebook, stored or not, estimated time), without training
    notebook execute one notebook with parameters (only those it declares)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import typing
from dataclasses import MISSING, fields

from .profiles import PROFILES, benchmark

FIELD_HELP = {
    "model": "registered model: mtl_baseline, single_task, padnet, mtinet, ssd, rock, flat_mtl",
    "tasks": "tasks to learn: semseg depth normals edge sal scene detection",
    "backbone": ("hrnet (small in-house HRNet, maps at strides 2-16 with its default stem_stride=2; the "
                 "notebooks' default for dense tasks), cnn (small plain CNN, strides 4-32; the detectors' "
                 "backbone and this command's default), hrnet_w18_small_v2, resnet18, resnet50"),
    "backbone_options": 'JSON, e.g. \'{"dilated": true}\' or \'{"checkpoint": "path.pth"}\'',
    "model_options": ('JSON, e.g. \'{"fpm": false, "num_scales": 3}\' for mtinet, '
                      '\'{"fusion": "concat"}\' for rock'),
    "dataset": "synthetic, nyud_mt, nyuv2_mat, nyuv2_mtan or pascal_mt (data/README.md: how to lay them out)",
    "data_dir": "dataset folder (default data/<dataset>; synthetic: its cache folder)",
    "dataset_options": ('JSON options of the dataset, '
                        'e.g. \'{"class_mapping": "classMapping40.mat"}\' for nyuv2_mat'),
    "size": "image height and width, multiples of 32",
    "num_train": "training images (per training domain)",
    "num_val": "validation images",
    "train_domains": "synthetic domains to train on: render, sensor, or both (mixed real-like + clean data)",
    "val_domain": "synthetic domain to validate on",
    "missing_fraction": "sensor domain: probability that a sample misses each auxiliary annotation",
    "data_seed": "seed of the generated scenes",
    "augment": "flip / scale-crop / colour jitter during training (true/false)",
    "weighting": "loss weighting: fixed, uncertainty, dwa, gradnorm, pcgrad, mgda, cagrad",
    "weighting_options": 'JSON options of the weighting, e.g. \'{"alpha": 1.5}\'',
    "loss_weights": 'JSON per-task loss weights, e.g. \'{"edge": 50}\' (default: the task spec\'s)',
    "optimizer": "adam, adamw or sgd",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "schedule": "learning-rate schedule: cosine, poly, step, constant",
    "epochs": "training epochs",
    "batch_size": "global batch size (split over torchrun processes)",
    "grad_clip": "max gradient norm (0 or none: no clipping)",
    "precision": "auto (bf16 where fast), bf16 or fp32",
    "eval_every": "evaluate every N epochs (and after the last)",
    "eval_protocol": ("metric definitions: default, official (MTI-Net's evaluation code), or auto "
                      "(official on nyud_mt / pascal_mt)"),
    "seed": "seed of initialisation, shuffling and augmentation",
}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON {text!r}: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "0") else float(text)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        hint, option = hints[f.name], {}
        if hint is dict:
            option = {"type": _parse_json}
        elif hint is bool:
            option = {"type": _parse_bool}
        elif str(hint).startswith("tuple"):
            option = {"nargs": "+", "type": int if "int" in str(hint) else str}
        elif hint in (float | None,):
            option = {"type": _optional_float}
        elif hint in (str | None,):
            option = {"type": str}
        else:
            option = {"type": hint}
        shown = json.dumps(default) if isinstance(default, dict | tuple) else default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default,
                            help=f"{FIELD_HELP.get(f.name, '')} (default: {shown})", **option)


def _data(args: argparse.Namespace) -> int:
    sets = [(split, domain, args.seed) for domain in args.domains for split in ("train", "val")]
    if {"render", "sensor"} <= set(args.domains):  # the suite's mixed training: sensor + render, and
        sets.append(("train", "render", args.seed + 1))  # an extra domain gets the next seed (make_datasets)
    for split, domain, seed in sets:
        start = time.perf_counter()
        ds = benchmark(args.profile, split=split, domain=domain, seed=seed, workers=args.workers)
        print(f"{split:5s} {domain:6s} seed {seed} {len(ds):5d} scenes {ds.spec.size[0]}x{ds.spec.size[1]} "
              f"in {time.perf_counter() - start:5.1f}s  -> {ds.cache_dir}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .runs import train_or_load
    from .train import TrainConfig, fit, validate

    try:  # an invalid config fails here, before any data or model is built, with one clear line
        config = TrainConfig.from_dict({f.name: getattr(args, f.name) for f in fields(TrainConfig)})
        validate(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.no_store:
        metrics = fit(config, None, progress=args.progress)
        print(json.dumps(metrics, indent=1))
        return 0
    result = train_or_load(config, root=args.runs, force=args.force, progress=args.progress)
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return 0
    print(f"{'trained' if result.trained else 'loaded stored result'}: {result.directory}")
    print(json.dumps(result.metrics, indent=1))
    return 0


def _results(args: argparse.Namespace) -> int:
    import pandas as pd

    from .runs import load_results

    table = load_results(args.runs, complete_only=not args.all)
    if table.empty:
        print("no stored runs")
        return 0
    columns = ["run", "model", "tasks", "backbone", "weighting", "epochs", "seed", "status"]
    metric_columns = [c for c in table.columns if "/" in c and not c.startswith("val_loss")]
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table[[c for c in columns if c in table] + metric_columns].to_string(index=False))
    return 0


def _suite_parameters(args: argparse.Namespace) -> dict:
    parameters = {"dataset": args.dataset}
    if args.data_dir:
        parameters["data_dir"] = args.data_dir
    return parameters


def _suite(args: argparse.Namespace) -> int:
    from .suite import run_suite

    try:
        report = run_suite(args.profile, jobs=args.jobs, output_root=args.output, only=args.only,
                           parameters=_suite_parameters(args), threads=args.threads)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r.name for r in report.results if r.status != "passed"]
    print(f"report: {report.path}")
    if report.failed_runs:
        print("runs that failed to train:\n" + "\n".join(f"  {failure}" for failure in report.failed_runs))
    print("all notebooks passed" if not failed else f"not passed: {failed}")
    return 0 if not failed else 1


def _plan(args: argparse.Namespace) -> int:
    from .suite import DEPENDS, NOTEBOOKS, default_jobs, plan_runs, plan_table, pool_seconds

    selected = list(args.only or NOTEBOOKS)
    unknown = [n for n in selected if n not in DEPENDS]
    if unknown:
        print(f"error: only: unknown notebook(s) {unknown}; choose from {NOTEBOOKS}", file=sys.stderr)
        return 2
    planned, problems = plan_runs(args.profile, selected, _suite_parameters(args))
    print(plan_table(planned))
    todo = [r for r in planned if not r.complete]
    jobs = args.jobs or default_jobs()
    declared = sum(len(r.needed_by) for r in planned)
    one_thread, pool = sum(r.seconds for r in todo) / 60, pool_seconds(todo, jobs) / 60
    print(f"\nprofile {args.profile!r}: {declared} run(s) declared by {len(selected)} notebook(s), "
          f"{len(planned)} distinct; {len(planned) - len(todo)} stored, {len(todo)} to train: estimated "
          f"{one_thread:.0f} min on one thread, ~{pool:.0f} min in {jobs} process(es) (suite --jobs {jobs}) "
          "if each keeps its one-thread speed")
    from .train import describe_precision, resolved_precision

    if todo:
        print(f"estimates: {sum(r.measured for r in todo)} of {len(todo)} from the CPU time that stored runs "
              "of the same model measured here, the others from the model's GMACs (fitted to one-thread fp32 "
              "epochs)")
    if resolved_precision("auto") != "fp32":
        print(f"training here: {describe_precision()}; bf16 trained the study models 1.15-1.9x faster than "
              "fp32 on an AVX512-BF16 CPU (benchmarks/speed.py --bf16)")
    for name, problem in problems.items():
        print(f"{name}: its runs could not be planned: {problem}", file=sys.stderr)
    return 0


def _parameter_value(text: str):
    """A -p value as papermill's command line reads it: None, true/false, numbers, YAML lists, else text."""
    import yaml

    if text in ("None", "none", "null"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _notebook(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from .suite import NOTEBOOKS, PROJECT, SuiteReport, run_notebook, write_report

    name = args.name.removesuffix(".ipynb").split("/")[-1]
    if name not in NOTEBOOKS:
        print(f"error: notebook {args.name!r}: choose from {NOTEBOOKS}", file=sys.stderr)
        return 2
    parameters = {key: _parameter_value(value) for key, value in args.parameter}
    for text in args.yaml:
        values = yaml.safe_load(text)
        if not isinstance(values, dict):
            print(f"error: -y {text!r}: expected a YAML mapping, e.g. 'seeds: [0, 1]'", file=sys.stderr)
            return 2
        parameters.update(values)
    profile = parameters.pop("profile", args.profile)  # `-p profile quick` works as papermill's does
    if profile not in PROFILES:
        print(f"error: profile={profile!r}: choose from {sorted(PROFILES)}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else PROJECT / "outputs" / profile
    try:
        result = run_notebook(name, profile, output, parameters)
    except ValueError as exc:  # an undeclared parameter: refused before anything runs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(SuiteReport(profile, [result]), output)
    print(f"{name}: {result.status} in {result.seconds / 60:.1f} min -> {result.output}")
    if result.error:
        print(result.error, file=sys.stderr)
    return 0 if result.status == "passed" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtl_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate and cache the synthetic benchmark",
                          description="Generate (or verify) the cached synthetic benchmark of a profile.")
    data.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                      help="benchmark size: ci (tiny), quick (64x64, 1000/300), full (64x64, 1000/300)")
    data.add_argument("--domains", nargs="+", default=["render", "sensor"], choices=["render", "sensor"],
                      help="which domains to build (default: both)")
    data.add_argument("--seed", type=int, default=0, help="base seed of the scenes (default 0)")
    data.add_argument("--workers", type=int, default=None, help="generation processes (default: all cores)")
    data.set_defaults(func=_data)

    train = sub.add_parser("train", help="train one config, or return its stored result",
                           description="Train one configuration. A config that already finished is not "
                                       "trained again: its stored metrics are printed. An interrupted run "
                                       "resumes from its last checkpoint. Every config field is an option.")
    _add_config_options(train)
    train.add_argument("--runs", default=None, help="results store folder (default: runs/ or $MTL_CORE_RUNS)")
    train.add_argument("--force", action="store_true", help="retrain even if the result is stored")
    train.add_argument("--no-store", action="store_true", help="train without writing a run directory")
    train.add_argument("--progress", type=_parse_bool, default=None,
                       help="progress bar (default: if interactive)")
    train.set_defaults(func=_train)

    results = sub.add_parser("results", help="table of stored runs")
    results.add_argument("--runs", default=None, help="results store folder")
    results.add_argument("--all", action="store_true", help="include incomplete runs")
    results.set_defaults(func=_results)

    cores = os.cpu_count() or 1
    suite = sub.add_parser(
        "suite", help="train the notebooks' runs, then execute the notebooks through papermill",
        description="Train every run the selected notebooks declare (mtl_core/experiments.py), deduplicated "
                    "and without those already stored, in a pool of processes, longest first; then execute "
                    "the notebooks in dependency order into outputs/<profile>/ (executed notebooks, "
                    "figures, report.md), on the stored runs. `plan` lists the runs without training.")
    plan = sub.add_parser(
        "plan", help="list the runs the suite would train, without training",
        description="The runs the selected notebooks declare: notebook, label, model, seed, run directory, "
                    "whether it is stored, and its estimated training time on one thread.")
    for command in (suite, plan):
        command.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                             help="ci (seconds), quick (one seed of the core comparisons), "
                                  "full (3 seeds, all variants)")
        uses = ("training processes, and notebooks executed at once afterwards" if command is suite
                else "training processes the wall-time estimate assumes")
        command.add_argument("--jobs", type=int, default=None,
                             help=f"{uses} (default: one per core, {cores} here)")
        command.add_argument("--only", nargs="+", default=None,
                             help="only these notebooks (names without .ipynb)")
        command.add_argument("--dataset", default="synthetic",
                             help="synthetic, nyud_mt, nyuv2_mat, nyuv2_mtan or pascal_mt")
        command.add_argument("--data-dir", default=None, help="the dataset's folder (real datasets)")
    suite.add_argument("--threads", type=int, default=None,
                       help="torch threads of each training process and notebook (default: the cores "
                            "divided by --jobs)")
    suite.add_argument("--output", default=None, help="output folder (default outputs/<profile>)")
    suite.set_defaults(func=_suite)
    plan.set_defaults(func=_plan)

    notebook = sub.add_parser(
        "notebook", help="execute one notebook with parameters",
        description="Execute one notebook through papermill into <output>/<name>.ipynb (figures and summary "
                    "in <output>/<name>/), as the suite does. Parameters the notebook does not declare in "
                    "its `parameters` cell are refused, with the list of those it declares.")
    notebook.add_argument("name", help="e.g. 01_train (from notebooks/)")
    notebook.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                          help="a parameter; the value is read as YAML (numbers, true/false, None, [lists])")
    notebook.add_argument("-y", "--yaml", action="append", default=[],
                          help="parameters as a YAML mapping, e.g. 'tasks: [semseg, depth]'")
    notebook.add_argument("--profile", default="ci", choices=sorted(PROFILES),
                          help="ci (seconds, the default), quick or full")
    notebook.add_argument("--output", default=None, help="output folder (default outputs/<profile>)")
    notebook.set_defaults(func=_notebook)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
