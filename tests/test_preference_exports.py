"""The preference exports (``dpo``, ``kto``) built from the samples verification rejected: they load
with HF ``datasets`` in TRL's shapes, LLaMA-Factory's ``dataset_info.json`` marks them (``ranking``,
``kto_tag``), each rejected sample is used once, each label is its verdict; every card shows the
samples drawn and the pass rate when the dataset records them."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: never the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pandas as pd
import pytest
from datasets import load_dataset, load_from_disk

from rare_core.config import PipelineConfig
from rare_core.exports import CARD, export, file_chunks
from rare_core.exports.base import Tally
from rare_core.storage import write_frame
from test_exports import SAMPLE, assert_teacher_prompt, card_of, make_frame, target_of

# Question -> (samples drawn, rejected answers). Question 0 was drawn until two samples passed
# (two rows, sample_index 0 and 2, the second one last in the frame); question 1 passed at once
# (an empty list), question 3 has no list at all.
DRAWN = {0: 4, 1: 1, 2: 3, 3: 1}
REJECTED = {0: [(1, "no"), (3, "maybe")], 1: [], 2: [(0, "no"), (1, "yes")], 3: None}


def rejected_target(q: int, sample: int, answer: str) -> str:
    return f"<think>Sample {sample} of question {q} misreads the documents.</think>\n<answer>{answer}</answer>"


def preference_frame() -> pd.DataFrame:
    """5 accepted rows of 4 questions, with verification's bookkeeping (the lead's contract)."""
    base = make_frame(simulated=False, extras=True).drop(columns=["question_index"])
    rows = []
    for q, row in enumerate(base.to_dict("records")):
        rejected = REJECTED[q]
        accepted = 2 if q == 0 else 1
        rows.append({**row, "sample_index": 0, "rare_verify_verdict": "accepted",
                     "rare_verify_samples": DRAWN[q], "rare_verify_accepted": accepted,
                     "rare_pass_rate": accepted / DRAWN[q] if DRAWN[q] > 1 else None,
                     "rare_verify_rejected": None if rejected is None else [
                         {"sample": s, "reasoning": f"Sample {s} of question {q} misreads the documents.",
                          "answer": a, "reason": f"'{a}' does not match the reference"} for s, a in rejected]})
    second = dict(rows[0], sample_index=2, reasoning="A second accepted reading of the positive.", answer="yes")
    return pd.DataFrame([*rows, second])


FRAME = preference_frame()
ROW_OF_QUESTION = [0, 1, 2, 3]  # the first row of each question
ALL_REJECTED = [rejected_target(q, s, a) for q, items in REJECTED.items() for s, a in items or []]


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return PipelineConfig(input_path=str(SAMPLE))


@pytest.fixture(scope="module")
def exported(config, tmp_path_factory) -> dict[str, Path]:
    return export(FRAME, config, ["dpo", "kto", "messages"], tmp_path_factory.mktemp("pref"))


def load(path: Path, tmp_path: Path):
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def question_of(user: str) -> int:
    """The question whose teacher prompt ``user`` is."""
    (q,) = [q for q in ROW_OF_QUESTION if FRAME.loc[q, "question"] in user]
    return q


def info_entry(folder: Path) -> dict:
    (entry,) = json.loads((folder / "dataset_info.json").read_text()).values()
    return entry


# --- dpo -------------------------------------------------------------------------------------


def test_dpo_loads_in_trls_preference_shape(exported, tmp_path):
    ds = load(exported["dpo"] / "dpo.jsonl", tmp_path)
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert len(ds) == len(ALL_REJECTED) == 4
    for rec in ds:
        assert [m["role"] for m in rec["prompt"]] == ["system", "user"]
        assert [m["role"] for m in rec["chosen"]] == ["assistant"] == [m["role"] for m in rec["rejected"]]
        q = question_of(rec["prompt"][1]["content"])
        row = FRAME.loc[q]
        assert_teacher_prompt(rec["prompt"][0]["content"], rec["prompt"][1]["content"], row)
        chosen, rejected = rec["chosen"][0]["content"], rec["rejected"][0]["content"]
        assert chosen != rejected
        assert chosen == target_of(row)  # the first accepted row of the question, not its second
        assert rejected.startswith("<think>Sample ") and f"of question {q} " in rejected


def test_each_rejected_sample_is_paired_once_and_rows_without_one_give_none(exported, tmp_path):
    ds = load(exported["dpo"] / "dpo.jsonl", tmp_path)
    assert Counter(rec["rejected"][0]["content"] for rec in ds) == Counter(ALL_REJECTED)
    paired = {question_of(rec["prompt"][1]["content"]) for rec in ds}
    assert paired == {0, 2}  # questions 1 (empty list) and 3 (no list) give no pair
    _, body = card_of(exported["dpo"])
    assert "**4 preference pairs**" in body and "2 of 5 rows have no rejected sample" in body


def test_dpo_llamafactory_file_is_marked_ranking(exported, tmp_path):
    folder = exported["dpo"]
    entry = info_entry(folder)
    assert entry["ranking"] is True and entry["formatting"] == "sharegpt"
    records = json.loads((folder / entry["file_name"]).read_text())
    assert isinstance(records, list)
    ds = load(folder / entry["file_name"], tmp_path)
    assert set(entry["columns"].values()) <= set(ds.column_names)
    trl = [json.loads(line) for line in (folder / "dpo.jsonl").read_text().splitlines()]
    assert len(records) == len(trl)
    cols = entry["columns"]
    for rec, pair in zip(records, trl):
        # LLaMA-Factory's ranking rows: an odd number of turns ending with the user's, then the two answers
        assert rec[cols["messages"]] == [{"from": "human", "value": pair["prompt"][1]["content"]}]
        assert rec[cols["system"]] == pair["prompt"][0]["content"]
        assert rec[cols["chosen"]] == {"from": "gpt", "value": pair["chosen"][0]["content"]}
        assert rec[cols["rejected"]] == {"from": "gpt", "value": pair["rejected"][0]["content"]}


def test_dpo_without_rejected_samples_is_empty_and_says_so(config, tmp_path):
    out = export(make_frame(), config, ["dpo", "kto"], tmp_path)
    assert (out["dpo"] / "dpo.jsonl").read_text() == ""
    assert json.loads((out["dpo"] / "dpo_sharegpt.json").read_text()) == []
    meta, body = card_of(out["dpo"])
    assert "configs" not in meta  # an empty file does not load: the card does not offer it
    assert "No pair" in body and "**0 preference pairs**" in body
    labels = [json.loads(line)["label"] for line in (out["kto"] / "kto.jsonl").read_text().splitlines()]
    assert labels == [True] * len(make_frame())


# --- kto -------------------------------------------------------------------------------------


def test_kto_one_record_per_sample_labelled_by_its_verdict(exported, tmp_path):
    ds = load(exported["kto"] / "kto.jsonl", tmp_path)
    assert ds.column_names == ["prompt", "completion", "label"]
    accepted = [target_of(row) for _, row in FRAME.iterrows()]
    assert len(ds) == len(accepted) + len(ALL_REJECTED) == 9
    completions = [rec["completion"][0]["content"] for rec in ds]
    assert Counter(completions) == Counter(accepted + ALL_REJECTED)  # every sample once
    for rec, completion in zip(ds, completions):
        assert [m["role"] for m in rec["completion"]] == ["assistant"]
        assert rec["label"] is (completion in accepted)
        assert rec["label"] is not (completion in ALL_REJECTED)
        q = question_of(rec["prompt"][1]["content"])
        assert_teacher_prompt(rec["prompt"][0]["content"], rec["prompt"][1]["content"], FRAME.loc[q])
        if not rec["label"]:
            assert f"of question {q} " in completion  # a rejected sample comes with its own prompt
    assert Counter(ds["label"]) == {True: 5, False: 4}
    _, body = card_of(exported["kto"])
    assert "**9 labelled samples**: 5 accepted" in body and "4 rejected" in body


def test_kto_llamafactory_file_as_rares_kto_stage_builds_it(exported):
    folder = exported["kto"]
    entry = info_entry(folder)
    assert entry["formatting"] == "sharegpt" and "ranking" not in entry
    assert entry["columns"]["messages"] == "conversations" and entry["columns"]["kto_tag"] == "kto_tag"
    records = json.loads((folder / entry["file_name"]).read_text())  # a JSON list, as RARE writes it
    trl = [json.loads(line) for line in (folder / "kto.jsonl").read_text().splitlines()]
    assert len(records) == len(trl)
    for rec, sample in zip(records, trl):
        assert set(entry["columns"].values()) <= set(rec)
        assert type(rec["kto_tag"]) is bool and rec["kto_tag"] == sample["label"]  # LLaMA-Factory needs a bool
        assert rec["conversations"] == [{"from": "human", "value": sample["prompt"][1]["content"]},
                                        {"from": "gpt", "value": sample["completion"][0]["content"]}]
        assert rec["system"] == sample["prompt"][0]["content"]


# --- cards -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["dpo", "kto", "messages"])
def test_every_card_shows_samples_drawn_and_the_pass_rate(exported, fmt, tmp_path):
    meta, body = card_of(exported[fmt])
    assert "### Samples drawn and pass rate" in body
    # samples drawn -> rows: question 0's two rows drew 4, questions 1 and 3 one, question 2 three
    assert "| samples drawn | rows |\n|---|---|\n| 1 | 2 |\n| 3 | 1 |\n| 4 | 2 |" in body
    assert "over the 3 rows whose question drew more than one sample): 0.5." in body  # 0.5, 0.5, 1/3
    (config,) = meta["configs"]
    (files,) = config["data_files"]
    ds = load(exported[fmt] / files["path"], tmp_path)  # the card's data_files load
    assert len(ds) == {"dpo": 4, "kto": 9, "messages": 5}[fmt]


def test_no_pass_rate_lines_without_the_columns(config, tmp_path):
    out = export(make_frame(), config, ["messages"], tmp_path)
    _, body = card_of(out["messages"])
    assert "Samples drawn" not in body and "pass rate" not in body


def test_median_pass_rate_of_an_even_count():
    tally = Tally(pass_rates=Counter({0.25: 1, 0.5: 1, 1.0: 2}))
    assert tally.median_pass_rate == 0.75
    assert Tally(pass_rates=Counter({0.25: 3, 0.5: 1})).median_pass_rate == 0.25
    assert Tally().median_pass_rate is None


# --- reading ---------------------------------------------------------------------------------


def test_parquet_in_chunks_pairs_a_question_split_across_chunks_once(config, tmp_path):
    """The question's second row sits in another chunk (file_chunks of 2 rows): its rejected
    samples are still used once, and every file equals the whole frame's export."""
    path = tmp_path / "dataset.parquet"
    write_frame(FRAME, path)
    whole = export(FRAME, config, ["dpo", "kto"], tmp_path / "whole")
    parts = export(file_chunks(path, rows=2), config, ["dpo", "kto"], tmp_path / "parts")
    for fmt, files in {"dpo": ["dpo.jsonl", "dpo_sharegpt.json"], "kto": ["kto.jsonl", "kto_sharegpt.json"]}.items():
        for name in [*files, CARD]:
            assert (parts[fmt] / name).read_bytes() == (whole[fmt] / name).read_bytes(), (fmt, name)
    assert len((parts["dpo"] / "dpo.jsonl").read_text().splitlines()) == 4


