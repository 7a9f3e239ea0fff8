"""The one training engine: a readable loop with resumable checkpoints, DDP, AMP, EMA and logging.

Typical use::

    from humanvision.engine import TrainConfig, Trainer
    trainer = Trainer(TrainConfig(epochs=210, lr=5e-4, layer_decay=0.75, ...), method, dataset, eval_fn=evaluate)
    trainer.fit(resume=True)
"""

from humanvision.engine.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
    save_checkpoint,
)
from humanvision.engine.distributed import (
    DistInfo,
    ResumableSampler,
    SeededDataset,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    resolve_device,
)
from humanvision.engine.ema import ModelEma
from humanvision.engine.logging import TrainLogger, read_log
from humanvision.engine.optim import LRSchedule, build_optimizer, lr_factor, param_groups
from humanvision.engine.trainer import TrainConfig, Trainer, move_to, seed_everything

__all__ = [
    "Checkpoint",
    "DistInfo",
    "LRSchedule",
    "ModelEma",
    "ResumableSampler",
    "SeededDataset",
    "TrainConfig",
    "TrainLogger",
    "Trainer",
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "build_optimizer",
    "cleanup",
    "init_distributed",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "move_to",
    "param_groups",
    "read_log",
    "resolve_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]
