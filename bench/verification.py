"""Rejection sampling on PubMedQA's 100 gold questions against the simulator (which answers
closed questions at random, a new draw per sample): the share of rows kept after 1, 2, 4 and
8 samples, and the requests it took. One run with verify.max_samples=8; a row's samples are
drawn in order, so "kept after k" = accepted within its first k samples.

    .venv/bin/python bench/verification.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rare_core import APILLMServing_request, BM25HardNeg, ReasonDistill  # noqa: E402
from rare_core.storage import read_frame  # noqa: E402
from rare_core.verify import VerifyConfig  # noqa: E402
from rare_sim import SimulatorProcess  # noqa: E402

GOLD = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa" / "qa_gold.jsonl"


def main() -> None:
    questions = read_frame(GOLD)
    with SimulatorProcess() as sim, tempfile.TemporaryDirectory() as tmp:
        negatives = BM25HardNeg(index_dir=f"{tmp}/idx").process(questions)
        llm = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=16,
                                    cache_path=f"{tmp}/r.sqlite")
        op = ReasonDistill(llm_serving=llm, verify=VerifyConfig(method="auto", max_samples=8))
        out = op.process(negatives, input_reference_key="gold_answer")
        stats = sim.stats()
    samples = out["rare_verify_samples"].astype(int)
    accepted = out["rare_verify_verdict"] == "accepted"
    print(f"{len(out)} gold questions (yes/no/maybe), verify=auto (exact), simulated teacher  (answers are simulated)")
    for k in (1, 2, 4, 8):
        kept = int((accepted & (samples <= k)).sum())
        print(f"kept after {k} sample(s): {kept}/{len(out)} = {kept / len(out):.0%}   "
              f"(a uniform draw of 3: {1 - (2 / 3) ** k:.0%})")
    print(f"requests: {stats.completions_served} teacher completions ({samples.sum()} samples); "
          f"judge requests: {op.last_summary.extra.get('judge_requests', 0)}")


if __name__ == "__main__":
    main()
