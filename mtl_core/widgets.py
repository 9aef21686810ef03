"""Interactive explorers for JupyterLab (ipywidgets).

They need a live kernel to react to the controls; executed non-interactively (papermill, nbconvert)
they still build and render their initial state, so notebooks that show them run in CI. The figure is
an image widget (PNG) rather than an Output widget: its state is saved with the notebook, and
nbclient (papermill) can stall on Output widgets until its cell timeout.
"""

from __future__ import annotations

import ipywidgets as ipw

from .plots import OVERLAYS, figure_png, show_sample


def sample_browser(datasets: dict, overlay: str = "boxes", tasks=None) -> ipw.VBox:
    """Browse samples of one or more datasets (e.g. {"render": ..., "sensor": ...}) task by task.

    Controls: the sample index, the dataset (domain), and what to overlay on the image
    (none / boxes / semseg / depth / normals / edge / sal); below, `show_sample` of the choice.
    Sample i of each domain is the same room, so switching the domain shows what the sensor changes.
    """
    if not datasets:
        raise ValueError("sample_browser needs at least one dataset, e.g. {'render': ds}")
    count = min(len(ds) for ds in datasets.values())
    index = ipw.IntSlider(value=0, min=0, max=count - 1, description="sample", continuous_update=False)
    domain = ipw.Dropdown(options=list(datasets), description="domain")
    shown = ipw.Dropdown(options=list(OVERLAYS), value=overlay, description="overlay")
    out = ipw.Image(format="png")

    def draw(_change=None) -> None:
        ds = datasets[domain.value]
        out.value = figure_png(show_sample(ds[index.value], ds.classes, ds.det_classes, ds.scene_classes,
                                           tasks=tasks, overlay=shown.value))

    for control in (index, domain, shown):
        control.observe(draw, names="value")
    draw()
    return ipw.VBox([ipw.HBox([index, domain, shown]), out])
