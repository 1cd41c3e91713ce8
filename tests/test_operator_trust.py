"""Rows a user can trust, at the operator level: bookkeeping in its own namespace, any index,
ids that join, integers that stay integers, truncation budgets, the seed operator API."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rare_core import APILLMServing_request, BM25HardNeg, Doc2Query, FileStorage, ReasonDistill
from rare_core.errors import InputColumnError
from rare_core.storage import read_frame, write_frame
from rare_sim import FaultSpec
from test_llm_operators import chats, llm  # noqa: F401 (shared fixture and counter)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl"


@pytest.fixture
def docs() -> pd.DataFrame:
    with open(SAMPLE, encoding="utf-8") as fh:
        return pd.DataFrame([json.loads(line) for line in fh][:6])




def test_user_columns_named_status_and_error_are_plain_data(sim, llm, docs):
    docs["status"] = ["published", "failed", "draft", "failed", "ok", None]
    docs["error"] = "typo in title"
    out = Doc2Query(llm_serving=llm).process(docs)
    assert (out["rare_status"] == "ok").all() and out["question"].notna().all()  # no row skipped
    assert out["status"].tolist() == docs["status"].tolist() and (out["error"] == "typo in title").all()
    assert chats(sim) == len(docs)


def test_non_unique_index_gets_each_document_its_own_question(sim, llm, docs):
    frame = pd.concat([docs.head(3), docs.iloc[3:6]])  # index 0,1,2,0,1,2
    frame.index = [0, 1, 2, 0, 1, 2]
    out = Doc2Query(llm_serving=llm).process(frame)
    assert len(out) == 6 and out["question"].nunique() == 6
    assert out["id"].tolist() == docs["id"].tolist()
    assert list(out.index) == list(range(6))
    for row in out.itertuples():  # each question comes from its own document's words
        assert "Name: text" not in row.question and "dtype" not in row.question


def test_integers_stay_integers_when_a_row_failed(sim, llm, docs, tmp_path):
    target = docs["text"][1][:60]
    sim.inject([FaultSpec(kind="malformed_json", count=3, match=target)])
    questions = Doc2Query(llm_serving=llm, num_questions=2).process(docs.head(3))
    assert str(questions["question_index"].dtype) == "Int64"
    frame = questions.assign(hard_negatives=[[t] for t in questions["text"].iloc[::-1]])
    out = ReasonDistill(llm_serving=llm).process(frame)
    assert str(out["positive_doc_number"].dtype) == "Int64"
    assert out["positive_doc_number"].isna().sum() == 1  # the failed document's one row
    path = write_frame(out, tmp_path / "step.jsonl")
    back = read_frame(path)
    assert str(back["positive_doc_number"].dtype) == "Int64" and str(back["question_index"].dtype) == "Int64"
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert isinstance(first["positive_doc_number"], int) and isinstance(first["question_index"], int)


def test_several_questions_must_be_that_many_and_distinct(sim, llm, docs):
    # The simulator answers N distinct questions; a reply with fewer is re-asked.
    target = docs["text"][0][:60]
    sim.inject([FaultSpec(kind="malformed_json", count=1, match=target)])
    out = Doc2Query(llm_serving=llm, num_questions=3).process(docs.head(2))
    assert len(out) == 6 and out.groupby("id")["question"].nunique().tolist() == [3, 3]


def test_truncated_reply_is_asked_again_with_a_larger_budget_or_fails_at_once(sim, tmp_path, docs):
    target = docs["text"][0][:60]
    llm = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=2, backoff_base=0.01,
                                cache_path=str(tmp_path / "r.sqlite"), max_tokens=1000, max_tokens_cap=4000)
    sim.inject([FaultSpec(kind="length", count=1, match=target)])
    out = Doc2Query(llm_serving=llm).process(docs.head(2))
    assert (out["rare_status"] == "ok").all() and out["rare_doc2query_attempts"].tolist() == [2, 1]
    assert chats(sim) == 3
    # At the cap, a truncated reply is not paid for again: it fails at once, naming the setting.
    sim.reset()
    capped = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=2, backoff_base=0.01,
                                   cache_path=None, max_tokens=4000, max_tokens_cap=4000)
    sim.inject([FaultSpec(kind="length", count=5, match=target)])
    op = Doc2Query(llm_serving=capped)
    out = op.process(docs.head(2))
    row = out.iloc[0]
    assert row["rare_status"] == "failed" and row["rare_error_kind"] == "content"
    assert "max_tokens" in row["rare_error"] and row["rare_doc2query_attempts"] == 1
    assert chats(sim) == 2 and op.last_summary.extra["truncations"] == 1


def test_http_failures_are_request_errors_and_unusable_answers_content_errors(sim, tmp_path, docs):
    llm = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=2, backoff_base=0.01,
                                cache_path=str(tmp_path / "r.sqlite"), max_retries=0)
    sim.inject([FaultSpec(kind="server_error", count=1, match=docs["text"][0][:60]),
                FaultSpec(kind="malformed_json", count=3, match=docs["text"][1][:60])])
    out = Doc2Query(llm_serving=llm).process(docs.head(3))
    assert out["rare_error_kind"].tolist() == ["request", "content", ""]
    # retry_failed asks the unusable row again past the cache; the answered rows stay free.
    sim.reset()
    again = Doc2Query(llm_serving=llm, retry_failed=True).process(docs.head(3))
    assert (again["rare_status"] == "ok").all()
    assert chats(sim) == 2  # the request failure (never cached) and the unusable row
    assert again["question"].iloc[2] == out["question"].iloc[2]


def test_custom_id_column_and_integer_ids_join(tmp_path):
    frame = pd.DataFrame({
        "doc_id": [101, 102, 103, 104],
        "text": ["Aspirin inhibits platelet aggregation and lowers clot risk.",
                 "Aspirin reduces fever and inhibits prostaglandin synthesis.",
                 "Warfarin is an anticoagulant that lowers clot risk.",
                 "Platelet aggregation leads to clot formation in arteries."],
        "question": ["How does aspirin lower clot risk through platelets?"] * 4})
    out = BM25HardNeg(index_dir=str(tmp_path / "idx"), max_score_ratio=None, exclude_group_positives=False).process(
        frame, num_neg=2, input_id_key="doc_id")  # one question for every row: the others' documents are candidates
    known = set(frame["doc_id"])
    for own, ids in zip(frame["doc_id"], out["hard_negatives_ids"]):
        assert ids and all(type(i) is int and i in known and i != own for i in ids)


def test_seed_operator_api(sim, docs, tmp_path, monkeypatch):
    import inspect

    params = list(inspect.signature(APILLMServing_request).parameters.values())[:5]
    assert [(p.name, p.default) for p in params] == [
        ("api_url", "https://api.openai.com/v1/chat/completions"), ("key_name_of_api_key", "DF_API_KEY"),
        ("model_name", "gpt-4o"), ("max_workers", 10), ("max_retries", 5)]
    APILLMServing_request()  # the documented defaults construct
    monkeypatch.chdir(tmp_path)
    write_frame(docs.head(3), tmp_path / "docs.jsonl")
    llm = APILLMServing_request(sim.base_url + "/chat/completions", "DF_API_KEY", "teacher", 4, 1)
    llm.start_serving()
    storage = FileStorage(first_entry_file_name="docs.jsonl", cache_path="./cache",
                          file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    first, second = storage.step(), storage.step()  # two handles at once
    assert Doc2Query(llm_serving=llm).run(storage=first, input_key="text") == ["question", "scenario"]
    assert BM25HardNeg().run(storage=second, input_question_key="question", input_text_key="text",
                             output_negatives_key="hard_negatives", num_neg=2) == ["hard_negatives"]
    keys = ReasonDistill(llm_serving=llm).run(storage=storage.step(), input_text_key="text")
    assert keys[:2] == ["reasoning", "answer"]
    assert "reasoning" in storage.step().get_keys_from_dataframe()
    texts = llm.generate_from_conversations([[{"role": "user", "content": "Say hi."}]])
    assert texts and isinstance(texts[0], str)
    llm.cleanup()
    assert storage.reset().operator_step == 0


def test_step_keys_must_be_distinct(llm, docs):
    with pytest.raises(InputColumnError, match="both name the column 'text'"):
        Doc2Query(llm_serving=llm).process(docs, output_question_key="text", overwrite=True)
    frame = docs.assign(question="q?", scenario="s", hard_negatives=[[]] * len(docs))
    with pytest.raises(InputColumnError, match="output_key and output_answer_key both name the column 'x'"):
        ReasonDistill(llm_serving=llm).process(frame, output_key="x", output_answer_key="x")
