"""Fixtures shared by several test modules."""
import pytest

from clem_bridge.synthetic import make_pair, save_pair


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 128² phantom pair saved as calibrated TIFFs: ``(pair, em_path, lm_path, folder)``."""
    d = tmp_path_factory.mktemp("phantom")
    pair = make_pair((128, 128), seed=1)
    em, lm = save_pair(pair, d)
    return pair, em, lm, d
