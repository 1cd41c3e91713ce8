"""FileStorage and frame I/O: every format round-trips list columns exactly; writes are atomic."""

import json
from pathlib import Path

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


# --- 1. integers stay integers ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_int_column_with_nulls_reads_as_Int64(tmp_path, fmt):
    rows = [{"n": 101, "f": 1.5}, {"n": None, "f": None}, {"f": 2.0}, {"n": 7, "f": 3.0}]
    p = tmp_path / f"d.{fmt}"
    p.write_text("\n".join(json.dumps(r) for r in rows) if fmt == "jsonl" else json.dumps(rows))
    df = read_frame(p)
    assert df["n"].dtype == "Int64"
    assert df["n"].tolist() == [101, pd.NA, pd.NA, 7]
    assert df["f"].dtype == "float64"  # a genuine float column stays float
    assert df["f"].isna().tolist() == [False, True, False, False]


def test_json_int_column_rules(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1, "b": true, "c": 1, "d": null, "e": 2}\n'
                 '{"a": 2, "b": 1, "c": 1.0, "d": null, "e": 3}\n')
    df = read_frame(p)
    assert df["a"].dtype == "int64"  # no nulls: plain int64
    assert df["b"].dtype == object and df["b"].tolist() == [True, 1]  # bools are not ints
    assert df["c"].dtype == "float64"  # 1.0 is a float
    assert df["d"].dtype == object and df["d"].tolist() == [None, None]  # no int at all
    assert df["e"].tolist() == [2, 3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_Int64_with_missing_round_trips_in_every_format(tmp_path, fmt):
    df = pd.DataFrame({"n": pd.array([2**62 + 1, None, -3], dtype="Int64"), "f": [1.5, None, 2.0]})
    back = read_frame(write_frame(df, tmp_path / f"f.{fmt}"))
    assert back["n"].dtype == "Int64"
    assert back["n"].tolist() == [2**62 + 1, pd.NA, -3]  # exact: no float detour
    assert back["f"].dtype == "float64" and back["f"].isna().tolist() == [False, True, False]


def test_parquet_object_ints_with_none_stay_ints(tmp_path):
    df = pd.DataFrame({"n": pd.Series([1, None, 3], dtype=object)})
    back = read_frame(write_frame(df, tmp_path / "f.parquet"))
    assert back["n"].dtype == "Int64" and back["n"].tolist() == [1, pd.NA, 3]


# --- 2. csv round trips exactly -----------------------------------------------------------------


def test_csv_keeps_bools_none_and_empty_strings(tmp_path):
    df = pd.DataFrame({
        "flag": pd.Series([True, None, False], dtype=object),
        "mixed": pd.Series([1, "1", None], dtype=object),
        "text": ["", "NA", None],
        "plain": pd.Series(["", "null", "x"], dtype=object),
        "b": [True, False, True],
        "f": [float("nan"), 0.1 + 0.2, 5e-324],
    })
    path = write_frame(df, tmp_path / "f.csv")
    meta = json.loads((tmp_path / "f.csv.jsoncols").read_text())
    assert sorted(meta["json_columns"]) == ["flag", "mixed", "text"]  # "plain" is pure strings: plain text
    back = read_frame(path)
    assert back["flag"].tolist() == [True, None, False] and back["flag"].dtype == object
    assert back["mixed"].tolist() == [1, "1", None]
    assert back["text"].tolist()[:2] == ["", "NA"] and pd.isna(back["text"][2]) and back["text"].dtype == df["text"].dtype
    assert back["plain"].tolist() == ["", "null", "x"] and back["plain"].dtype == object
    assert back["b"].dtype == bool and back["b"].tolist() == [True, False, True]
    assert back["f"].isna()[0] and back["f"].tolist()[1:] == [0.1 + 0.2, 5e-324]


def test_csv_single_column_of_blanks_keeps_its_rows(tmp_path):
    df = pd.DataFrame({"s": [" ", "", "\t"]})  # found by the property tests: " " alone on a line is a row
    back = read_frame(write_frame(df, tmp_path / "f.csv"))
    assert back["s"].tolist() == [" ", "", "\t"]


def test_user_csv_without_sidecar_reads_empty_as_missing(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("a,b\n1,\n,x\n")
    df = read_frame(p)
    assert df["a"].tolist()[0] == "1" and pd.isna(df["a"][1])
    assert pd.isna(df["b"][0]) and df["b"][1] == "x"


def test_csv_quoted_newlines_and_carriage_returns_round_trip(tmp_path):
    df = pd.DataFrame({"t": ["a\nb", "c\rd", "e\r\nf", 'q "x", y'], "u": ["1", "2", "3", "4"]})
    back = read_frame(write_frame(df, tmp_path / "f.csv"))
    assert back["t"].tolist() == df["t"].tolist() and back["u"].tolist() == df["u"].tolist()


# --- 3. csv and sidecar as a pair ---------------------------------------------------------------


def test_csv_sidecar_records_the_csv_hash(tmp_path):
    import hashlib

    path = write_frame(sample_frame(), tmp_path / "f.csv")
    meta = json.loads((tmp_path / "f.csv.jsoncols").read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_interrupted_before_its_sidecar_is_refused(tmp_path, monkeypatch):
    import os

    path = write_frame(sample_frame(), tmp_path / "f.csv")
    order = []
    real_replace = os.replace

    def replace(src, dst):
        order.append(Path(dst).name)
        if Path(dst).name == "f.csv.jsoncols":
            raise KeyboardInterrupt  # killed between the csv and its sidecar
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_frame(sample_frame().assign(count=[7, 8, 9]), path)
    monkeypatch.undo()
    assert order == ["f.csv", "f.csv.jsoncols"]  # csv first, then the sidecar
    with pytest.raises(StorageError, match="interrupted write; rerun the step") as err:
        read_frame(path)
    assert str(path) in str(err.value) and "f.csv.jsoncols" in str(err.value)


def test_first_csv_write_interrupted_is_not_mistaken_for_a_user_csv(tmp_path, monkeypatch):
    import os

    path = tmp_path / "f.csv"
    path.write_text("id\nold\n")  # a user csv (no sidecar) being replaced
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "f.csv":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_frame(sample_frame(), path)
    monkeypatch.undo()
    with pytest.raises(StorageError, match="interrupted write"):
        read_frame(path)


# --- 4. parquet refuses mixed columns by name ---------------------------------------------------


def test_parquet_mixed_column_is_named(tmp_path):
    df = pd.DataFrame({"ok": ["a", "b"], "x": pd.Series([1, "two"], dtype=object)})
    with pytest.raises(StorageError, match=r"column 'x' mixes int and str; parquet needs one type per column: "
                                           r"use jsonl or json, or convert it"):
        write_frame(df, tmp_path / "f.parquet")
    with pytest.raises(StorageError, match=r"column 'l' mixes int and str in its list items"):
        write_frame(pd.DataFrame({"l": [[1], ["a"]]}), tmp_path / "f.parquet")
    with pytest.raises(StorageError, match=r"column 'b' mixes bool and int"):
        write_frame(pd.DataFrame({"b": pd.Series([True, 2], dtype=object)}), tmp_path / "f.parquet")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left


def test_other_parquet_write_errors_name_the_file(tmp_path):
    df = pd.DataFrame({"d": [{}, {}]})  # a struct without fields: parquet cannot store it
    with pytest.raises(StorageError, match=r"cannot write .*f\.parquet as parquet"):
        write_frame(df, tmp_path / "f.parquet")


# --- 5. lone surrogates, non-UTF-8 bytes, BOM ---------------------------------------------------


def test_lone_surrogate_reads_and_writes_in_json_formats(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a\\ud800b"}\n{"text": "ok \\ud83e\\uddec"}\n')  # lone; and a valid pair
    df = read_frame(p)
    assert df["text"].tolist() == ["a\ud800b", "ok 🧬"]
    for fmt in ("jsonl", "json"):
        out = write_frame(df, tmp_path / f"o.{fmt}")
        assert read_frame(out)["text"].tolist() == ["a\ud800b", "ok 🧬"]
        out.read_bytes().decode("utf-8")  # the file itself is valid UTF-8
    assert "🧬" in (tmp_path / "o.jsonl").read_text(encoding="utf-8")  # lines without a surrogate stay readable


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_lone_surrogate_in_csv_or_parquet_is_named(tmp_path, fmt):
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "text": pd.Series(["w", "x", "y", "z\ud800"], dtype=object)})
    with pytest.raises(StorageError, match=r"column 'text', row 3 holds a lone surrogate \(U\+D800\) "
                                           r"that UTF-8 cannot store; use jsonl or json"):
        write_frame(df, tmp_path / f"f.{fmt}")
    nested = pd.DataFrame({"l": [["a"], ["b", "\udc00"]]})
    with pytest.raises(StorageError, match=r"column 'l', row 1 holds a lone surrogate \(U\+DC00\)"):
        write_frame(nested, tmp_path / f"f.{fmt}")
    assert list(tmp_path.iterdir()) == []


def test_non_utf8_jsonl_line_is_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(StorageError, match=r"line 2: not valid UTF-8"):
        read_frame(p)


@pytest.mark.parametrize("fmt, body", [
    ("jsonl", '{"text": "é"}\n'), ("json", '[{"text": "é"}]'), ("csv", "text\né\n")])
def test_utf8_bom_is_accepted(tmp_path, fmt, body):
    p = tmp_path / f"d.{fmt}"
    p.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    df = read_frame(p)
    assert list(df.columns) == ["text"] and df["text"].tolist() == ["é"]


# --- 6. read_frame edge cases -------------------------------------------------------------------


def test_directory_input_is_named(tmp_path):
    d = tmp_path / "docs.jsonl"
    d.mkdir()
    with pytest.raises(StorageError, match=r"docs\.jsonl is a directory, not a file"):
        read_frame(d)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file_is_named(tmp_path, fmt):
    p = tmp_path / f"d.{fmt}"
    p.write_bytes(b"")
    with pytest.raises(StorageError, match=rf"d\.{fmt} is empty: the input has no documents"):
        read_frame(p)


def test_zero_row_frames_round_trip(tmp_path):
    empty = sample_frame().iloc[:0]
    for fmt in FORMATS:
        back = read_frame(write_frame(empty, tmp_path / f"z.{fmt}"))
        assert len(back) == 0
        if fmt in ("csv", "parquet"):  # jsonl/json have no place for columns without rows
            assert list(back.columns) == list(empty.columns)
    assert read_frame(write_frame(empty, tmp_path / "z.csv")).dtypes.to_dict() == empty.dtypes.to_dict()


def test_json_object_input_is_explained(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"text": "x"}))
    with pytest.raises(StorageError, match=r"d\.json holds a JSON object; a \.json input must be a list of records "
                                           r"\(objects\), or use \.jsonl with one object per line"):
        read_frame(p)


