"""Bad input as a user meets it: each case through ``rare run`` and through the operator API.

Every case ends in one line naming the problem (exit 2, nothing run, no dataset written) or in
flagged rows (each recorded in ``failed_rows`` with its reason): never a traceback without
``-v``, never a half-written dataset, never a row lost without a record.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from prefect_fixtures import SAMPLE

from rare_core import Doc2Query, FileStorage
from rare_core.errors import RareError
from rare_core.inputs import load_documents
from rare_core.config import PipelineConfig
from rare_core.storage import read_frame, write_frame

GOOD = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()[:3]]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(frame: pd.DataFrame, tmp: Path) -> bytes:
    return write_frame(frame, tmp / "p.parquet").read_bytes()


# (case id, file name, content (bytes, or a callable of tmp_path), extra CLI args, expected words in the line)
REFUSED = [
    ("missing-file", "nothing.jsonl", None, [], "not found"),
    ("directory", "folder.jsonl", "DIR", [], "is a directory"),
    ("unknown-extension", "docs.txt", b"hello", [], "unsupported file type '.txt'"),
    ("empty-file", "docs.jsonl", b"", [], "is empty"),
    ("blank-lines-only", "docs.jsonl", b"\n\n  \n", [], "no documents"),
    ("empty-json-list", "docs.json", b"[]", [], "no documents"),
    ("json-object-not-list", "docs.json", b'{"text": "a"}', [], "JSON object"),
    ("broken-json-line-3", "docs.jsonl", jsonl(GOOD[:2]) + b'{"text": "oops"\n', [], "line 3"),
    ("jsonl-line-not-object", "docs.jsonl", jsonl(GOOD[:1]) + b"[1, 2]\n", [], "line 2"),
    ("undecodable-bytes", "docs.jsonl", jsonl(GOOD[:1]) + '{"text": "caf\xe9"}\n'.encode("latin-1"), [], "UTF-8"),
    ("missing-text-column", "docs.jsonl", jsonl([{"body": "x"}]), [], "'text' not found"),
    ("csv-without-text", "docs.csv", b"id,body\n1,hello\n", [], "'text' not found"),
    ("not-parquet", "docs.parquet", b"PAR? certainly not", [], "parquet"),
    ("reserved-column", "docs.jsonl", jsonl([{**GOOD[0], "rare_status": "x"}]), [], "'rare_status'"),
    ("output-column-present", "docs.jsonl", jsonl([{**GOOD[0], "document_order": [0]}]), [], "'document_order'"),
    ("missing-id", "docs.jsonl", jsonl([GOOD[0], {**GOOD[1], "id": None}]), [], "empty in 1 row(s), first row 2"),
    ("id-names-two-documents", "docs.jsonl", jsonl([GOOD[0], {**GOOD[1], "id": GOOD[0]["id"]}]), [], "different documents"),
    ("same-column-for-two-keys", "docs.jsonl", jsonl(GOOD), ["--set", "columns.answer=reasoning"], "both name the column"),
    ("limit-zero", "docs.jsonl", jsonl(GOOD), ["--limit", "0"], "limit"),
    ("unknown-setting", "docs.jsonl", jsonl(GOOD), ["--set", "hardneg.num_negs=3"], "num_negs"),
    ("credentials-in-url", "docs.jsonl", jsonl(GOOD), ["--base-url", "https://u:hunter2@example.invalid/v1",
                                                       "--model", "m"], "credentials"),
    ("endpoint-without-model", "docs.jsonl", jsonl(GOOD), ["--base-url", "http://127.0.0.1:9/v1"], "llm.model"),
    ("mixed-id-types", "docs.jsonl", jsonl([{**GOOD[0], "id": 7}, GOOD[1], {**GOOD[2], "id": 9}]), [],
     "mixes ids of types number (first at row 1) and string (first at row 2)"),
    ("mixed-id-types-parquet-output", "docs.jsonl", jsonl([GOOD[0], {**GOOD[1], "id": 8}]),
     ["--output-format", "parquet", "--export", "hf"], "mixes ids of types string (first at row 1) and number"),
    ("misspelt-setting", "docs.jsonl", jsonl(GOOD), ["--set", "hardneg.numneg=5"], "did you mean hardneg.num_neg?"),
    ("setting-without-section", "docs.jsonl", jsonl(GOOD), ["--set", "num_neg=5"], "did you mean hardneg.num_neg?"),
    ("output-under-a-file", "docs.jsonl", jsonl(GOOD), ["--set", "output_path=docs.jsonl/out"], "is a file"),
    ("cache-under-a-file", "docs.jsonl", jsonl(GOOD), ["--set", "cache_path=docs.jsonl/cache"], "is a file"),
]


@pytest.mark.parametrize("case, name, content, extra, expected", REFUSED, ids=[c[0] for c in REFUSED])
def test_rare_run_refuses_in_one_line(tmp_path, capsys, case, name, content, extra, expected):
    from deployments.cli import EXIT_USAGE, main

    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    extra = [e.replace("docs.jsonl/", f"{path}/") for e in extra]
    code = main(["run", "--input", str(path), "--output", str(tmp_path / "out"),
                 "--cache-path", str(tmp_path / "cache"), *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == EXIT_USAGE, err
    assert expected in err and "Traceback" not in err and "hunter2" not in err
    assert len(lines) <= 3, err  # one line (a config error lists each bad field on its own line)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing ran


OPERATOR_CASES = [c for c in REFUSED if not c[3] and c[0] not in
                  ("reserved-column", "output-column-present", "missing-id", "id-names-two-documents", "mixed-id-types")]


@pytest.mark.parametrize("case, name, content, extra, expected", OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_operator_api_raises_one_named_error(tmp_path, case, name, content, extra, expected):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(RareError) as info:
        storage = FileStorage(first_entry_file_name=path, cache_path=tmp_path / "cache")
        Doc2Query(llm_serving=None).run(storage=storage.step(), input_key="text")
    message = str(info.value)
    assert "\n" not in message and (expected in message or "no documents" in message), message
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


ACCEPTED = [
    ("csv-quoted-newlines", "docs.csv",
     lambda tmp: b'id,text\n1,"line one\nline two, with a comma"\n2,"He said ""hi"""\n', 2),
    ("parquet-list-and-struct", "docs.parquet",
     lambda tmp: parquet_bytes(pd.DataFrame({"id": ["a", "b"], "text": ["one", "two"], "tags": [["x", "y"], []],
                                             "meta": [{"year": 2001}, {"year": 2002}]}), tmp), 2),
    ("bom-prefixed-jsonl", "docs.jsonl", lambda tmp: b"\xef\xbb\xbf" + jsonl(GOOD), 3),
    ("exact-duplicate-rows", "docs.jsonl", lambda tmp: jsonl([GOOD[0], GOOD[0], GOOD[1]]), 3),
]


