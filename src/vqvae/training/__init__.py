"""The training loop, batches and checkpoints shared by every model."""

from vqvae.training.allocator import keep_freed_memory
from vqvae.training.batches import ShuffledBatches, as_float
from vqvae.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from vqvae.training.logger import MetricsLog, read_log
from vqvae.training.loop import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    fit,
    learning_rate,
)

__all__ = [
    "MetricsLog",
    "ShuffledBatches",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "as_float",
    "fit",
    "keep_freed_memory",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "read_log",
    "save_checkpoint",
    "verify_checkpoint",
]
