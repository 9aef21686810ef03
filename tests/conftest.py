import pytest

from mtl_core.data.synthetic import RenderSpec, render_sample


@pytest.fixture(scope="session")
def render_samples():
    """A few clean 64x64 and 96x128 renders, shared by the geometry tests."""
    return [render_sample(i, RenderSpec(size=(64, 64))) for i in range(6)] + [
        render_sample(i, RenderSpec(size=(96, 128))) for i in range(3)]
