"""FileStorage and frame I/O: every format round-trips list columns exactly; writes are atomic."""

import json

import pandas as pd
import pytest

from rare_core.errors import StorageError
from rare_core.storage import FORMATS, FileStorage, read_frame, write_frame


def sample_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": ["a", "b", "c"],
        "text": ["plain", 'quotes " and, commas\nnewline', "unicode: é 漢字 🧬"],
        "hard_negatives": [["n1", "n2, with comma"], [], ['has "quotes"', "[brackets]"]],
        "document_order": [[2, 0, 1], [0], [1, 0, 2]],
        "score": [1.5, 2.0, 0.25],
        "count": [1, 2, 3],
        "question": ["q1", None, "q3"],
    })


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_lists_exactly(tmp_path, fmt):
    df = sample_frame()
    path = write_frame(df, tmp_path / f"f.{fmt}")
    back = read_frame(path)
    assert list(back.columns) == list(df.columns)
    for col in ("id", "text", "hard_negatives", "document_order"):
        assert back[col].tolist() == df[col].tolist(), col
    assert back["score"].tolist() == [1.5, 2.0, 0.25]
    assert [int(v) for v in back["count"]] == [1, 2, 3]
    assert back["question"][0] == "q1" and back["question"][2] == "q3"
    assert back["question"].isna()[1]


def test_unsupported_extension_is_named(tmp_path):
    with pytest.raises(StorageError, match=r"'\.txt'"):
        write_frame(sample_frame(), tmp_path / "x.txt")
    with pytest.raises(StorageError, match="not found"):
        read_frame(tmp_path / "missing.jsonl")


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = write_frame(sample_frame(), tmp_path / "f.jsonl")
    before = path.read_bytes()
    bad = pd.DataFrame({"x": [object()]})  # not JSON serialisable: the write fails midway
    with pytest.raises(TypeError):
        write_frame(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.jsonl"]  # no temp file left behind


def test_file_storage_layout(tmp_path):
    entry = tmp_path / "docs.jsonl"
    write_frame(sample_frame(), entry)
    storage = FileStorage(first_entry_file_name=str(entry), cache_path=str(tmp_path / "cache"),
                          file_name_prefix="dataflow_cache_step", cache_type="parquet")
    s1 = storage.step()
    df = s1.read()
    df["step"] = 1
    out1 = s1.write(df)
    assert out1 == tmp_path / "cache" / "dataflow_cache_step_step1.parquet"
    s2 = storage.step()
    df2 = s2.read()
    assert df2["step"].tolist() == [1, 1, 1]
    assert df2["hard_negatives"].tolist() == sample_frame()["hard_negatives"].tolist()
    assert str(s2.write(df2)).endswith("dataflow_cache_step_step2.parquet")
    assert s2.read("dict")[0]["id"] == "a"


def test_storage_refuses_bad_settings(tmp_path):
    with pytest.raises(StorageError, match="cache_type"):
        FileStorage(first_entry_file_name="docs.jsonl", cache_type="xlsx")
    storage = FileStorage(first_entry_file_name=str(tmp_path / "docs.jsonl"))
    with pytest.raises(StorageError, match="step()"):
        storage.read()


def test_json_input_must_be_records(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"text": "x"}))
    with pytest.raises(StorageError, match="list of records"):
        read_frame(p)


def test_bad_jsonl_line_is_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(StorageError, match="line 2"):
        read_frame(p)
