"""Property tests of the storage formats: what each format gives back for generated frames.

Each format promises something precise (rare_core/storage/frames.py's docstring):

* csv (with its sidecar): the frame exactly: every dtype, every value, every missing marker.
* jsonl / json: every cell as its JSON value; on read, int columns are int64 / Int64 (with
  nulls), strings ``str``, floats float64, anything else (or an all-null column) object.
* parquet: pandas metadata dtypes (Int64 kept), strings as ``str``, a bool column with nulls as
  object; list/dict cells exact python values, a dict column being a struct (union of keys).
* csv and parquet refuse lone surrogates, naming column and row; parquet refuses mixed columns.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rare_core.errors import StorageError
from rare_core.storage import FORMATS, FileStorage, read_frame, write_frame

SETTINGS = settings(max_examples=60, deadline=None)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.one_of(
    st.text(max_size=8),  # any code point but surrogates: astral ones, controls, NUL included
    st.sampled_from(["", " ", "NA", "nan", "null", "None", "True", "1", "1.5", "🧬", "a,b", '"q"',
                     "x\ny", "x\r\ny", "\r", "\ufeffbom"]),
)
SURROGATE_TEXT = st.builds(lambda a, s, b: a + s + b, st.text(max_size=3),
                           st.integers(0xD800, 0xDFFF).map(chr), st.text(max_size=3))
JSON_LEAF = st.one_of(st.none(), st.booleans(), INT64, TEXT, st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUE = st.recursive(JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=4), c, max_size=3)),
                          max_leaves=6)
FREE_DICT = st.dictionaries(st.text(max_size=4), JSON_VALUE, max_size=3)
# parquet stores a dict column as a struct: one type per key, at least one key in the column
STRUCT_DICT = st.fixed_dictionaries({}, optional={
    "a": st.one_of(st.none(), INT64), "s": TEXT, "tags": st.lists(TEXT, max_size=3),
    "sub": st.fixed_dictionaries({"k": st.lists(INT64, max_size=2)}, optional={"t": TEXT}),
}).filter(bool)

CELLS = {  # kind -> strategy of one cell (None = missing)
    "bool": st.booleans(),
    "bool_none": st.one_of(st.booleans(), st.none()),
    "float": st.one_of(st.floats(allow_infinity=False), st.none()),  # NaN and None both missing
    "int": INT64,
    "Int64": st.one_of(INT64, st.none()),
    "text": st.one_of(TEXT, st.none()),  # pandas infers str (object when all None)
    "text_obj": TEXT,  # an object column of pure strings
    "mixed": st.one_of(INT64, TEXT, st.booleans(), st.none()),
    "list_str": st.one_of(st.lists(TEXT, max_size=3), st.none()),
    "list_int": st.one_of(st.lists(st.one_of(INT64, st.none()), max_size=3), st.none()),
    "dict": st.one_of(FREE_DICT, st.none()),
    "struct": st.one_of(STRUCT_DICT, st.none()),
    "surrogate": st.one_of(SURROGATE_TEXT, TEXT, st.none()),
}
KINDS = {
    "jsonl": [k for k in CELLS if k != "struct"],
    "json": [k for k in CELLS if k != "struct"],
    "csv": [k for k in CELLS if k not in ("struct", "surrogate")],
    "parquet": [k for k in CELLS if k not in ("mixed", "dict", "surrogate")],
}


def column(kind: str, values: list) -> pd.Series:
    """The pandas column a caller would build from ``values`` of ``kind``."""
    if kind == "bool":
        return pd.Series(values, dtype=bool)
    if kind == "float":
        return pd.Series([math.nan if v is None else v for v in values], dtype="float64")
    if kind == "int":
        return pd.Series(values, dtype="int64")
    if kind == "Int64":
        return pd.Series(pd.array(values, dtype="Int64"))
    if kind == "text":
        return pd.Series(values)
    return pd.Series(values, dtype=object)


def valid(kind: str, values: list) -> bool:
    if kind == "mixed":  # really mixed: at least an int and a str
        return any(type(v) is int for v in values) and any(isinstance(v, str) for v in values)
    if kind == "surrogate":
        return any(isinstance(v, str) and re.search("[\ud800-\udfff]", v) for v in values)
    return True


@st.composite
def frames(draw, fmt: str):
    """-> (kinds per column name, raw values per column name, the DataFrame)."""
    n = draw(st.integers(1, 6))
    kinds = draw(st.lists(st.sampled_from(KINDS[fmt]), min_size=1, max_size=5))
    spec, raw, cols = {}, {}, {}
    for i, kind in enumerate(kinds):
        name = f"c{i},{kind} é🧬"  # a comma, a space and non-ASCII in every header
        values = draw(st.lists(CELLS[kind], min_size=n, max_size=n).filter(lambda v, k=kind: valid(k, v)))
        spec[name], raw[name], cols[name] = kind, values, column(kind, values)
    return spec, raw, pd.DataFrame(cols)


def union_fill(cells: list) -> list:
    """What parquet's struct columns give back: every dict with the union of the column's keys
    (absent = None), recursively for dicts under a key."""
    keys = list(dict.fromkeys(k for c in cells if isinstance(c, dict) for k in c))
    sub = {k: [c.get(k) if isinstance(c, dict) else None for c in cells] for k in keys}
    for k, vals in sub.items():
        if any(isinstance(v, dict) for v in vals):
            sub[k] = union_fill(vals)
    return [None if c is None else {k: sub[k][i] for k in keys} for i, c in enumerate(cells)]


def expected(fmt: str, kind: str, values: list, original: pd.Series) -> tuple[str, list]:
    """-> (dtype name, cells) that ``fmt`` promises to give back for this column."""
    if fmt == "csv":
        return str(original.dtype), original.tolist()  # exact
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    if fmt in ("json", "jsonl"):
        if all(missing):
            return "object", [None] * len(values)
        if kind == "bool" or (kind == "bool_none" and not any(missing)):
            return "bool", values
        if kind == "float":
            return "float64", [math.nan if m else v for v, m in zip(values, missing)]
        if kind in ("int", "Int64"):
            return ("Int64" if any(missing) else "int64"), [pd.NA if m else v for v, m in zip(values, missing)]
        if kind in ("text", "text_obj"):
            return "str", [math.nan if m else v for v, m in zip(values, missing)]
        return "object", values  # bools with None, mixed, lists, dicts, surrogates: as written
    # parquet
    if kind == "bool_none":
        return ("bool" if not any(missing) else "object"), values
    if kind == "float":
        return "float64", [math.nan if m else v for v, m in zip(values, missing)]
    if kind == "Int64":
        return "Int64", [pd.NA if m else v for v, m in zip(values, missing)]
    if kind in ("text", "text_obj"):
        if all(missing) and original.dtype == object:
            return "object", [None] * len(values)
        return "str", [math.nan if m else v for v, m in zip(values, missing)]
    if kind == "struct":
        return "object", union_fill(values)
    return str(original.dtype), values  # bool, int, lists


def same(a, b) -> bool:
    """Cell equality, strict about types (1 is not 1.0 nor True) and missing markers
    (NaN, None and pd.NA each only equal themselves); recursive into lists and dicts."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a is b if a is None or a is pd.NA else a == b


