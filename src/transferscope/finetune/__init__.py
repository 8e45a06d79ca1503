"""Fine-tuning: a backbone cut at a layer plus a new head, registered strategies, a trainer
with validation-only model selection, transfer-vs-scratch runs with a verdict, learning curves
over data fractions, and saved models."""

from transferscope.finetune.model import TransferModel
from transferscope.finetune.run import FinetuneResult, finetune, learning_curves
from transferscope.finetune.saving import load_model, save_model
from transferscope.finetune.strategies import list_strategies, make_strategy
from transferscope.finetune.trainer import History, TrainConfig, evaluate, fit, train

__all__ = ["FinetuneResult", "History", "TrainConfig", "TransferModel", "evaluate", "finetune",
           "fit", "learning_curves", "list_strategies", "load_model", "save_model",
           "make_strategy", "train"]
