"""Datasets and input scaling."""

from bregnn.data.scaling import RangeScaler, target_interval
from bregnn.data.spirals import split, two_spirals

__all__ = ["RangeScaler", "split", "target_interval", "two_spirals"]
