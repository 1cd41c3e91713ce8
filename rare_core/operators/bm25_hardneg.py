"""BM25 hard negatives (work in progress)."""

from rare_core.operators.base import Operator


class BM25HardNeg(Operator):
    step_name = "hardneg"
