"""Target datasets: loading by name or path, seeded stratified splits, subsampling."""

from transferscope.data.dataset import Dataset
from transferscope.data.loaders import BUILTINS, load_dataset
from transferscope.data.splits import stratified_split, subsample, training_part

__all__ = ["BUILTINS", "Dataset", "load_dataset", "stratified_split", "subsample",
           "training_part"]
