"""Doc2Query and ReasonDistill end to end on real PubMedQA abstracts, against the simulator."""

import json
from pathlib import Path

import pandas as pd
import pytest

from rare_core import APILLMServing_request, BM25HardNeg, Doc2Query, FileStorage, ReasonDistill
from rare_core.errors import InputColumnError
from rare_core.prompts import doc2query as d2q_prompt
from rare_core.prompts import reason_distill as rd_prompt
from rare_sim import FaultSpec

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl"
CHAT = "/v1/chat/completions"


@pytest.fixture
def docs() -> pd.DataFrame:
    with open(SAMPLE, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh][:8]
    return pd.DataFrame(rows)


@pytest.fixture
def llm(sim, tmp_path):
    return APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=4,
                                 cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01)


def chats(sim) -> int:
    return sim.stats().requests_by_path.get(CHAT, 0)


def with_negatives(df: pd.DataFrame) -> pd.DataFrame:
    """Questions from Doc2Query plus two other documents as stand-in negatives."""
    df = df.copy()
    texts = df["text"].tolist()
    df["hard_negatives"] = [[texts[(i + 1) % len(texts)], texts[(i + 2) % len(texts)]] for i in range(len(texts))]
    return df


def test_doc2query_writes_question_scenario_and_provenance(sim, llm, docs):
    op = Doc2Query(llm_serving=llm)
    out = op.process(docs)
    assert len(out) == len(docs)
    assert (out["rare_status"] == "ok").all() and (out["rare_doc2query_status"] == "ok").all()
    assert out["question"].map(lambda q: isinstance(q, str) and q.endswith("?")).all()
    assert out["scenario"].str.startswith("[simulated]").all()
    assert out["question"].nunique() == len(docs)
    assert (out["rare_doc2query_prompt_version"] == d2q_prompt.VERSION).all()
    assert (out["rare_doc2query_model"] == "teacher").all()
    assert (out["rare_doc2query_prompt_tokens"] > 0).all() and (out["rare_doc2query_completion_tokens"] > 0).all()
    assert out["rare_doc2query_simulated"].all()
    assert list(out["id"]) == list(docs["id"])  # input columns and order kept
    assert op.last_summary.rows_out == len(docs) and op.last_summary.failed == 0
    assert op.last_summary.simulated and op.last_summary.llm.requests == len(docs)
    assert chats(sim) == len(docs)


def test_doc2query_prompt_delimits_and_truncates(docs):
    long_doc = "word " * 5000
    messages = d2q_prompt.build_messages(long_doc, 1, max_doc_chars=1000)
    user = messages[-1]["content"]
    body = user[user.index(d2q_prompt.DOC_OPEN) + len(d2q_prompt.DOC_OPEN):user.index(d2q_prompt.DOC_CLOSE)]
    assert len(body) < 1100 and body.strip().endswith("[...]")


def test_unparseable_answer_is_reasked_and_reaches_the_model(sim, llm, docs):
    target = docs["text"][2][:60]
    sim.inject([FaultSpec(kind="malformed_json", count=1, match=target)])
    out = Doc2Query(llm_serving=llm).process(docs)
    assert (out["rare_status"] == "ok").all()
    assert out["rare_doc2query_attempts"].tolist()[2] == 2
    assert chats(sim) == len(docs) + 1
    # the rerun gets both the bad first answer and the re-ask's answer from the cache
    sim.reset()
    again = Doc2Query(llm_serving=llm).process(docs)
    assert chats(sim) == 0
    assert again["question"].tolist() == out["question"].tolist()


@pytest.mark.parametrize("kind", ["malformed_json", "length", "empty"])
def test_row_fails_after_max_attempts_with_reason_and_raw(sim, llm, docs, kind):
    target = docs["text"][1][:60]
    sim.inject([FaultSpec(kind=kind, count=3, match=target)])
    op = Doc2Query(llm_serving=llm)
    out = op.process(docs, max_attempts=3)
    row = out.iloc[1]
    assert row["rare_status"] == "failed" and row["rare_doc2query_status"] == "failed"
    assert pd.isna(row["question"]) and pd.isna(row["scenario"])  # missing, never an empty question
    assert row["rare_doc2query_attempts"] == 3 and "after 3 attempts" in row["rare_error"]
    expected = {"malformed_json": "unparseable", "length": "truncated", "empty": "empty response"}[kind]
    assert expected in row["rare_error"]
    if kind != "empty":
        assert row["rare_doc2query_raw"]  # the raw reply is kept
    assert (out.drop(index=1)["rare_status"] == "ok").all()
    assert op.last_summary.failed == 1 and sum(op.last_summary.failures_by_reason.values()) == 1
    assert chats(sim) == len(docs) + 2


def test_several_questions_per_document(sim, llm, docs):
    out = Doc2Query(llm_serving=llm, num_questions=3).process(docs.head(2))
    assert len(out) == 6
    assert out["question_index"].tolist() == [0, 1, 2, 0, 1, 2]
    assert out.groupby("id")["question"].nunique().tolist() == [3, 3]