def test_broken_json_gives_line_and_column(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n {"text": "ok"},\n {"text": broken}\n]')
    with pytest.raises(StorageError, match=r"d\.json, line 3, column 11: not valid JSON"):
        read_frame(p)


def test_not_parquet_is_named(tmp_path):
    p = tmp_path / "d.parquet"
    p.write_text("this is not parquet at all")
    with pytest.raises(StorageError, match=r"cannot read .*d\.parquet as parquet"):
        read_frame(p)


def test_parquet_list_and_struct_columns_read_as_python(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "ints": pa.array([[1, None, 3], [], None], type=pa.list_(pa.int64())),
        "rec": pa.array([{"a": 1, "tags": ["x"], "sub": {"k": [2]}}, {"a": None, "tags": [], "sub": None}, None]),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    df = read_frame(tmp_path / "t.parquet")
    assert df["ints"].tolist() == [[1, None, 3], [], None]  # ints stay ints next to a null
    assert df["rec"].tolist() == [{"a": 1, "tags": ["x"], "sub": {"k": [2]}}, {"a": None, "tags": [], "sub": None}, None]
    assert type(df["rec"][0]["tags"]) is list and type(df["rec"][0]["sub"]["k"]) is list


# --- 7. FileStorage API -------------------------------------------------------------------------


def test_step_returns_independent_handles(tmp_path):
    entry = write_frame(pd.DataFrame({"text": ["a", "b"]}), tmp_path / "docs.jsonl")
    storage = FileStorage(first_entry_file_name=str(entry), cache_path=str(tmp_path / "cache"),
                          file_name_prefix="p", cache_type="jsonl")
    s1 = storage.step()
    s2 = storage.step()
    assert s1 is not storage and s2 is not s1
    assert (s1.operator_step, s2.operator_step, storage.operator_step) == (1, 2, 2)
    assert s1.input_path() == entry and s2.input_path() == tmp_path / "cache" / "p_step1.jsonl"
    s1.write(s1.read().assign(one=1))
    assert s2.get_keys_from_dataframe() == ["text", "one"]
    out = s2.write(s2.read().assign(two=2))
    assert out == tmp_path / "cache" / "p_step2.jsonl"
    assert storage.reset() is storage and storage.operator_step == 0
    again = storage.step()
    assert again.input_path() == entry and again.get_keys_from_dataframe() == ["text"]


def test_written_files_get_the_mode_of_files_created_in_place(tmp_path):
    """Files are written to a temp file and renamed: they must not keep mkstemp's private 0600."""
    import os

    from rare_core.storage import FrameWriter, current_umask

    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        frame = pd.DataFrame({"id": [1, 2], "text": ["a", "b"]})
        paths = [write_frame(frame, tmp_path / "whole.jsonl"), write_frame(frame, tmp_path / "whole.parquet")]
        with FrameWriter(tmp_path / "streamed.jsonl") as out:
            out.write(frame)
        paths.append(tmp_path / "streamed.jsonl")
        assert [oct(os.stat(p).st_mode & 0o777) for p in paths] == [oct(0o640)] * 3
    finally:
        os.umask(old)
