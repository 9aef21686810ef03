"""Progress that shows up in terminals and JupyterLab, and one line per step of work elsewhere.

In a terminal: a tqdm bar. In a notebook: the same bar as text on stdout, not tqdm's widget bar: a
closed widget bar leaves a dangling widget output that reads "model not found" once the notebook is
saved and reopened, while text stays readable. Without either (CI, pipes, MTL_CORE_PROGRESS=0) no bar
is drawn and `report` prints one line per epoch / per cache instead.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def interactive() -> bool:
    """True in a terminal or a live notebook; False under CI or when MTL_CORE_PROGRESS=0."""
    if os.environ.get("MTL_CORE_PROGRESS") is not None:
        return os.environ["MTL_CORE_PROGRESS"] not in ("0", "", "false")
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(total: int | None = None, desc: str = "", enable: bool | None = None, **kwargs) -> tqdm:
    """A text tqdm bar (stdout in a notebook, stderr in a terminal); `enable=None`: if `interactive()`."""
    enable = interactive() if enable is None else enable
    stream = sys.stdout if "ipykernel" in sys.modules and not sys.stderr.isatty() else sys.stderr
    return tqdm(total=total, desc=desc, disable=not enable, leave=False, file=stream, dynamic_ncols=True,
                **kwargs)


def report(bar: tqdm, line: str) -> None:
    """One line of figures for a finished step of work, printed where no bar showed the progress."""
    if bar.disable:
        print(line, flush=True)
