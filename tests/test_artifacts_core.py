"""The rules of the step files without Prefect: ``rare_core.artifacts`` (cache keys, the layout,
sidecars, the locks of runs on one cache folder) and the corpus file
(``rare_core.retrieval.corpus_file``), used here with Prefect unimportable or never imported."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from rare_core.artifacts.keys import cache_key, input_key, output_paths
from rare_core.artifacts.layout import input_paths, keyed, spec_path
from rare_core.artifacts.locks import StepLocks
from rare_core.artifacts.refs import ArtifactRef
from rare_core.artifacts.sidecar import recompute_reason, write_step_artifact
from rare_core.config import PipelineConfig
from rare_core.errors import InputColumnError
from rare_core.pipeline import STEP_BY_NAME
from rare_core.retrieval.corpus_file import CorpusWriter, check_columns, title_column

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = [
    "rare_core.artifacts.refs", "rare_core.artifacts.layout", "rare_core.artifacts.keys",
    "rare_core.artifacts.sidecar", "rare_core.artifacts.locks", "rare_core.artifacts.input_files",
    "rare_core.retrieval.corpus_file",
]
SPEC = STEP_BY_NAME["doc2query"]


def _config(tmp: Path, **update) -> PipelineConfig:
    return PipelineConfig(input_path=str(tmp / "docs.jsonl"), cache_path=str(tmp / "cache"),
                          output_path=str(tmp / "out"), **update)


def _input(tmp: Path, texts: list[str]) -> ArtifactRef:
    return ArtifactRef.write(pd.DataFrame({"id": list(range(len(texts))), "text": texts}), tmp / "docs.jsonl")


def test_the_rules_of_the_step_files_load_with_prefect_unimportable():
    code = ("import sys\nsys.modules['prefect'] = None  # any import of prefect now raises ImportError\n"
            + "".join(f"import {m}\n" for m in CORE_MODULES)
            + "print(','.join(m for m in sys.modules if m.split('.')[0] in ('tasks', 'flows', 'deployments')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"loaded the orchestration layer: {out.stdout.strip()}"


def test_a_cache_key_follows_the_settings_and_the_input_bytes_never_the_api_key(tmp_path, monkeypatch):
    config = _config(tmp_path)
    ref = _input(tmp_path, ["first document", "second document"])
    env = config.llm_for(SPEC.role).api_key_env
    monkeypatch.setenv(env, "sk-one")
    key = cache_key(SPEC, ref, config)
    assert key.startswith(f"{SPEC.name}-")
    monkeypatch.setenv(env, "sk-two")
    assert cache_key(SPEC, ref, config) == key
    settings = SPEC.settings(config)
    assert cache_key(SPEC, ref, SPEC.with_settings(config, num_questions=settings.num_questions + 1)) != key
    assert cache_key(SPEC, _input(tmp_path, ["first document", "second document!"]), config) != key


def test_the_input_key_follows_the_input_files_bytes(tmp_path):
    config = _config(tmp_path)
    path = Path(config.input_path)
    path.write_text('{"id": 1, "text": "a document"}\n', encoding="utf-8")
    before = input_key(config, 1)
    path.write_text('{"id": 1, "text": "another document"}\n', encoding="utf-8")
    assert input_key(config, 1) != before
    assert input_key(config, 2) != input_key(config, 1)


def test_a_step_writes_its_file_of_the_layout_named_by_its_key(tmp_path):
    config = _config(tmp_path)
    ref = _input(tmp_path, ["a document"])
    key = cache_key(SPEC, ref, config)
    [path] = output_paths(SPEC, ref, config)
    plain = spec_path(config, SPEC)
    assert path == keyed(plain, key) == plain.with_name(f"{plain.stem}-{key.split('-')[-1][:16]}{plain.suffix}")
    shards = input_paths(config, "input-" + "ab" * 32, 3)
    assert [p.name for p in shards] == [f"0000{i}-of-00003-{'ab' * 8}.jsonl" for i in range(3)]
    assert len({p.parent for p in shards}) == 1 and shards[0].parent.name.endswith(".shards")


def test_a_sidecar_written_for_one_key_is_refused_for_another(tmp_path):
    config = _config(tmp_path)
    ref = _input(tmp_path, ["a document"])
    [path] = output_paths(SPEC, ref, config)
    frame = pd.DataFrame({"id": [0], "question": ["q?"]})
    assert recompute_reason(SPEC, ref, config) == "no step file for this input and these settings"
    write_step_artifact(SPEC, f"{SPEC.name}-{'0' * 64}", frame, path)
    assert recompute_reason(SPEC, ref, config) == "the step file was written for another input or other settings"
    write_step_artifact(SPEC, cache_key(SPEC, ref, config), frame, path)
    assert recompute_reason(SPEC, ref, config) is None
    path.write_text(path.read_text() + "\n")
    assert recompute_reason(SPEC, ref, config) == "the step file is missing or was changed"


KEY = "doc2query-" + "cd" * 32


def _hold(cache: str, exclusive: bool, ready, release) -> None:
    with StepLocks(cache) as locks:
        locks.hold({KEY: exclusive})
        ready.set()
        release.wait(60)


@pytest.mark.parametrize("held, wanted, waits", [(False, False, False), (False, True, True), (True, False, True)],
                         ids=["shared-shared", "shared-exclusive", "exclusive-shared"])
def test_step_locks_of_two_processes_share_reads_and_exclude_a_writer(tmp_path, held, wanted, waits):
    """Another process holds ``KEY`` (``held``: exclusively); this one asks for it (``wanted``):
    it waits (and is told so) unless both only read, and gets it once the other lets go."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    other = context.Process(target=_hold, args=(str(tmp_path), held, ready, release))
    other.start()
    try:
        assert ready.wait(60)
        waited = []

        def on_wait(key: str, exclusive: bool) -> None:
            waited.append((key, exclusive))
            release.set()

        with StepLocks(tmp_path) as locks:
            locks.hold({KEY: wanted}, on_wait)
            assert waited == ([(KEY, wanted)] if waits else [])
    finally:
        release.set()
        other.join(60)
    assert other.exitcode == 0


