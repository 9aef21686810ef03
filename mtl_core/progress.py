"""Progress bars that show up in JupyterLab and terminals, and stay quiet in CI and pipelines."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    """True in a terminal or a live notebook; False under CI or when MTL_CORE_PROGRESS=0."""
    if os.environ.get("MTL_CORE_PROGRESS") is not None:
        return os.environ["MTL_CORE_PROGRESS"] not in ("0", "", "false")
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(total: int | None = None, desc: str = "", enable: bool | None = None, **kwargs) -> tqdm:
    """A tqdm.auto bar; `enable=None` means: only when `interactive()`."""
    enable = interactive() if enable is None else enable
    return tqdm(total=total, desc=desc, disable=not enable, leave=False, **kwargs)