def test_empty_document_fails_without_a_request(sim, llm, docs):
    docs.loc[0, "text"] = "   "
    out = Doc2Query(llm_serving=llm).process(docs)
    assert out.iloc[0]["rare_status"] == "failed" and "empty" in out.iloc[0]["rare_error"]
    assert chats(sim) == len(docs) - 1


def test_missing_and_existing_columns_are_errors(llm, docs):
    op = Doc2Query(llm_serving=llm)
    with pytest.raises(ValueError, match=r"'body' not found; columns present: 'id', 'title', 'text'"):
        op.process(docs, input_key="body")
    with pytest.raises(InputColumnError, match="'title' already exist"):
        op.process(docs, output_question_key="title")


def test_reason_distill_end_to_end(sim, llm, docs):
    questions = Doc2Query(llm_serving=llm).process(docs)
    frame = with_negatives(questions)
    op = ReasonDistill(llm_serving=llm)
    out = op.process(frame)
    assert (out["rare_status"] == "ok").all() and (out["rare_distill_status"] == "ok").all()
    assert out["reasoning"].str.startswith("[simulated reasoning]").all()
    assert out["answer"].str.startswith("[simulated]").all()
    for order, number in zip(out["document_order"], out["positive_doc_number"]):
        assert sorted(order) == [0, 1, 2]
        assert order[number - 1] == 0
    assert (out["rare_distill_prompt_version"] == rd_prompt.VERSION).all()
    # the same row always gets the same prompt: a rerun is answered from the cache
    sim.reset()
    again = ReasonDistill(llm_serving=llm).process(frame)
    assert chats(sim) == 0
    assert again["document_order"].tolist() == out["document_order"].tolist()


def test_reason_distill_shows_documents_in_the_recorded_order():
    order = rd_prompt.shuffled_order("q\x00positive", 4)
    assert sorted(order) == [0, 1, 2, 3]
    assert rd_prompt.shuffled_order("q\x00positive", 4) == order
    docs = ["POSITIVE", "NEG-A", "NEG-B", "NEG-C"]
    user = rd_prompt.build_messages("s", "q", [docs[j] for j in order])[-1]["content"]
    for number, j in enumerate(order, start=1):
        assert f"[Document {number}]\n{docs[j]}" in user


def test_reason_distill_skips_rows_failed_upstream(sim, llm, docs):
    target = docs["text"][0][:60]
    sim.inject([FaultSpec(kind="malformed_json", count=3, match=target)])
    questions = Doc2Query(llm_serving=llm).process(docs)
    sim.reset()
    op = ReasonDistill(llm_serving=llm)
    out = op.process(with_negatives(questions))
    first = out.iloc[0]
    assert first["rare_status"] == "failed" and first["rare_error"].startswith("doc2query:")
    assert first["rare_distill_status"] == "skipped" and pd.isna(first["reasoning"])
    assert op.last_summary.skipped_upstream_failed == 1
    assert chats(sim) == len(docs) - 1


def test_seed_usage_with_file_storage(sim, llm, tmp_path, docs, monkeypatch):
    """The documented usage of the system we implement, only the imports changed."""
    monkeypatch.chdir(tmp_path)  # BM25HardNeg() keeps its index under ./cache by default
    docs.to_json("docs.jsonl", orient="records", lines=True, force_ascii=False)
    api_llm_serving = llm
    storage = FileStorage(first_entry_file_name="docs.jsonl", cache_path="./cache",
                          file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    Doc2Query(llm_serving=api_llm_serving).run(storage=storage.step(), input_key="text",
                                               output_question_key="question", output_scenario_key="scenario")
    BM25HardNeg().run(storage=storage.step(), input_question_key="question", input_text_key="text",
                      output_negatives_key="hard_negatives", num_neg=3)
    ReasonDistill(llm_serving=api_llm_serving).run(storage=storage.step(), input_text_key="text",
                                                   input_question_key="question", input_scenario_key="scenario",
                                                   input_hardneg_key="hard_negatives", output_key="reasoning")
    step1 = pd.read_json(tmp_path / "cache" / "dataflow_cache_step_step1.jsonl", lines=True)
    assert step1["question"].notna().all()
    final = FileStorage(first_entry_file_name="cache/dataflow_cache_step_step3.jsonl").step().read()
    assert list(final["id"].astype(str)) == list(docs["id"].astype(str))
    assert final["reasoning"].notna().all() and final["answer"].notna().all()
    for own_id, negatives, neg_ids, status in zip(final["id"].astype(str), final["hard_negatives"],
                                                  final["hard_negatives_ids"], final["rare_hardneg_status"]):
        assert own_id not in neg_ids  # the positive is never its own negative
        assert (len(negatives) == 3) == (status == "ok") and status in ("ok", "short")
    assert (final["rare_hardneg_status"] == "ok").any()
    assert chats(sim) == 2 * len(docs)
