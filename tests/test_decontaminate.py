"""filters.decontaminate: rows overlapping benchmark items (a shared 13-gram, a near-duplicate)
are caught and dropped or flagged, clean rows are not; the benchmark files are checked before a
run starts and their content is part of the step's cache key; a real benchmark (PubMedQA)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from rare_core.config import PipelineConfig
from rare_core.filters.decontaminate import MATCH, SPEC, BenchmarkError, DecontaminateFilter
from rare_core.pipeline import STEPS
from rare_core.storage import write_frame

PUBMEDQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa"

BENCH_QUESTION = "Does early mobilisation shorten hospital stay after hip fracture in elderly patients?"  # 12 words
CONTEXT_A = ("Hip fractures in older adults are common and costly. Early mobilisation after surgery has been "
             "proposed to reduce complications, but its effect on the length of stay remains uncertain.")
CONTEXT_B = ("We enrolled four hundred and twelve patients aged seventy or older across nine regional hospitals "
             "and randomised them to walking on the first postoperative day or to usual care with bed rest.")
PASSAGE_13 = "randomised them to walking on the first postoperative day or to usual care"  # 13 words of CONTEXT_B
CLEAN_DOC = ("Soil bacteria fix atmospheric nitrogen in root nodules of legumes. The symbiosis supplies ammonia to "
             "the plant and carbon to the bacteria, and crop rotation exploits it to restore fertile fields.")
CLEAN_QUESTION = "How do legumes obtain nitrogen from soil bacteria?"
FILLER = "Nurses recorded daily activity and pain scores in a separate registry of surgical wards in the region"


def benchmark(tmp_path: Path, name: str = "bench.jsonl", rows: list[dict] | None = None) -> Path:
    rows = rows or [
        {"id": "b1", "question": BENCH_QUESTION, "contexts": [CONTEXT_A, CONTEXT_B], "final_decision": "yes"},
        {"id": "b2", "question": "Is coffee intake associated with atrial fibrillation in adults?",
         "contexts": ["A cohort of thirty thousand adults reported coffee intake at baseline."]},
    ]
    path = tmp_path / name
    write_frame(pd.DataFrame(rows), path)
    return path


def run(df: pd.DataFrame, path: Path, **settings) -> tuple[pd.DataFrame, DecontaminateFilter]:
    op = DecontaminateFilter(benchmarks=[str(path)], **settings)
    return op.process(df), op


# --- what is caught --------------------------------------------------------------------------

def test_planted_overlap_is_caught_and_a_clean_row_is_not(tmp_path):
    bench = benchmark(tmp_path)
    df = pd.DataFrame({
        "text": [f"{FILLER}. They then {PASSAGE_13.upper()}, as planned.", CLEAN_DOC, CLEAN_DOC],
        # a near-duplicate of the benchmark question (case, punctuation, one word more), never 13 shared words
        "question": [CLEAN_QUESTION, "does early mobilisation shorten hospital-stay after hip fracture, in elderly "
                                     "patients today", CLEAN_QUESTION],
    })
    out, op = run(df, bench)
    assert out["rare_decontaminate_status"].tolist() == ["filtered", "filtered", "ok"]
    assert out[MATCH].iloc[0] == (f"bench.jsonl item b1 (contexts): document shares the 13-gram '{PASSAGE_13.lower()}'")
    assert out[MATCH].iloc[1].startswith("bench.jsonl item b1 (question): question is a near-duplicate "
                                         "(estimated Jaccard 0.")
    assert out[MATCH].iloc[2] == "" and out["rare_status"].iloc[2] == "ok"
    extra = op.last_summary.extra
    assert (extra["ngram_overlap"], extra["near_duplicate"], extra["kept"]) == (1, 1, 1)
    assert (extra["documents_matched"], extra["questions_matched"], extra["matched:bench.jsonl"]) == (1, 1, 2)
    assert extra["benchmark:bench.jsonl"] == "2 items"


def test_twelve_shared_words_are_not_a_match_thirteen_are(tmp_path):
    bench = benchmark(tmp_path)
    twelve = " ".join(PASSAGE_13.split()[:12])
    docs = [f"{FILLER} and then {twelve} before the audit", f"{FILLER} and then {PASSAGE_13} before the audit"]
    out, op = run(pd.DataFrame({"text": docs, "question": [CLEAN_QUESTION] * 2}), bench)
    assert out["rare_decontaminate_status"].tolist() == ["ok", "filtered"]
    assert out[MATCH].tolist()[0] == ""
    # the n-gram length is the setting: at 12 words the first document overlaps too
    out, _ = run(pd.DataFrame({"text": docs, "question": [CLEAN_QUESTION] * 2}), bench, ngram=12)
    assert out["rare_decontaminate_status"].tolist() == ["filtered", "filtered"]


def test_a_near_duplicate_document_is_caught(tmp_path):
    bench = benchmark(tmp_path)
    # CONTEXT_A with its last word changed; ngram=40 so that only the near-duplicate rule can catch it
    edited = CONTEXT_A.replace("uncertain", "unclear")
    out, _ = run(pd.DataFrame({"text": [edited, CLEAN_DOC]}), bench, ngram=40)
    assert out["rare_decontaminate_status"].tolist() == ["filtered", "ok"]
    assert out[MATCH].iloc[0].startswith("bench.jsonl item b1 (contexts): document is a near-duplicate")
    out, _ = run(pd.DataFrame({"text": [edited]}), bench, ngram=40, near_duplicate_threshold=0.99)
    assert out["rare_decontaminate_status"].tolist() == ["ok"]


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_benchmark_formats(tmp_path, fmt):
    path = tmp_path / f"bench.{fmt}"
    rows = pd.DataFrame({"question": [BENCH_QUESTION], "text": [CONTEXT_B]})
    if fmt == "csv":
        rows.to_csv(path, index=False)  # a user's csv, no sidecar
    else:
        write_frame(rows, path)
    out, op = run(pd.DataFrame({"text": [f"{FILLER} {PASSAGE_13}", CLEAN_DOC]}), path)
    assert out["rare_decontaminate_status"].tolist() == ["filtered", "ok"]
    assert out[MATCH].iloc[0].startswith(f"bench.{fmt} row 1 (text): document shares")  # no id column: its row


# --- drop or flag -----------------------------------------------------------------------------

def test_flag_keeps_the_row_and_drop_filters_it(tmp_path):
    bench = benchmark(tmp_path)
    df = pd.DataFrame({"text": [f"{FILLER} {PASSAGE_13}", CLEAN_DOC], "question": [CLEAN_QUESTION] * 2})
    dropped, drop_op = run(df, bench)
    flagged, flag_op = run(df, bench, action="flag")
    assert dropped["rare_status"].tolist() == ["failed", "ok"]
    assert dropped["rare_error_kind"].iloc[0] == "filtered"
    assert dropped["rare_error"].iloc[0] == f"decontaminate: {dropped[MATCH].iloc[0]}"
    assert flagged["rare_status"].tolist() == ["ok", "ok"] and flagged["rare_error"].tolist() == ["", ""]
    assert flagged[MATCH].tolist() == dropped[MATCH].tolist() and flagged[MATCH].iloc[0]
    assert (drop_op.last_summary.failed, flag_op.last_summary.failed) == (1, 0)
    assert (drop_op.last_summary.extra["flagged"], flag_op.last_summary.extra["flagged"]) == (0, 1)
    assert SPEC.describe(drop_op.last_summary)[0] == ("decontaminated against bench.jsonl (2 items, 13-gram and "
                                                      "near-duplicate): 1 row dropped")
    assert SPEC.describe(flag_op.last_summary)[0].endswith(": 1 row flagged")
    # the match reaches the dataset only when rows are kept flagged
    config = PipelineConfig(input_path="x.jsonl", filters={"decontaminate": {"benchmarks": [str(bench)]}})
    assert SPEC.dataset(config) == {}
    flag_config = SPEC.with_settings(config, action="flag")
    assert SPEC.dataset(flag_config) == {MATCH: MATCH}


def test_disabled_passes_through_and_enabled_needs_a_benchmark(tmp_path):
    df = pd.DataFrame({"text": [f"{FILLER} {PASSAGE_13}"]})
    op = DecontaminateFilter(enabled=False)
    out = op.process(df)
    assert out["rare_decontaminate_status"].tolist() == ["skipped"] and MATCH not in out
    assert SPEC.describe(op.last_summary) == []
    with pytest.raises(ValidationError, match="benchmarks names no file"):
        DecontaminateFilter()


# --- the registry, the preflight, the cache key ----------------------------------------------

def test_registry_place_and_default_off():
    names = [spec.name for spec in STEPS]
    assert names.index("decontaminate") == names.index("leakage_filter") + 1
    assert names.index("decontaminate") > names.index("doc2query")
    config = PipelineConfig(input_path="x.jsonl")
    assert config.filters.decontaminate.enabled is False and not SPEC.enabled(config)
    assert SPEC.keys(config) == {"input_key": "text", "question_key": "question"}


BROKEN = [
    ("missing", "nothing.jsonl", None, "is not a file"),
    ("broken-json", "broken.jsonl", b'{"question": "a"\n', "cannot be read"),
    ("unsupported", "bench.txt", b"hello", "cannot be read"),
    ("no-text-field", "other.jsonl", b'{"id": 1, "label": "x"}\n', "has none of the fields"),
]


@pytest.mark.parametrize("case, name, content, expected", BROKEN, ids=[c[0] for c in BROKEN])
def test_a_bad_benchmark_file_is_refused_before_anything_runs(tmp_path, capsys, case, name, content, expected):
    from deployments.cli import EXIT_USAGE, main

    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "d1", "text": CLEAN_DOC}) + "\n", encoding="utf-8")
    bad = tmp_path / name
    if content is not None:
        bad.write_bytes(content)
    code = main(["run", "--input", str(docs), "--output", str(tmp_path / "out"),
                 "--cache-path", str(tmp_path / "cache"), "--set", "filters.decontaminate.enabled=true",
                 "--set", f"filters.decontaminate.benchmarks={json.dumps([str(bad)])}"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE, err
    assert err.count("\n") == 0 and str(bad) in err and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(BenchmarkError, match=expected):  # the operator API: the same error, naming the file
        DecontaminateFilter(benchmarks=[str(bad)]).process(pd.DataFrame({"text": [CLEAN_DOC]}))


def test_benchmark_content_is_in_the_cache_key_and_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    benchmark(tmp_path)
    config = PipelineConfig(input_path="x.jsonl", filters={"decontaminate": {"enabled": True,
                                                                             "benchmarks": ["bench.jsonl"]}})
    assert config.filters.decontaminate.benchmarks == [str(tmp_path / "bench.jsonl")]
    before = SPEC.cache_settings(config)
    assert SPEC.cache_settings(config) == before
    benchmark(tmp_path, rows=[{"id": "b9", "question": BENCH_QUESTION}])
    assert SPEC.cache_settings(config)["benchmarks_sha256"] != before["benchmarks_sha256"]
    off = PipelineConfig(input_path="x.jsonl")
    assert "benchmarks_sha256" not in SPEC.cache_settings(off)


# --- a real benchmark ---------------------------------------------------------------------------

def test_pubmedqa_contexts_are_caught_and_unrelated_abstracts_are_not(tmp_path):
    if not (PUBMEDQA / "qa_gold.jsonl").is_file() or not (PUBMEDQA / "abstracts.jsonl").is_file():
        pytest.skip(f"PubMedQA data not found at {PUBMEDQA} (qa_gold.jsonl, abstracts.jsonl)")
    bench = Path(shutil.copy(PUBMEDQA / "qa_gold.jsonl", tmp_path / "pubmedqa_test.jsonl"))
    gold = [json.loads(line) for line in bench.read_text(encoding="utf-8").splitlines() if line.strip()]
    gold_ids = {item["id"] for item in gold}
    abstracts = [json.loads(line) for line in (PUBMEDQA / "abstracts.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    unrelated = [a for a in abstracts if a["id"] not in gold_ids][:300]
    planted = []
    for item in gold[10:13]:  # a whole context, as it stands
        planted.append((item["id"], item["text"]))
    for item, host in zip(gold[40:42], unrelated[:2]):  # 30 words of a context inside another abstract
        middle = item["text"].split()[20:50]
        planted.append((item["id"], f"{host['text']} {' '.join(middle)}"))
    df = pd.DataFrame({"id": [f"p{i}" for i in range(len(planted))] + [a["id"] for a in unrelated],
                       "text": [text for _, text in planted] + [a["text"] for a in unrelated],
                       "question": [CLEAN_QUESTION] * len(planted) + [a["title"] for a in unrelated]})
    out, op = run(df, bench)
    status = out["rare_decontaminate_status"]
    assert (status.iloc[:len(planted)] == "filtered").all(), out[MATCH].iloc[:len(planted)].tolist()
    for (item_id, _), match in zip(planted, out[MATCH].iloc[:len(planted)]):
        assert match.startswith(f"pubmedqa_test.jsonl item {item_id} (text): document shares the 13-gram")
    caught = out.iloc[len(planted):][status.iloc[len(planted):] != "ok"]
    assert caught.empty, caught[MATCH].tolist()
    assert op.last_summary.extra["benchmark:pubmedqa_test.jsonl"] == f"{len(gold)} items"
    assert SPEC.describe(op.last_summary)[0] == (f"decontaminated against pubmedqa_test.jsonl ({len(gold)} items, "
                                                 f"13-gram and near-duplicate): {len(planted)} rows dropped")
