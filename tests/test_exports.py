"""rare_core.exports: every format loads the way its trainer loads it, with the teacher's prompt
and the reasoning + answer target; LLaMA-Factory's dataset_info.json names real fields; the
dataset card's front matter parses and says SIMULATED when it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pandas as pd
import pytest
import yaml
from datasets import load_dataset, load_from_disk

from rare_core.config import PipelineConfig
from rare_core.exports import CARD, FORMATS, export
from rare_core.prompts import reason_distill
from rare_core.prompts.doc2query import truncate
from rare_core.storage import read_frame, write_frame

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "pubmedqa_sample.jsonl"
JSONL = {"messages": "train.jsonl", "sharegpt": "train.jsonl", "alpaca": "train.jsonl",
         "prompt-completion": "train.jsonl", "retrieval": "train.jsonl", "rare": "train.json"}
ORDERS = [[2, 0, 1, 3], [0, 1, 2], [3, 1, 2, 0], [1, 0]]  # indices into [positive, *hard_negatives]


def _docs() -> list[dict]:
    with open(SAMPLE, encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(8), fh)]


def make_frame(simulated: bool = True, extras: bool = False) -> pd.DataFrame:
    """A final dataset as tasks.io.export_dataset writes it: 4 rows, 1-3 negatives each."""
    docs = _docs()
    rows = []
    for i, order in enumerate(ORDERS):
        positive = docs[i]
        negatives = [docs[(i + k) % len(docs)] for k in range(1, len(order))]
        row = {
            "id": positive["id"],
            "question": f"Given the findings on {positive['title'][:60]}, what would change the conclusion?",
            "scenario": f"A clinician reviews case {i}: a patient like those of study {positive['id']}.",
            "positive": positive["text"],
            "hard_negatives": [d["text"] for d in negatives],
            "hard_negatives_ids": [d["id"] for d in negatives],
            "document_order": order,
            "positive_doc_number": order.index(0) + 1,
            "reasoning": f"Document {order.index(0) + 1} is the relevant one (row {i}); the others only look relevant.",
            "answer": ["yes", "no", "maybe", "yes"][i],
            "rare_simulated": simulated and i != 1,
        }
        if extras:
            row = {"id": row.pop("id"), "question_index": i % 2, **row,
                   "reference_answer": ["yes", "yes", "maybe", None][i], "sample_index": 0,
                   "rare_verify_verdict": ["correct", "incorrect", "correct", None][i]}
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return PipelineConfig(input_path=str(SAMPLE))


@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> pd.DataFrame:
    """The frame written and read back as the pipeline does (dataset.jsonl, read_frame)."""
    path = tmp_path_factory.mktemp("final") / "dataset.jsonl"
    write_frame(make_frame(), path)
    return read_frame(path)


PROVENANCE = {
    "steps": [{"step": "doc2query", "rows_in": 8, "rows_out": 6, "failed": 2},
              {"step": "hardneg", "rows_in": 6, "rows_out": 6, "failed": 0},
              {"step": "distill", "rows_in": 6, "rows_out": 4, "failed": 2}],
    "filters": {"answer_matches_reference": {"kept": 4, "removed": 0}},
    "verification": "none",
    "command": ["rare", "run", "--input", "data/pubmedqa_sample.jsonl", "--output", "out/"],
    "simulated": True,
    "language": "en",
}


@pytest.fixture(scope="module")
def exported(frame, config, tmp_path_factory) -> dict[str, Path]:
    return export(frame, config, list(FORMATS), tmp_path_factory.mktemp("exports"), PROVENANCE)


def load_json(path: Path, tmp_path: Path):
    """As LLaMA-Factory, TRL and FlagEmbedding load a local file."""
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def shown(row: pd.Series) -> list[str]:
    docs = [row["positive"], *row["hard_negatives"]]
    return [docs[j] for j in row["document_order"]]


def assert_teacher_prompt(system: str, user: str, row: pd.Series, max_doc_chars: int = 4000) -> None:
    """The prompt holds the question, the scenario and every shown document in the shown order,
    and is exactly what the teacher was sent."""
    assert row["question"] in user and row["scenario"] in user
    positions = []
    for i, doc in enumerate(shown(row), start=1):
        block = f"[Document {i}]\n{truncate(doc, max_doc_chars)}"
        assert block in user, f"document {i} missing from the prompt"
        positions.append(user.index(block))
    assert positions == sorted(positions)
    expected = reason_distill.build_messages(row["scenario"], row["question"], shown(row), max_doc_chars)
    assert [system, user] == [m["content"] for m in expected]


def target_of(row: pd.Series) -> str:
    return f"<think>{row['reasoning']}</think>\n<answer>{row['answer']}</answer>"


def assert_target(text: str, row: pd.Series) -> None:
    assert row["reasoning"] in text and row["answer"] in text
    assert text == target_of(row)


def card_of(folder: Path) -> tuple[dict, str]:
    text = (folder / CARD).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


# --- one test per format, each loaded the way its trainer does ------------------------------


def test_messages_loads_as_openai_chat(exported, frame, tmp_path):
    ds = load_json(exported["messages"] / JSONL["messages"], tmp_path)
    assert ds.column_names == ["messages"] and len(ds) == len(frame)
    for rec, (_, row) in zip(ds, frame.iterrows()):
        assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
        assert_teacher_prompt(rec["messages"][0]["content"], rec["messages"][1]["content"], row)
        assert_target(rec["messages"][2]["content"], row)


def test_sharegpt_loads_with_its_dataset_info(exported, frame, tmp_path):
    folder = exported["sharegpt"]
    info = json.loads((folder / "dataset_info.json").read_text())
    (entry,) = info.values()
    assert entry["formatting"] == "sharegpt"
    ds = load_json(folder / entry["file_name"], tmp_path)
    assert set(entry["columns"].values()) <= set(ds.column_names)
    tags = entry["tags"]
    for rec, (_, row) in zip(ds, frame.iterrows()):
        turns = rec[entry["columns"]["messages"]]
        assert [t[tags["role_tag"]] for t in turns] == [tags["user_tag"], tags["assistant_tag"]]
        assert_teacher_prompt(rec[entry["columns"]["system"]], turns[0][tags["content_tag"]], row)
        assert_target(turns[1][tags["content_tag"]], row)


def test_alpaca_dataset_info_maps_response_to_the_reasoning_target(exported, frame, tmp_path):
    folder = exported["alpaca"]
    info = json.loads((folder / "dataset_info.json").read_text())
    (entry,) = info.values()
    columns = entry["columns"]
    assert {"prompt", "query", "response", "system"} <= set(columns)
    ds = load_json(folder / entry["file_name"], tmp_path)
    assert set(columns.values()) <= set(ds.column_names), "dataset_info.json names a field the file lacks"
    for rec, (_, row) in zip(ds, frame.iterrows()):
        # LLaMA-Factory's alpaca prompt: instruction, then "\n" + input when input is non-empty
        prompt = "\n".join(p for p in (rec[columns["prompt"]], rec[columns["query"]]) if p)
        assert_teacher_prompt(rec[columns["system"]], prompt, row)
        assert_target(rec[columns["response"]], row)
        assert rec[columns["response"]] != row["answer"]  # never the bare label


def test_prompt_completion_loss_falls_on_the_completion_only(exported, frame, tmp_path):
    ds = load_json(exported["prompt-completion"] / JSONL["prompt-completion"], tmp_path)
    assert ds.column_names == ["prompt", "completion"]
    for rec, (_, row) in zip(ds, frame.iterrows()):
        assert [m["role"] for m in rec["prompt"]] == ["system", "user"]
        assert_teacher_prompt(rec["prompt"][0]["content"], rec["prompt"][1]["content"], row)
        assert [m["role"] for m in rec["completion"]] == ["assistant"]
        completion = rec["completion"][0]["content"]
        assert_target(completion, row)
        assert rec["prompt"][1]["content"] not in completion
        assert rec["prompt"][0]["content"] not in completion
        assert not any(doc in completion for doc in shown(row))
        assert row["question"] not in completion


def test_retrieval_query_positive_and_negatives(exported, frame, tmp_path):
    ds = load_json(exported["retrieval"] / JSONL["retrieval"], tmp_path)
    assert {"query", "pos", "neg"} <= set(ds.column_names)
    for rec, (_, row) in zip(ds, frame.iterrows()):
        assert rec["query"] == f"{row['scenario']}\n\n{row['question']}"
        assert rec["pos"] == [row["positive"]]
        assert rec["neg"] == list(row["hard_negatives"])  # full texts, best BM25 first
    _, body = card_of(exported["retrieval"])
    assert "Why the query is scenario + question" in body


def test_rare_record_has_rares_field_semantics(exported, frame, tmp_path):
    folder = exported["rare"]
    assert isinstance(json.loads((folder / JSONL["rare"]).read_text()), list)  # RARE's scripts json.load a list
    ds = load_json(folder / JSONL["rare"], tmp_path)
    assert {"instruction", "predict", "id", "output"} <= set(ds.column_names)
    for rec, (_, row) in zip(ds, frame.iterrows()):
        assert rec["id"] == row["id"]
        assert_teacher_prompt(rec["system"], rec["instruction"], row)
        assert_target(rec["predict"], row)
        assert rec["output"] == row["answer"]  # no reference_answer in this frame
        assert rec["rare_simulated"] == bool(row["rare_simulated"])
    (entry,) = json.loads((folder / "dataset_info.json").read_text()).values()
    assert set(entry["columns"].values()) <= set(ds.column_names)
    assert entry["columns"]["response"] == "predict"


def test_hf_loads_from_disk(exported, frame):
    ds = load_from_disk(str(exported["hf"]))
    assert len(ds) == len(frame)
    assert {"messages", "id", "question", "positive", "hard_negatives", "document_order",
            "reasoning", "answer", "rare_simulated"} <= set(ds.column_names)
    for rec, (_, row) in zip(ds, frame.iterrows()):
        assert rec["id"] == row["id"] and rec["document_order"] == list(row["document_order"])
        assert_teacher_prompt(rec["messages"][0]["content"], rec["messages"][1]["content"], row)
        assert_target(rec["messages"][2]["content"], row)


# --- the dataset card ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_card_front_matter_and_simulated_warning(exported, fmt):
    meta, body = card_of(exported[fmt])
    assert {"license", "task_categories", "size_categories", "tags", "pretty_name"} <= set(meta)
    assert meta["license"] == "other" and meta["size_categories"] == ["n<1K"] and meta["language"] == ["en"]
    assert meta["task_categories"] == (["text-retrieval"] if fmt == "retrieval" else ["text-generation", "question-answering"])
    for config in meta.get("configs", []):
        for files in config["data_files"]:
            assert list(exported[fmt].glob(files["path"])), f"card names {files['path']}, not in the folder"
    assert "SIMULATED" in body and "simulated" in meta["tags"]
    assert "rare-sim-1" in body and reason_distill.VERSION in body
    assert "rare run --input data/pubmedqa_sample.jsonl --output out/" in body
    assert "| distill | 6 | 4 | 2 |" in body and "answer_matches_reference" in body
    assert "Verification: none" in body


def test_card_of_real_answers_is_not_simulated(config, tmp_path):
    out = export(make_frame(simulated=False), config, ["messages"], tmp_path,
                 {"command": "rare run --base-url https://user:secret@llm.example/v1?key=abc123"})
    meta, body = card_of(out["messages"])
    assert "SIMULATED" not in body and "simulated" not in meta["tags"] and "language" not in meta
    assert "secret" not in body and "abc123" not in body  # credentials in the command are redacted


# --- behaviour -------------------------------------------------------------------------------


def test_optional_columns_and_reference_answer(config, tmp_path):
    df = make_frame(extras=True)
    out = export(df, config, ["rare", "hf"], tmp_path, {"verification": "exact match against reference_answer"})
    records = json.loads((out["rare"] / "train.json").read_text())
    assert [r["output"] for r in records] == ["yes", "yes", "maybe", "yes"]  # reference when present, else the answer
    assert [r["rare_verify_verdict"] for r in records] == ["correct", "incorrect", "correct", None]
    assert [r["question_index"] for r in records] == [0, 1, 0, 1]
    _, body = card_of(out["rare"])
    assert "correct: 2" in body and "incorrect: 1" in body
    ds = load_from_disk(str(out["hf"]))
    assert {"question_index", "reference_answer", "sample_index", "rare_verify_verdict"} <= set(ds.column_names)


def test_documents_are_cut_to_the_teachers_budget(tmp_path):
    config = PipelineConfig(input_path=str(SAMPLE), distill={"max_doc_chars": 300})
    df = make_frame()
    out = export(df, config, ["prompt-completion"], tmp_path)
    recs = [json.loads(line) for line in (out["prompt-completion"] / "train.jsonl").read_text().splitlines()]
    for rec, (_, row) in zip(recs, df.iterrows()):
        assert_teacher_prompt(rec["prompt"][0]["content"], rec["prompt"][1]["content"], row, max_doc_chars=300)
        assert row["positive"] not in rec["prompt"][1]["content"]  # the full abstract is longer than 300


def test_parquet_dataset_with_configured_column_names(tmp_path):
    """A parquet final dataset (lists come back as numpy arrays) under renamed columns."""
    config = PipelineConfig(input_path=str(SAMPLE), columns={"question": "q", "reasoning": "thoughts"})
    path = tmp_path / "dataset.parquet"
    write_frame(make_frame().rename(columns={"question": "q", "reasoning": "thoughts"}), path)
    out = export(read_frame(path), config, ["messages"], tmp_path / "exports")
    recs = [json.loads(line) for line in (out["messages"] / "train.jsonl").read_text().splitlines()]
    for rec, (_, row) in zip(recs, make_frame().iterrows()):
        assert_teacher_prompt(rec["messages"][0]["content"], rec["messages"][1]["content"], row)
        assert_target(rec["messages"][2]["content"], row)


def test_unknown_format_is_a_one_line_error(frame, config, tmp_path):
    with pytest.raises(ValueError) as err:
        export(frame, config, ["messages", "openai-jsonl"], tmp_path)
    message = str(err.value)
    assert "\n" not in message and "'openai-jsonl'" in message and all(name in message for name in FORMATS)
    assert not any(tmp_path.iterdir())  # nothing written


def test_inconsistent_document_order_is_refused(config, tmp_path):
    df = make_frame()
    df.at[1, "document_order"] = [0, 1, 5]
    with pytest.raises(ValueError, match=r"id='16418930'.*not a permutation"):
        export(df, config, ["messages"], tmp_path)


def test_rows_without_an_answer_are_left_out_and_counted(config, tmp_path):
    df = make_frame()
    df.at[2, "answer"] = None
    out = export(df, config, ["messages"], tmp_path)
    assert len((out["messages"] / "train.jsonl").read_text().splitlines()) == 3
    _, body = card_of(out["messages"])
    assert "| no reasoning or answer | 1 |" in body


def test_export_replaces_the_folder_atomically(config, tmp_path):
    export(make_frame(), config, ["alpaca"], tmp_path)
    (tmp_path / "alpaca" / "stale.txt").write_text("from an earlier export")
    out = export(make_frame().head(2), config, ["alpaca"], tmp_path)
    assert not (out["alpaca"] / "stale.txt").exists()
    assert len((out["alpaca"] / "train.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpaca"]  # no temporary folder left


def test_other_prompt_version_is_refused(frame, config, tmp_path):
    with pytest.raises(ValueError, match="would not be the teacher's"):
        export(frame, config, ["messages"], tmp_path, {"prompt_versions": {"distill": "reason_distill/v0"}})


def test_questions_given_without_scenario_and_with_gold_answers(tmp_path):
    """Questions given with the input (no scenario column, the gold answer as the reference)."""
    if "questions_given" not in PipelineConfig.model_fields:
        pytest.skip("this PipelineConfig has no questions_given")
    config = PipelineConfig(input_path=str(SAMPLE), questions_given=True)
    df = make_frame().drop(columns=["scenario"])
    df["gold_answer"] = ["yes", "no", "no", "maybe"]
    out = export(df, config, ["messages", "retrieval", "rare"], tmp_path)
    recs = [json.loads(line) for line in (out["messages"] / "train.jsonl").read_text().splitlines()]
    for rec, (_, row) in zip(recs, df.assign(scenario="").iterrows()):
        assert_teacher_prompt(rec["messages"][0]["content"], rec["messages"][1]["content"], row)
    queries = [json.loads(line)["query"] for line in (out["retrieval"] / "train.jsonl").read_text().splitlines()]
    assert queries == df["question"].tolist()
    records = json.loads((out["rare"] / "train.json").read_text())
    assert [r["output"] for r in records] == ["yes", "no", "no", "maybe"]
    _, body = card_of(out["rare"])
    assert "Reference answers: 4 of 4 rows (`gold_answer`)" in body


def test_an_export_read_in_chunks_equals_the_whole_frame_s(tmp_path, config, monkeypatch):
    """``export`` given the dataset as chunks (a file read in parts: the CLI's and the flow's
    way) writes every format's files and card as from the whole frame, and holds one chunk of
    examples at a time; hf's types are unified over the chunks (``reference_answer`` is
    missing in every row of the last chunk)."""
    import rare_core.exports.hf as hf

    frame = make_frame(extras=True)
    frame.loc[3, "reference_answer"] = None
    whole = export(frame, config, list(FORMATS), tmp_path / "whole", PROVENANCE)
    monkeypatch.setattr(hf, "CHUNK_ROWS", 1)
    calls = []

    def chunks():
        calls.append(1)
        return (frame.iloc[a:z].reset_index(drop=True) for a, z in ((0, 2), (2, 3), (3, 4)))

    parts = export(chunks, config, list(FORMATS), tmp_path / "parts", PROVENANCE)
    assert len(calls) == 1 + len(FORMATS) + 1  # the tally, each format, hf's second pass
    for name, file in JSONL.items():
        assert (parts[name] / file).read_bytes() == (whole[name] / file).read_bytes(), name
    for name in FORMATS:
        assert (parts[name] / CARD).read_text() == (whole[name] / CARD).read_text(), name
    assert load_from_disk(str(parts["hf"])).to_list() == load_from_disk(str(whole["hf"])).to_list()
    assert load_from_disk(str(parts["hf"])).features == load_from_disk(str(whole["hf"])).features
