"""Fixtures shared by the test folders. Helpers that are not fixtures live in ``helpers.py``
beside this file (pytest puts this folder on ``sys.path``, so tests ``import helpers``)."""

import os

import pytest

# Commands started as subprocesses by tests compute with a fixed thread count, not the auto
# policy (vqvae.threads), so their results do not depend on what else the machine is running.
os.environ.setdefault("VQVAE_THREADS", str(os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def keep_test_threads():
    """Commands run in-process (``vqvae.cli.main.main``) keep the thread count the test set
    (``torch.set_num_threads``) instead of applying the process-wide policy; tests of the policy
    use ``vqvae.threads.apply_policy`` as imported before this fixture."""
    import torch

    from vqvae import threads

    def keep_current(option=None):
        fixed = option if option is not None else torch.get_num_threads()
        torch.set_num_threads(fixed)
        threads._POLICY = threads.ThreadPolicy(
            fixed, threads.available_cpus(), "the test", "as set"
        )
        return threads._POLICY

    real = threads.apply_policy
    threads.apply_policy = keep_current
    yield
    threads.apply_policy = real


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


# The decode cache of image folders (vqvae.data.folder_cache) goes to a folder of this test
# session, not the user's cache: tests make many short-lived folders.
if "VQVAE_FOLDER_CACHE" not in os.environ:
    import tempfile

    os.environ["VQVAE_FOLDER_CACHE"] = tempfile.mkdtemp(prefix="vqvae-folder-cache-")