def assert_column(back: pd.Series, dtype: str, cells: list, where: str) -> None:
    assert str(back.dtype) == dtype, f"{where}: dtype {back.dtype}, expected {dtype}"
    got = back.tolist()
    assert len(got) == len(cells), where
    for i, (g, e) in enumerate(zip(got, cells)):
        assert same(g, e), f"{where}, row {i}: got {g!r}, expected {e!r}"


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(data=st.data())
def test_file_storage_round_trip_keeps_each_formats_promise(fmt, data):
    spec, raw, df = data.draw(frames(fmt))
    with tempfile.TemporaryDirectory() as tmp:
        storage = FileStorage(first_entry_file_name=f"{tmp}/docs.{fmt}", cache_path=tmp, cache_type=fmt)
        writer, reader = storage.step(), storage.step()
        path = writer.write(df)
        back = reader.read()
        assert reader.get_keys_from_dataframe() == list(df.columns)
        assert sorted(p.name for p in Path(tmp).iterdir()) == sorted(
            [path.name] + ([path.name + ".jsoncols"] if fmt == "csv" else []))  # no temp file left
    assert list(back.columns) == list(df.columns)
    assert isinstance(back.index, pd.RangeIndex) and len(back) == len(df)
    for name, kind in spec.items():
        dtype, cells = expected(fmt, kind, raw[name], df[name])
        assert_column(back[name], dtype, cells, f"{fmt} {kind} column {name!r}")


def first_surrogate(values: list) -> tuple[int, str]:
    for row, v in enumerate(values):
        if isinstance(v, str) and (m := re.search("[\ud800-\udfff]", v)):
            return row, m.group()
    raise AssertionError("no surrogate drawn")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@SETTINGS
@given(before=st.lists(TEXT, max_size=4), values=st.lists(st.one_of(SURROGATE_TEXT, TEXT), min_size=1, max_size=5)
       .filter(lambda v: valid("surrogate", v)), in_list=st.booleans())
def test_csv_and_parquet_name_the_lone_surrogate(fmt, before, values, in_list):
    row, ch = first_surrogate(values)
    cells = [[v] for v in values] if in_list else values
    df = pd.DataFrame({"id": [str(i) for i in range(len(values))],
                       "text": pd.Series(cells, dtype=object)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f.{fmt}"
        write_frame(pd.DataFrame({"id": before}), path)
        old = path.read_bytes()
        with pytest.raises(StorageError) as err:
            write_frame(df, path)
        assert path.read_bytes() == old  # the previous file is untouched
        assert len(list(Path(tmp).iterdir())) == (2 if fmt == "csv" else 1)
    assert str(err.value) == (f"{path}: column 'text', row {row} holds a lone surrogate (U+{ord(ch):04X}) "
                              "that UTF-8 cannot store; use jsonl or json")


@SETTINGS
@given(values=st.lists(st.one_of(INT64, TEXT, st.booleans(), st.none()), min_size=2, max_size=6)
       .filter(lambda v: len({type(x) for x in v if x is not None}) > 1))
def test_parquet_names_a_mixed_column_and_its_types(values):
    df = pd.DataFrame({"ok": [1.5] * len(values), "x": pd.Series(values, dtype=object)})
    types = sorted({type(v).__name__ for v in values if v is not None})
    mixes = types[0] if len(types) == 1 else ", ".join(types[:-1]) + " and " + types[-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.parquet"
        with pytest.raises(StorageError) as err:
            write_frame(df, path)
        assert list(Path(tmp).iterdir()) == []
    assert str(err.value) == (f"{path}: column 'x' mixes {mixes}; parquet needs one type per column: "
                              "use jsonl or json, or convert it")
