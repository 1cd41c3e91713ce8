"""The input read and checked chunk by chunk (rare_core.inputs.iter_documents): the same
documents as one read, and the checks that look across rows still see every row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rare_core.config import PipelineConfig
from rare_core.inputs import InputError, count_documents, iter_documents, load_documents, preflight
from rare_core.storage import read_frame


def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _docs(n: int, ids: bool = True) -> list[dict]:
    return [{**({"id": i} if ids else {}), "text": f"document number {i} about topic {i % 3}"} for i in range(n)]


@pytest.mark.parametrize("ids", [True, False])
def test_chunks_concatenated_are_the_documents_of_one_read(tmp_path, ids):
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", _docs(23, ids)))
    chunks = list(iter_documents(config, chunk_rows=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    assert all(c.index.equals(pd.RangeIndex(len(c))) for c in chunks)
    whole = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(whole, load_documents(config))
    assert whole["id"].is_unique and len(whole) == 23 == count_documents(config) == preflight(config)


def test_limit_stops_inside_a_chunk(tmp_path):
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", _docs(23)), limit=7)
    assert [len(c) for c in iter_documents(config, chunk_rows=5)] == [5, 2]
    assert count_documents(config) == 7


def test_one_id_for_two_texts_in_different_chunks_is_found_with_its_rows(tmp_path):
    records = _docs(12)
    records[10]["id"] = 2  # row 11 reuses row 3's id for another text
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", records))
    with pytest.raises(InputError, match=r"id '2' \(column 'id'\) names 2 different documents \(rows 3, 11\)"):
        list(iter_documents(config, chunk_rows=4))


def test_the_same_document_twice_across_chunks_is_not_an_error(tmp_path):
    records = _docs(8) + [_docs(8)[1]]
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", records))
    assert sum(len(c) for c in iter_documents(config, chunk_rows=3)) == 9


def test_a_missing_id_in_a_later_chunk_names_its_row(tmp_path):
    records = _docs(10)
    del records[8]["id"]
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", records))
    with pytest.raises(InputError, match=r"is empty in 1 row\(s\), first row 9"):
        list(iter_documents(config, chunk_rows=4))


def test_an_id_column_that_starts_in_a_later_chunk_is_refused(tmp_path):
    records = _docs(3, ids=False) + _docs(6)[3:]
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", records))
    with pytest.raises(InputError, match=r"first appears at row 4, so it is empty in rows 1-3"):
        list(iter_documents(config, chunk_rows=3))


def test_a_text_column_never_seen_is_refused_with_the_columns_present(tmp_path):
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", [{"id": i, "body": "x"} for i in range(7)]))
    with pytest.raises(InputError, match=r"input column 'text' not found \(columns.text\); columns present: 'id', 'body'"):
        list(iter_documents(config, chunk_rows=3))


def test_a_text_key_first_seen_in_a_later_chunk_gives_the_earlier_rows_no_text(tmp_path):
    records = [{"id": 0, "title": "t"}, {"id": 1, "title": "t"}] + _docs(4)[2:]
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", records))
    whole = pd.concat(list(iter_documents(config, chunk_rows=2)), ignore_index=True)
    assert whole["text"].isna().tolist() == [True, True, False, False]  # flagged per row later, never lost


def test_a_reserved_column_in_a_later_chunk_is_refused(tmp_path):
    records = _docs(6)
    records[5]["rare_status"] = "ok"
    config = PipelineConfig(input_path=_jsonl(tmp_path / "d.jsonl", records))
    with pytest.raises(InputError, match="'rare_status' use the prefix 'rare_'"):
        list(iter_documents(config, chunk_rows=2))


def test_parquet_input_streams_by_batches(tmp_path):
    from rare_core.storage import write_frame

    path = tmp_path / "d.parquet"
    write_frame(pd.DataFrame(_docs(11)), path)
    config = PipelineConfig(input_path=str(path))
    chunks = list(iter_documents(config, chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), read_frame(path))
