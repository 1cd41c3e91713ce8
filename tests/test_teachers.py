"""The teachers RARE uses, served as they really are: thinking in a field of its own, long
thinking against the token budget, structured output or not, an endpoint that caps requests
in flight, and the Batch API. Operators against the project's simulator over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rare_core import APILLMServing_request, Doc2Query, ReasonDistill
from rare_core.llm.config import BatchConfig

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl"


@pytest.fixture
def questions() -> pd.DataFrame:
    """Ten PubMedQA abstracts with a question, a scenario and two stand-in negatives each."""
    with open(SAMPLE, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh][:10]
    texts = [r["text"] for r in rows]
    return pd.DataFrame({"id": [r["id"] for r in rows], "text": texts,
                         "question": [f"How does {r['title'][:60]} matter for treatment?" for r in rows],
                         "scenario": ["A clinician weighs the evidence for a patient."] * 10,
                         "hard_negatives": [[texts[(i + 1) % 10], texts[(i + 2) % 10]] for i in range(10)]})


def client(sim, tmp_path, **settings) -> APILLMServing_request:
    defaults = {"max_workers": 8, "backoff_base": 0.01, "cache_path": str(tmp_path / "responses.sqlite")}
    return APILLMServing_request(api_url=sim.base_url, model_name="qwq-32b", **{**defaults, **settings})


@pytest.mark.parametrize("mode, form", [("reasoning_content", "reasoning_content"), ("reasoning", "reasoning"),
                                        ("swallowed", "swallowed"), ("inline", "inline")])
def test_the_thinking_is_read_where_the_server_puts_it(sim, tmp_path, questions, mode, form):
    sim.configure(reasoning=mode)
    out = ReasonDistill(llm_serving=client(sim, tmp_path)).process(questions)
    assert (out["rare_status"] == "ok").all(), out["rare_error"].tolist()
    assert (out["rare_distill_reasoning_form"] == form).all()
    assert out["reasoning"].str.len().gt(20).all() and out["answer"].str.len().gt(0).all()
    assert not out["answer"].str.contains("<think>|</think>|<answer>").any()
    assert (out["rare_distill_attempts"] == 1).all()


def test_long_thinking_fits_the_default_budget(sim, tmp_path, questions):
    sim.configure(reasoning="reasoning_content", thinking_tokens=5500)
    out = ReasonDistill(llm_serving=client(sim, tmp_path)).process(questions)
    assert (out["rare_status"] == "ok").all() and (out["rare_distill_attempts"] == 1).all()
    assert sim.stats().completions_served == 10


def test_a_truncated_reply_is_asked_again_with_a_doubled_budget(sim, tmp_path, questions):
    sim.configure(reasoning="reasoning_content", thinking_tokens=5500)
    op = ReasonDistill(llm_serving=client(sim, tmp_path, max_tokens=2048))
    out = op.process(questions.head(4))
    # 2048 and 4096 are cut inside the thinking; 8192 fits: three calls, each a bigger budget.
    assert (out["rare_status"] == "ok").all() and (out["rare_distill_attempts"] == 3).all()
    assert op.last_summary.extra["truncations"] == 8  # cut replies (two per row), though every row ended well
    assert sim.stats().completions_served == 12
    sim.reset()
    capped = ReasonDistill(llm_serving=client(sim, tmp_path / "capped", max_tokens=2048, max_tokens_cap=2048))
    out = capped.process(questions.head(4))
    assert (out["rare_error_kind"] == "content").all() and (out["rare_distill_attempts"] == 1).all()
    assert out["rare_error"].str.contains("max_tokens_cap").all()
    assert sim.stats().completions_served == 4  # paid once, not three times
    assert capped.last_summary.extra["truncations"] == 4


def test_structured_output_falls_back_once_when_unsupported(sim, tmp_path, questions):
    docs = questions[["id", "text"]]
    sim.configure(structured_output="unsupported")
    llm = client(sim, tmp_path)
    out = Doc2Query(llm_serving=llm).process(docs)
    assert (out["rare_status"] == "ok").all()
    assert llm.structured_output_unsupported
    chats = sim.stats().requests_by_path["/v1/chat/completions"]
    assert chats <= len(docs) + 8  # at most the first wave was refused, once each
    strict = Doc2Query(llm_serving=client(sim, tmp_path / "on"), structured_output="on").process(docs.head(2))
    assert (strict["rare_error_kind"] == "request").all() and strict["rare_error"].str.contains("400").all()


def test_structured_output_is_asked_for_where_supported(sim, tmp_path, questions):
    from rare_core.llm.types import LLMRequest
    from rare_core.operators.doc2query import response_format

    llm = client(sim, tmp_path)
    out = Doc2Query(llm_serving=llm).process(questions[["id", "text"]].head(3))
    assert (out["rare_status"] == "ok").all() and not llm.structured_output_unsupported
    body = llm.request_body(LLMRequest(messages=[{"role": "user", "content": "x"}], response_format=response_format(3)))
    schema = body["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["schema"]["required"] == ["questions"]


def test_the_endpoint_receives_exactly_the_request_body(tmp_path):
    """The client hands its body to the SDK as extra_body (to skip the SDK's request transform):
    what goes over the wire must still be request_body(req), every field of it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rare_core.llm.types import LLMRequest

    received: list[dict] = []
    completion = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "an answer"}}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps(completion).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = APILLMServing_request(api_url=f"http://127.0.0.1:{server.server_port}/v1", model_name="m",
                                    cache_mode="off", seed=7, top_p=0.9)
        req = LLMRequest(messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "caf\u00e9 ?"}],
                         max_tokens=99, temperature=0.3, sample_index=2,
                         response_format={"type": "json_schema", "json_schema": {"name": "q", "strict": True,
                                                                                 "schema": {"type": "object"}}})
        answer = llm.converse([req]).responses[0]
    finally:
        server.shutdown()
    assert answer.ok and answer.text == "an answer"
    assert received == [llm.request_body(req)]
    assert received[0]["messages"][1]["content"] == "caf\u00e9 ?" and received[0]["seed"] == 9