def test_rare_and_hf_keep_the_counts_not_the_rejected_samples(config, tmp_path):
    out = export(FRAME, config, ["rare", "hf"], tmp_path)
    records = json.loads((out["rare"] / "train.json").read_text())
    assert [r["rare_verify_accepted"] for r in records] == [2, 1, 1, 1, 2]
    assert [r["rare_pass_rate"] for r in records] == [0.5, None, pytest.approx(1 / 3), None, 0.5]
    assert all("rare_verify_rejected" not in r for r in records)
    ds = load_from_disk(str(out["hf"]))
    assert {"rare_verify_samples", "rare_pass_rate"} <= set(ds.column_names)
    assert "rare_verify_rejected" not in ds.column_names


@pytest.mark.parametrize("cell, message", [
    ("no, yes", "must be a list of samples, got str"),
    ([{"sample": 1, "reasoning": "r"}], "must be a dict with the texts 'reasoning' and 'answer'"),
])
def test_a_badly_shaped_rejected_cell_is_refused_naming_the_row(config, tmp_path, cell, message):
    df = FRAME.copy()
    df.at[1, "rare_verify_rejected"] = cell
    with pytest.raises(ValueError, match=rf"id='{df.loc[1, 'id']}'.*{message}"):
        export(df, config, ["dpo"], tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything is written
