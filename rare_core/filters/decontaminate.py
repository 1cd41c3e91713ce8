"""DecontaminateFilter (after Doc2Query): rows that overlap the benchmarks a user will evaluate on.

In: the run's frame and benchmark files (``benchmarks``: jsonl, json, csv or parquet, read with
:func:`rare_core.storage.read_frame`). Out: the frame with ``rare_decontaminate_match`` (what a
row matched, ``""`` when nothing) and the filters' bookkeeping (:mod:`rare_core.filters.common`).

``process(df, input_key="text", question_key="question")`` checks the document and the question
(when that column is present) of each row not failed upstream against every **benchmark piece**:
the text of a field of ``benchmark_fields`` (default question, text, context, contexts; those
the file has) of a benchmark item, each element of a list-valued field (PubMedQA's contexts)
a piece of its own. Texts are compared on their words (:func:`~rare_core.filters.common.words`:
case, Unicode forms and punctuation do not count). A text matches a piece when

* ``ngram_overlap``: it shares a run of ``ngram`` consecutive words (default 13, the window of
  the GPT-3 and Llama contamination studies) with it; a text or piece shorter than that cannot;
* ``near_duplicate``: the estimated Jaccard similarity of their shingles (runs of
  ``shingle_size`` words, as the question dedup shingles: :func:`rare_core.filters.dedup.shingles`)
  is at least ``near_duplicate_threshold`` (MinHash LSH over the pieces, candidates confirmed on
  their estimate; the most similar piece is named).

The document is checked before the question, the n-gram before the near-duplicate; the first
hit is the match: ``"qa_gold.jsonl item 21645374 (text): document shares the 13-gram '...'"``,
``"... (question): question is a near-duplicate (estimated Jaccard 0.91)"``. An item is named by
its ``benchmark_id_field`` value, or by its row (1-based) in a file without that column; a
file by its name (its full path when two benchmarks share a name). With ``action="drop"`` a
matched row is filtered (reason ``decontaminate: <match>``); with ``"flag"`` it is kept, and the
match column reaches the dataset.

``last_summary.extra`` adds ``documents_matched`` / ``questions_matched`` (rows whose document /
question matched), ``matched:<file>`` (matched rows by the file of their match), ``flagged``,
and, as text (a sharded run sums numbers), ``benchmark:<file>`` (``"100 items"``), ``rule`` and
``action``: :func:`describe` makes the report's lines of them. A benchmark file that is missing,
unreadable or without any of the fields raises :class:`BenchmarkError` naming it
(:func:`check_benchmarks`, run by the preflight). The benchmark index is built once per process
for unchanged files (keyed by their content hashes); ``datasketch`` is imported when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from rare_core.errors import RareError, StorageError
from rare_core.filters.common import FilterConfig, FilterOperator, filter_spec, words
from rare_core.filters.dedup import shingles
from rare_core.hashing import file_sha256_memo
from rare_core.operators.base import is_blank, step_column
from rare_core.storage import read_frame

if TYPE_CHECKING:
    from datasketch import MinHash, MinHashLSH

STEP = "decontaminate"
MATCH = step_column(STEP, "match")
NGRAM_OVERLAP = "ngram_overlap"
NEAR_DUPLICATE = "near_duplicate"
SEED = 1  # of the MinHash permutations: runs are reproducible
LSH_WEIGHTS = (0.1, 0.9)  # recall favoured, as in the question dedup: candidates are confirmed on their estimate


class BenchmarkError(RareError, ValueError):
    """A benchmark file cannot be used; the one-line message names it."""


class DecontaminateConfig(FilterConfig):
    """Settings of the decontamination filter."""

    benchmarks: list[str] = Field(default_factory=list, description=(
        "Benchmark files (jsonl, json, csv or parquet) the rows must not overlap: the test sets the trained "
        "model will be evaluated on. Relative paths are resolved against the working directory."))
    benchmark_fields: list[str] = Field(["question", "text", "context", "contexts"], min_length=1, description=(
        "Fields of a benchmark item holding its text, those the file has; each element of a list-valued field "
        "counts on its own."))
    benchmark_id_field: str = Field("id", description="Field naming a benchmark item (else its row in the file).")
    ngram: int = Field(13, ge=1, description="Consecutive words shared with a benchmark item that count as overlap.")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description=(
        "Estimated Jaccard of shingles at or above which a document or question is a near-duplicate of a "
        "benchmark text."))
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(3, ge=1, description="Words per shingle.")
    action: Literal["drop", "flag"] = Field("drop", description=(
        "drop: a matched row is filtered (failed_rows); flag: it is kept, its match in rare_decontaminate_match."))

    @field_validator("benchmarks")
    @classmethod
    def _resolved(cls, value: list[str]) -> list[str]:
        # Resolved here, not by StepSpec.input_files, which takes a field holding one path.
        return [str(Path(path).resolve()) for path in value]

    @model_validator(mode="after")
    def _has_benchmarks(self) -> "DecontaminateConfig":
        if self.enabled and not self.benchmarks:
            raise ValueError("decontaminate is enabled but benchmarks names no file")
        return self


@dataclass(frozen=True)
class Piece:
    """One text of a benchmark item: its file (index into :attr:`BenchmarkIndex.names`), item and field."""

    benchmark: int
    item: str
    field: str


@dataclass
class BenchmarkIndex:
    """The pieces of the benchmarks, by n-gram and by MinHash."""

    names: list[str]
    items: list[int]  # items per file
    pieces: list[Piece]
    ngrams: dict[str, int]  # n-gram (words joined by spaces) -> first piece holding it
    sketches: list[MinHash]
    lsh: MinHashLSH
    template: MinHash  # an empty MinHash with the permutations, copied for each text


def _benchmark_file(path: str) -> str:
    if not Path(path).is_file():
        raise BenchmarkError(f"benchmark file {path} (filters.decontaminate.benchmarks) is not a file")
    return path


def read_benchmark(path: str, fields: list[str], id_field: str) -> tuple[int, list[tuple[str, str, str]]]:
    """The items of one benchmark file -> (how many, [(item label, field, text)]);
    :class:`BenchmarkError` when it is missing, unreadable or has no text in ``fields``."""
    try:
        df = read_frame(_benchmark_file(path))
    except StorageError as exc:
        raise BenchmarkError(f"benchmark file {path} (filters.decontaminate.benchmarks) cannot be read: "
                             f"{exc}") from None
    present = [f for f in fields if f in df.columns]
    if not present:
        raise BenchmarkError(f"benchmark file {path} has none of the fields {', '.join(fields)} "
                             "(filters.decontaminate.benchmark_fields); columns present: "
                             f"{', '.join(map(str, df.columns))}")
    ids = df[id_field].to_numpy(dtype=object) if id_field in df.columns else None
    texts: list[tuple[str, str, str]] = []
    for pos in range(len(df)):
        label = f"item {ids[pos]}" if ids is not None and not is_blank(ids[pos]) else f"row {pos + 1}"
        for field in present:
            value = df[field].iat[pos]
            values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
            texts += [(label, field, v) for v in values if isinstance(v, str) and not is_blank(v)]
    if not texts:
        raise BenchmarkError(f"benchmark file {path} has no text in {', '.join(present)}")
    return len(df), texts


def check_benchmarks(settings: DecontaminateConfig) -> None:
    """Each benchmark file of enabled ``settings`` read (:func:`read_benchmark`); raises
    :class:`BenchmarkError` on the first that cannot be used."""
    if settings.enabled:
        for path in settings.benchmarks:
            read_benchmark(path, settings.benchmark_fields, settings.benchmark_id_field)


def _names(paths: list[str]) -> list[str]:
    """Each file's name, or its full path where two files share the name."""
    names = [Path(p).name for p in paths]
    return [name if names.count(name) == 1 else path for name, path in zip(names, paths)]


