"""Fixtures shared by several test modules; under pytest-xdist: thread pinning and the heaviest modules first."""
import os

import pytest

from clem_bridge.synthetic import make_pair, save_pair

# roughly heaviest first (seconds of a full ``scripts/test.sh`` run); the other modules take a few seconds each
HEAVY_MODULES = ("test_fiji_server.py", "test_batch.py", "test_correlate.py", "test_volume_register.py",
                 "test_insilico.py", "test_fiji_apply.py", "test_preprocess.py", "test_cli.py", "test_bridge.py",
                 "test_register.py", "test_fiji_fiducials.py", "test_client.py", "test_insilico_server.py",
                 "test_server.py", "test_fiji_register3d.py", "test_register3d_server.py")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 128² phantom pair saved as calibrated TIFFs: ``(pair, em_path, lm_path, folder)``."""
    d = tmp_path_factory.mktemp("phantom")
    pair = make_pair((128, 128), seed=1)
    em, lm = save_pair(pair, d)
    return pair, em, lm, d


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """A real ``python -m clem_bridge.server`` on 127.0.0.1 (token ``server_utils.TOKEN``, default settings) for
    the modules that only submit jobs to it: one start-up (it imports torch) per pytest process rather than
    one per module."""
    from server_utils import TOKEN, running_server
    with running_server(tmp_path_factory.mktemp("shared-server") / "data", token=TOKEN) as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _fiji_template_folder(tmp_path_factory):
    """tests/fiji_utils builds its template Fiji.app once per run: in the folder that pytest-xdist's workers share."""
    base = tmp_path_factory.getbasetemp()
    os.environ["CLEM_TEST_FIJI_CACHE"] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)
                                             / "fiji-template")


def pytest_configure(config):
    """Under pytest-xdist (``scripts/test.sh`` runs one worker per core) each worker and the processes it
    starts get their share of the cores, so parallel workers do not oversubscribe the CPU; the controller
    hands out whole modules in collection order (:func:`pytest_collection_modifyitems`)."""
    if hasattr(config.option, "loadscopereorder"):   # xdist's controller: hand out modules in collection order
        config.option.loadscopereorder = False      # (not by number of tests: a heavy module must not start last)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import cv2
        import torch
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def pytest_collection_modifyitems(items):
    """The heavy modules first, heaviest first (a stable sort: the rest keep their order after them)."""
    rank = {name: i for i, name in enumerate(HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
