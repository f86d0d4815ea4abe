"""eval_mode: eval inside the block, the caller's mode afterwards, even after an error."""

import pytest
from torch import nn

from vqvae.nets.modes import eval_mode


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_callers_mode(training: bool) -> None:
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train(training)
    with eval_mode(module):
        assert not module.training and not module[1].training
    assert module.training is training and module[1].training is training


def test_eval_mode_restores_the_mode_after_an_error() -> None:
    module = nn.Dropout().train()
    with pytest.raises(RuntimeError), eval_mode(module):
        raise RuntimeError("inside the block")
    assert module.training
