"""ReasonDistill prompt: scenario + question + numbered documents in, reasoning + answer out.

``build_messages(scenario, question, documents, max_doc_chars)`` -> OpenAI chat messages.
The model answers ``<think>step-by-step reasoning</think><answer>final answer</answer>``.
``shuffled_order(row_key, n)`` gives the order in which the documents are shown: a
permutation seeded by the row itself, so the same row always gets the same prompt.
"""

from __future__ import annotations

import hashlib
import random

from rare_core.prompts.doc2query import truncate

VERSION = "reason_distill/v2"

SYSTEM = (
    "You are an expert who solves hard questions by reasoning over retrieved documents. Some "
    "documents are relevant and some only look relevant. You think carefully and show your work."
)

_INSTRUCTIONS = """Read the scenario, the question and the documents below, then work through it in this order:
1. Identify the essential problem: what exactly is being asked, and what would a good answer need?
2. Judge each document: say which ones actually help and why, and which ones only look relevant.
3. Reason step by step from the helpful documents (and sound domain knowledge) to a conclusion.
4. Give the final answer.

Write your reasoning inside <think></think> and then the final answer inside <answer></answer>, like this:
<think>
...your reasoning...
</think>
<answer>
...your final answer...
</answer>"""


def shuffled_order(row_key: str, n: int) -> list[int]:
    """A permutation of ``range(n)`` seeded by ``row_key`` (stable across runs and machines)."""
    seed = int.from_bytes(hashlib.sha256(row_key.encode("utf-8")).digest()[:8], "big")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def build_messages(scenario: str, question: str, documents: list[str], max_doc_chars: int = 4000) -> list[dict]:
    """Chat messages showing ``documents`` numbered from 1, in the order given."""
    docs = "\n\n".join(
        f"[Document {i}]\n{truncate(doc, max_doc_chars)}" for i, doc in enumerate(documents, start=1)
    )
    # Fixed instructions first, the row's own content last: the prompts of a run share a
    # prefix that prefix caching (vLLM, SGLang) and prompt caching (OpenAI) compute once.
    # A question given without a scenario (questions_given) is shown without the block.
    situation = f"<scenario>\n{scenario}\n</scenario>\n\n" if scenario and scenario.strip() else ""
    user = (
        f"{_INSTRUCTIONS}\n\n"
        f"{situation}"
        f"<question>\n{question}\n</question>\n\n"
        f"<documents>\n{docs}\n</documents>"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
