"""Models: a registry + `build_model(name, tasks, backbone=..., **options)`.

Output contract of every model, `out = model(images)` with images (B, 3, H, W), H and W % 32 == 0:
- `out[task]`: the final prediction of each (non-auxiliary) task. Dense tasks: (B, C, H, W) logits
  or values at input resolution; `scene`: (B, classes) logits; `detection`: a dict with `logits`
  (B, P, classes + 1; index 0 = background), `deltas` (B, P, 4) and `priors` (P, 4).
- `out["deep"]`: a list of {task: prediction} dicts, the intermediate predictions that receive deep
  supervision (any resolution; losses upsample). Empty when a model has none.
- `out["features"]`: only with `model(images, return_features=True)`: intermediate maps for
  analysis (documented per model, e.g. MTI-Net's per-scale task features and distillation attention).
"""

# importing the family modules registers their models
from . import baselines, mtan, mtinet, padnet, rock  # noqa: F401
from .backbones import BACKBONES, build_backbone
from .registry import build_model, check_input, list_models, register_model
from .summary import model_summary

__all__ = ["BACKBONES", "build_backbone", "build_model", "check_input", "list_models", "model_summary",
           "register_model"]