def test_a_capped_endpoint_loses_no_row_and_refuses_few(sim, tmp_path, questions):
    sim.configure(latency=0.2, max_in_flight=4)
    docs = pd.concat([questions[["id", "text"]]] * 4, ignore_index=True)
    docs["text"] = [f"Copy {i}. {t}" for i, t in enumerate(docs["text"])]
    docs["id"] = range(len(docs))
    llm = client(sim, tmp_path, max_workers=32, max_retries=2)
    op = Doc2Query(llm_serving=llm)
    out = op.process(docs)
    stats = sim.stats()
    assert (out["rare_status"] == "ok").all()  # no row lost to 429s
    assert stats.max_in_flight <= 4
    refused = stats.refused_over_cap / (stats.refused_over_cap + stats.completions_served)
    assert refused < 0.15, stats
    assert op.last_summary.llm.refused_429 == stats.refused_over_cap
    assert llm.concurrency.limit <= 6


def test_batch_mode_answers_the_same_rows_at_batch_prices(sim, tmp_path, questions):
    docs = questions[["id", "text"]].head(6)
    online = Doc2Query(llm_serving=client(sim, tmp_path / "online")).process(docs)
    sim.reset()
    sim.configure(batch_delay=0.05)
    batch_llm = client(sim, tmp_path / "batch", mode="batch", batch=BatchConfig(poll_interval=0.05, poll_max=0.2))
    op = Doc2Query(llm_serving=batch_llm)
    out = op.process(docs)
    stats = sim.stats()
    assert out["question"].tolist() == online["question"].tolist()
    assert stats.completions_served == 0 and stats.batch_completions_served == 6 and stats.batches_created == 1
    assert op.last_summary.llm.batch_requests == 6
    sim.reset()
    again = Doc2Query(llm_serving=batch_llm).process(docs)  # a rerun is free
    assert again["question"].tolist() == out["question"].tolist() and sim.stats().batches_created == 0


def test_citation_check_flags_reasoning_that_never_cites_the_positive(sim, tmp_path, questions):
    from rare_core.operators.reason_distill import citation

    assert citation("Document 2 answers it; Document 1 only looks relevant.", 2) == "positive"
    assert citation("As Document 3 shows, the answer is no.", 1) == "negatives_only"
    assert citation("The answer is no.", 1) == "none"
    op = ReasonDistill(llm_serving=client(sim, tmp_path))
    out = op.process(questions.head(3))
    assert set(out["rare_distill_citation"]) <= {"positive", "negatives_only", "none"}
    assert op.last_summary.extra["cites_negatives_only"] == int((out["rare_distill_citation"] == "negatives_only").sum())