def test_the_corpus_file_holds_ids_texts_and_titles_as_its_reader_expects(tmp_path):
    writer = CorpusWriter(tmp_path / "corpus.parquet", "doc", "body", "headline")
    chunks = [pd.DataFrame({"doc": [1, 2], "body": ["one", None], "headline": ["T1", "T2"]}),
              pd.DataFrame({"doc": [3], "body": ["three"], "headline": [None]})]
    for chunk in chunks:
        writer.write(chunk)
    ref = writer.close(lambda: iter(chunks))
    assert ref.path.endswith(".parquet") and ref.rows == 3 and ref.is_intact()
    table = pq.read_table(ref.path)
    names = table.schema.names
    check_columns(names, "corpus")
    assert title_column(names, "headline") == "title" and title_column(names, None) is None
    assert table.to_pydict() == {"id": [1, 2, 3], "text": ["one", None, "three"], "title": ["T1", "T2", None]}
    with pytest.raises(InputColumnError, match="'text'"):
        check_columns(["id", "body"], "corpus")


def test_the_corpus_file_falls_back_to_jsonl_for_ids_parquet_cannot_hold(tmp_path):
    chunks = [pd.DataFrame({"id": [1, "b"], "text": ["one", "two"]})]
    writer = CorpusWriter(tmp_path / "corpus.parquet", "id", "text", "title")
    writer.write(chunks[0])
    ref = writer.close(lambda: iter(chunks))
    assert ref.path.endswith(".jsonl") and not (tmp_path / "corpus.parquet").exists()
    assert ref.load().to_dict("list") == {"id": [1, "b"], "text": ["one", "two"]}