@lru_cache(maxsize=4)
def _index(files: tuple[tuple[str, str], ...], fields: tuple[str, ...], id_field: str, ngram: int,
           shingle_size: int, num_perm: int, threshold: float) -> BenchmarkIndex:
    """The index of the benchmark files ((path, sha256) each: a changed file is read again)."""
    from datasketch import MinHash, MinHashLSH  # here: scipy comes with it, slow to import

    items, pieces, tokens_of = [], [], []
    for number, (path, _) in enumerate(files):
        count, texts = read_benchmark(path, list(fields), id_field)
        items.append(count)
        for label, field, text in texts:
            tokens = words(text)
            if tokens:
                pieces.append(Piece(number, label, field))
                tokens_of.append(tokens)
    ngrams: dict[str, int] = {}
    for piece, tokens in enumerate(tokens_of):
        for i in range(len(tokens) - ngram + 1):
            ngrams.setdefault(" ".join(tokens[i:i + ngram]), piece)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    sketches = list(MinHash.generator((shingles(t, shingle_size) for t in tokens_of), num_perm=num_perm, seed=SEED))
    with lsh.insertion_session() as session:
        for piece, sketch in enumerate(sketches):
            session.insert(piece, sketch, check_duplication=False)
    return BenchmarkIndex(_names([path for path, _ in files]), items, pieces, ngrams, sketches, lsh,
                          MinHash(num_perm=num_perm, seed=SEED))


