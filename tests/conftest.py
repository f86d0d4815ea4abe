"""Fixtures shared by the test folders. Helpers that are not fixtures live in ``helpers.py``
beside this file (pytest puts this folder on ``sys.path``, so tests ``import helpers``)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def fixed_threads():
    """Commands run in-process (``vqvae.cli.main.main``) apply the thread policy
    (``vqvae.threads``); fix it at this process's thread count so a test's results do not
    depend on what else the machine is running. Tests of the policy itself unset it."""
    import torch

    os.environ.setdefault("VQVAE_THREADS", str(torch.get_num_threads()))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread: with tiny models on a busy shared machine,
    thread hand-offs cost far more than the arithmetic (and the results are the same). A
    module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before, env = torch.get_num_threads(), os.environ.get("VQVAE_THREADS")
    torch.set_num_threads(1)
    os.environ["VQVAE_THREADS"] = "1"  # commands run in-process keep to it (vqvae.threads)
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("VQVAE_THREADS", None)
    else:
        os.environ["VQVAE_THREADS"] = env
