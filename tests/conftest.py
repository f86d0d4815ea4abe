"""Fixtures shared by the test folders. Helpers that are not fixtures live in ``helpers.py``
beside this file (pytest puts this folder on ``sys.path``, so tests ``import helpers``)."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread: with tiny models on a busy shared machine,
    thread hand-offs cost far more than the arithmetic (and the results are the same). A
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
