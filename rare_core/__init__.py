"""rare_core: the framework-free core of the RARE data pipeline.

    from rare_core import Doc2Query, BM25HardNeg, ReasonDistill, FileStorage, APILLMServing_request

Importing this package loads neither Prefect nor torch, and does not start a JVM: the BM25
operator starts Java on first use.
"""

from rare_core.llm.serving import APILLMServing_request
from rare_core.operators.bm25_hardneg import BM25HardNeg
from rare_core.operators.doc2query import Doc2Query
from rare_core.operators.reason_distill import ReasonDistill
from rare_core.operators.verification import Verification
from rare_core.storage import FileStorage

__all__ = ["APILLMServing_request", "BM25HardNeg", "Doc2Query", "FileStorage", "ReasonDistill", "Verification"]
__version__ = "0.1.0"