@pytest.mark.parametrize("case, name, make, rows", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_inputs_that_must_load_as_they_are(tmp_path, case, name, make, rows):
    path = tmp_path / name
    path.write_bytes(make(tmp_path))
    df = load_documents(PipelineConfig(input_path=str(path)))
    assert len(df) == rows
    if case == "csv-quoted-newlines":
        assert df["text"].tolist() == ["line one\nline two, with a comma", 'He said "hi"']
    if case == "parquet-list-and-struct":
        assert df["tags"].tolist() == [["x", "y"], []] and df["meta"].tolist() == [{"year": 2001}, {"year": 2002}]


@pytest.mark.usefixtures("prefect_harness")
def test_rows_that_cannot_be_used_are_flagged_never_lost(tmp_path, capsys, monkeypatch):
    """Whitespace-only, null and non-string texts, and a 5 MB document, in one run."""
    from deployments.cli import EXIT_OK, main

    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    rows = [*GOOD, {"id": "ws", "text": "   \n\t "}, {"id": "null", "text": None}, {"id": "num", "text": 42},
            {"id": "big", "text": ("Aspirin lowers the risk of clots in arteries. " * 110_000)[:5_000_000]}]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl(rows))
    code = main(["run", "--input", str(path), "--output", str(tmp_path / "out"), "--cache-path", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "Traceback" not in captured.err
    dataset = read_frame(tmp_path / "out" / "dataset.jsonl")
    failed = read_frame(tmp_path / "out" / "failed_rows.jsonl")
    assert sorted(failed["id"]) == ["null", "num", "ws"]
    assert (failed["rare_error_kind"] == "input").all() and failed["rare_error"].str.startswith("doc2query: invalid input").all()
    assert sorted(dataset["id"].astype(str)) == sorted([str(r["id"]) for r in GOOD] + ["big"])
    assert len(dataset) + len(failed) == len(rows)  # every row is somewhere


def test_without_pyserini_rare_run_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import importlib.util

    from deployments.cli import EXIT_USAGE, main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyserini" else real(name, *a))
    code = main(["run", "--input", str(SAMPLE), "--output", str(tmp_path / "out"), "--cache-path", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and err.count("\n") == 0
    assert "pyserini is not installed: pip install --no-deps pyserini==1.6.0" in err
    assert not (tmp_path / "c").exists()


def test_rare_run_without_input_names_the_option(tmp_path, capsys):
    from deployments.cli import EXIT_USAGE, main

    assert main(["run", "--output", str(tmp_path / "out")]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == "rare: --input is required (input_path in a --config file)"


def test_a_read_only_output_folder_is_refused_before_anything_runs(tmp_path, capsys):
    from deployments.cli import EXIT_USAGE, main

    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "docs.jsonl").write_bytes(jsonl(GOOD))
    if os.geteuid() == 0:  # root writes through permission bits: a read-only bind mount it is
        mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(locked), str(locked)], capture_output=True,
                                 text=True)
        if mounted.returncode:
            pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr.strip()}")
    else:
        locked.chmod(0o555)
    try:
        code = main(["run", "--input", str(tmp_path / "docs.jsonl"), "--output", str(locked / "out"),
                     "--cache-path", str(tmp_path / "cache")])
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(locked)], check=False)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"output_path (--output) {locked / 'out'} cannot be written" in err
    assert not (tmp_path / "cache").exists()


def test_rare_version(capsys):
    from deployments.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("rare 0.")
