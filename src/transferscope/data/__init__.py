"""Target datasets: loading by name or path, seeded stratified splits, subsampling."""

from transferscope.data.dataset import Dataset
from transferscope.data.loaders import DATASETS, builtin, builtin_names, load_dataset
from transferscope.data.splits import stratified_split, subsample, training_part

__all__ = ["DATASETS", "Dataset", "builtin", "builtin_names", "load_dataset",
           "stratified_split", "subsample", "training_part"]