class DecontaminateFilter(FilterOperator):
    step_name = STEP
    config_class = DecontaminateConfig
    reasons = (NGRAM_OVERLAP, NEAR_DUPLICATE)
    config: DecontaminateConfig

    def benchmark_index(self) -> BenchmarkIndex:
        cfg = self.config
        files = tuple((path, file_sha256_memo(_benchmark_file(path))) for path in cfg.benchmarks)
        return _index(files, tuple(cfg.benchmark_fields), cfg.benchmark_id_field, cfg.ngram, cfg.shingle_size,
                      cfg.num_perm, cfg.near_duplicate_threshold)

    def process(self, df: pd.DataFrame, input_key: str = "text", question_key: str = "question") -> pd.DataFrame:
        run = self._start(df, [input_key], input_key=input_key, question_key=question_key)
        if not self.config.enabled:
            return self._finish(run, {})
        cfg, index = self.config, self.benchmark_index()
        documents = run.df[input_key].to_numpy(dtype=object)
        questions = run.df[question_key].to_numpy(dtype=object) if question_key in run.df.columns else None
        # rows of one document repeat: each document is checked once
        document_match = lru_cache(maxsize=4096)(lambda text: self._match(index, text, "document"))

        matches = np.full(len(run.df), "", dtype=object)
        filtered: dict[int, tuple[str, str]] = {}
        counts = {"documents_matched": 0, "questions_matched": 0, **{f"matched:{n}": 0 for n in index.names}}
        for pos in range(len(run.df)):
            if not run.active[pos]:
                continue
            hit = None if is_blank(documents[pos]) else document_match(str(documents[pos]))
            question_hit = None
            if questions is not None and not is_blank(questions[pos]):
                question_hit = self._match(index, str(questions[pos]), "question")
            counts["documents_matched"] += hit is not None
            counts["questions_matched"] += question_hit is not None
            hit = hit or question_hit
            if hit is None:
                continue
            code, benchmark, text = hit
            counts[f"matched:{index.names[benchmark]}"] += 1
            matches[pos] = text
            if cfg.action == "drop":
                filtered[pos] = (code, text)
        out = self._finish(run, filtered, {
            **counts, "flagged": int((matches != "").sum()) if cfg.action == "flag" else 0, "action": cfg.action,
            "rule": f"{cfg.ngram}-gram and near-duplicate",
            **{f"benchmark:{name}": f"{n} items" for name, n in zip(index.names, index.items)}})
        out[MATCH] = matches
        return out

    def _match(self, index: BenchmarkIndex, text: str, what: str) -> tuple[str, int, str] | None:
        """(reason code, benchmark file, description) of the first benchmark piece ``text`` matches, or None."""
        cfg = self.config
        tokens = words(text)
        if not tokens:
            return None
        for i in range(len(tokens) - cfg.ngram + 1):
            run = " ".join(tokens[i:i + cfg.ngram])
            piece = index.ngrams.get(run)
            if piece is not None:
                return NGRAM_OVERLAP, index.pieces[piece].benchmark, \
                    f"{self._where(index, piece)}: {what} shares the {cfg.ngram}-gram '{run}'"
        sketch = index.template.copy()
        sketch.update_batch(list(shingles(tokens, cfg.shingle_size)))
        best, best_j = -1, -1.0
        for piece in index.lsh.query(sketch):
            similarity = sketch.jaccard(index.sketches[piece])
            if similarity > best_j or (similarity == best_j and piece < best):
                best, best_j = piece, similarity
        if best >= 0 and best_j >= cfg.near_duplicate_threshold:
            return NEAR_DUPLICATE, index.pieces[best].benchmark, \
                f"{self._where(index, best)}: {what} is a near-duplicate (estimated Jaccard {best_j:.2f})"
        return None

    @staticmethod
    def _where(index: BenchmarkIndex, piece: int) -> str:
        p = index.pieces[piece]
        return f"{index.names[p.benchmark]} {p.item} ({p.field})"


def _benchmark_hashes(config: Any) -> dict[str, Any]:
    settings = config.filters.decontaminate  # the benchmarks' content counts, like the input's
    if not settings.enabled:
        return {}
    return {"benchmarks_sha256": [file_sha256_memo(_benchmark_file(path)) for path in settings.benchmarks]}


def describe(summary: Any) -> list[str]:
    """The step's lines in the report and the dataset card, from its summary."""
    extra = summary.extra
    if not extra.get("enabled"):
        return []
    verb = "dropped" if extra["action"] == "drop" else "flagged"
    lines = []
    for key, items in extra.items():
        if key.startswith("benchmark:"):
            name = key.removeprefix("benchmark:")
            rows = int(extra.get(f"matched:{name}", 0))
            lines.append(f"decontaminated against {name} ({items}, {extra['rule']}): "
                         f"{rows} row{'' if rows == 1 else 's'} {verb}")
    lines.append(f"benchmark overlap: {int(extra['documents_matched'])} rows by their document, "
                 f"{int(extra['questions_matched'])} by their question")
    return lines


SPEC = replace(
    filter_spec(STEP, DecontaminateFilter, "decontaminate",
                lambda c: {"input_key": c.columns.text, "question_key": c.columns.question},
                "After Doc2Query: documents and questions overlapping benchmark items (13-gram, near-duplicate)."),
    cache_inputs=_benchmark_hashes, describe=describe,
    dataset=lambda c: {MATCH: MATCH} if c.filters.decontaminate.action == "flag" else {})
