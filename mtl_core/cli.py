"""Command line: `python -m mtl_core <command> --help`."""

from __future__ import annotations

import argparse
import time

from .profiles import PROFILES, benchmark


def _data(args: argparse.Namespace) -> int:
    """Build (or verify) the cached synthetic benchmark of a profile."""
    for domain in args.domains:
        for split in ("train", "val"):
            start = time.perf_counter()
            ds = benchmark(args.profile, split=split, domain=domain, seed=args.seed, workers=args.workers)
            print(f"{split:5s} {domain:6s} {len(ds):5d} scenes {ds.spec.size[0]}x{ds.spec.size[1]} "
                  f"in {time.perf_counter() - start:5.1f}s  -> {ds.cache_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtl_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="generate and cache the synthetic benchmark",
                          description="Generate (or verify) the cached synthetic benchmark of a profile.")
    data.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                      help="benchmark size: ci (tiny), quick (64x64, 2000/300), full (96x128, 4000/500)")
    data.add_argument("--domains", nargs="+", default=["render", "sensor"], choices=["render", "sensor"],
                      help="which domains to build (default: both)")
    data.add_argument("--seed", type=int, default=0, help="base seed of the scenes (default 0)")
    data.add_argument("--workers", type=int, default=None, help="generation processes (default: all cores)")
    data.set_defaults(func=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
