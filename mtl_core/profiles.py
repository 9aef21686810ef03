"""Named run sizes shared by the notebooks, the CLI and CI: `ci` (seconds), `quick` (minutes), `full`.

Notebooks take a `profile` parameter and resolve sizes from here *after* their parameters cell
(papermill injects parameters but does not recompute values derived from them).
"""

from __future__ import annotations

from .data.synthetic import SyntheticScenes

PROFILES: dict[str, dict] = {
    # tiny: every notebook executes in CI in seconds; numbers are not meaningful
    "ci": {"size": (64, 64), "num_train": 64, "num_val": 32},
    # the embedded benchmark at laptop scale: real multi-task effects show within minutes
    "quick": {"size": (64, 64), "num_train": 1000, "num_val": 300},
    # the same benchmark; the full study differs in schedule, seeds and variants (experiments.STUDY)
    "full": {"size": (64, 64), "num_train": 1000, "num_val": 300},
}


def get_profile(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"profile={name!r}: expected one of {tuple(PROFILES)}")
    return dict(PROFILES[name])


def benchmark(profile: str, split: str = "train", domain: str = "render", seed: int = 0,
              **kwargs) -> SyntheticScenes:
    """The synthetic benchmark split of a profile (built and cached on first use)."""
    p = get_profile(profile)
    num = p["num_train"] if split == "train" else p["num_val"]
    return SyntheticScenes(split=split, num_samples=num, size=p["size"], domain=domain, seed=seed, **kwargs)
