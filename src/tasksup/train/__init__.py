"""Training GPT-2 models from scratch on one task at a time (paper §4, Eq. 1)."""

from tasksup.train.config import PRESETS, TrainConfig, load_train_config
from tasksup.train.loop import train

__all__ = ["PRESETS", "TrainConfig", "load_train_config", "train"]
