"""What every export shares: the rows as training examples, the format descriptor, the writers.

:func:`iter_examples` turns the final dataset frame (``tasks.io.export_dataset``'s columns, named
by ``config.columns``) into :class:`Example` objects holding the teacher's prompt exactly as the
teacher saw it (``reason_distill.build_messages`` over the documents in ``document_order``, each
cut to ``config.distill.max_doc_chars``) and the target ``<think>..</think>\\n<answer>..</answer>``;
:class:`ExampleSource` does it chunk by chunk for a dataset of any size, as often as it is
iterated, and counts what the card needs (:class:`Tally`) in one pass. A format module defines
one :class:`ExportFormat` whose ``write`` turns the examples, as they come, into files.

The preference formats read verification's bookkeeping: ``rare_verify_rejected`` (the samples of
the row's prompt that verification rejected, ``{"sample", "reasoning", "answer", "reason"}``
each; the same list on every row of a question drawn several times) becomes
:attr:`Example.rejected`, and :class:`FirstOfPrompt` hands each prompt's rejected samples out once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd

from rare_core.config import PipelineConfig
from rare_core.step_spec import POSITIVE
from rare_core.operators.doc2query import QUESTION_INDEX
from rare_core.operators.reason_distill import DOCUMENT_ORDER, POSITIVE_DOC_NUMBER, SAMPLE_INDEX
from rare_core.operators.verification import ACCEPTED as VERIFY_ACCEPTED
from rare_core.operators.verification import PASS_RATE, SAMPLES as VERIFY_SAMPLES, VERDICT as VERIFY_VERDICT
from rare_core.operators.verification import REJECTED as VERIFY_REJECTED
from rare_core.prompts import reason_distill

REFERENCE_ANSWER = "reference_answer"
SIMULATED = "rare_simulated"


def plain(value: Any) -> Any:
    """A cell -> plain python (numpy arrays/scalars -> lists/scalars, NaN/NA/NaT -> None), recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def target_text(reasoning: str, answer: str) -> str:
    """The assistant turn every SFT format trains on."""
    return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"


@dataclass(frozen=True)
class Rejected:
    """A sample of a row's prompt that verification rejected (what a trainer needs of it)."""

    reasoning: str
    answer: str

    @property
    def target(self) -> str:
        return target_text(self.reasoning, self.answer)


def _rejected(value: Any, rid: Any) -> list[Rejected]:
    """A plain ``rare_verify_rejected`` cell -> its samples; ``ValueError`` naming the row on a bad shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"row id={rid!r}: {VERIFY_REJECTED} must be a list of samples, got {type(value).__name__}")
    out = []
    for item in value:
        if not (isinstance(item, dict) and isinstance(item.get("reasoning"), str) and isinstance(item.get("answer"), str)):
            raise ValueError(f"row id={rid!r}: each sample in {VERIFY_REJECTED} must be a dict with the texts "
                             f"'reasoning' and 'answer', got {str(item)[:80]!r}")
        out.append(Rejected(reasoning=item["reasoning"], answer=item["answer"]))
    return out


@dataclass
class Example:
    """One dataset row, ready for any format."""

    id: Any
    question: str
    scenario: str
    positive: str
    hard_negatives: list[str]
    document_order: list[int]
    reasoning: str
    answer: str
    simulated: bool
    system: str
    user: str
    target: str
    reference: str | None = None  # the reference (or gold) answer, when the dataset has one
    columns: dict[str, Any] = field(default_factory=dict)  # the plain columns, under the frame's names
    optional: dict[str, Any] = field(default_factory=dict)  # the optional columns present, under the frame's names
    rejected: list[Rejected] = field(default_factory=list)  # the samples of this prompt verification rejected

    @property
    def prompt_key(self) -> bytes:
        """The same for every row of one prompt (a question drawn several times), short to keep."""
        text = json.dumps([str(self.id), self.optional.get(QUESTION_INDEX), self.system, self.user], ensure_ascii=True)
        return hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()

    @property
    def prompt_messages(self) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    @property
    def completion_message(self) -> dict:
        return {"role": "assistant", "content": self.target}

    @property
    def shown_documents(self) -> list[str]:
        docs = [self.positive, *self.hard_negatives]
        return [docs[j] for j in self.document_order]


@dataclass(frozen=True)
class ExportFormat:
    """One export format: ``write(examples, folder, ctx)`` writes its data files into ``folder``
    and returns their names; the rest feeds the dataset card."""

    name: str
    summary: str
    fields: dict[str, str]
    usage: str
    write: Callable[[Iterable[Example], Path, "Context"], list[str]]  # each pass over the examples reads them again
    task_categories: tuple[str, ...] = ("text-generation", "question-answering")
    data_files: str | None = None  # the card's ``configs`` data_files glob (None: not loadable from the hub)
    notes: str = ""
    records: Callable[["Tally"], int] | None = None  # records written, when not one per row (the card's size)
    card_lines: Callable[["Tally"], list[str]] | None = None  # the format's own figures in the card


@dataclass
class Context:
    """What a writer may need besides the examples."""

    config: PipelineConfig
    provenance: dict
    tally: "Tally"


def _names(config: PipelineConfig) -> dict[str, str]:
    k = config.columns
    # The reference column as tasks.io.trainer_columns names it: the input's gold answer when the
    # questions were given, else the one Doc2Query wrote (older configs have neither key).
    if getattr(config, "questions_given", False):
        reference = getattr(k, "gold_answer", "gold_answer")
    else:
        reference = getattr(k, "reference_answer", REFERENCE_ANSWER)
    return {"id": k.id, "question": k.question, "scenario": k.scenario, "hard_negatives": k.hard_negatives,
            "hard_negatives_ids": f"{k.hard_negatives}_ids", "reasoning": k.reasoning, "answer": k.answer,
            "reference": reference}


def reference_column(config: PipelineConfig) -> str:
    """The name of the reference (or gold) answer column in the final dataset."""
    return _names(config)["reference"]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


def _used_columns(dataset: pd.DataFrame, config: PipelineConfig) -> tuple[list[str], list[str]]:
    """(the known columns present, the optional ones among them); ``ValueError`` naming a missing required one."""
    n = _names(config)
    required = [n["id"], n["question"], POSITIVE, n["hard_negatives"], n["reasoning"], n["answer"]]
    missing = [c for c in required if c not in dataset.columns]
    if missing:
        raise ValueError(f"the dataset lacks the column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(map(str, dataset.columns))})")
    known = [n["id"], QUESTION_INDEX, n["question"], n["scenario"], POSITIVE, n["hard_negatives"],
             n["hard_negatives_ids"], DOCUMENT_ORDER, POSITIVE_DOC_NUMBER, n["reasoning"], n["answer"],
             n["reference"], SAMPLE_INDEX, VERIFY_VERDICT, VERIFY_SAMPLES, VERIFY_ACCEPTED, PASS_RATE, SIMULATED]
    used = [c for c in dict.fromkeys(known) if c in dataset.columns]
    optional = (QUESTION_INDEX, SAMPLE_INDEX, n["reference"], VERIFY_VERDICT, VERIFY_SAMPLES, VERIFY_ACCEPTED, PASS_RATE)
    return used, [c for c in optional if c in used]


def iter_examples(dataset: pd.DataFrame, config: PipelineConfig, left_out: dict[str, int]) -> Iterator[Example]:
    """The frame's rows -> examples, one at a time. Rows without a usable reasoning or answer are
    left out and counted into ``left_out`` (reason -> count); a missing required column, or a
    ``document_order`` that is not a permutation of the row's documents, or a badly shaped
    ``rare_verify_rejected``, is a ``ValueError`` naming it (and the row's id). The rejected
    samples go to :attr:`Example.rejected`, not to its columns."""
    n = _names(config)
    used, optional = _used_columns(dataset, config)
    read = used + [VERIFY_REJECTED] if VERIFY_REJECTED in dataset.columns else used
    max_chars = config.distill.max_doc_chars
    for rec in dataset[read].to_dict("records"):
        row = {c: plain(v) for c, v in rec.items()}
        rid = row[n["id"]]
        rejected = _rejected(row.pop(VERIFY_REJECTED, None), rid)
        question, positive = _text(row[n["question"]]), _text(row[POSITIVE])
        scenario = _text(row.get(n["scenario"])) or ""  # a question given without one: no scenario block
        reasoning, answer = row[n["reasoning"]], row[n["answer"]]
        if question is None or positive is None:
            _count(left_out, "no question or positive text")
            continue
        if not isinstance(reasoning, str) or not isinstance(answer, str) or not answer.strip():
            _count(left_out, "no reasoning or answer")
            continue
        negatives = row[n["hard_negatives"]]
        if negatives is None:
            negatives = []
        if isinstance(negatives, str) or not isinstance(negatives, list):
            raise ValueError(f"row id={rid!r}: {n['hard_negatives']} must be a list of texts, got {type(negatives).__name__}")
        negatives = [str(t) for t in negatives]
        docs = [positive, *negatives]
        order = row.get(DOCUMENT_ORDER)
        if order is None:  # not recorded: the operator's own order (seeded by the row)
            order = reason_distill.shuffled_order(f"{question}\x00{positive}", len(docs))
        try:
            order = [int(j) for j in order]
        except (TypeError, ValueError):
            raise ValueError(f"row id={rid!r}: {DOCUMENT_ORDER} must be a list of integers, got {order!r}") from None
        if sorted(order) != list(range(len(docs))):
            raise ValueError(f"row id={rid!r}: {DOCUMENT_ORDER}={order} is not a permutation of the row's "
                             f"{len(docs)} documents (positive + {len(negatives)} hard negatives)")
        number = row.get(POSITIVE_DOC_NUMBER)
        if number is not None and int(number) != order.index(0) + 1:
            raise ValueError(f"row id={rid!r}: {POSITIVE_DOC_NUMBER}={number} disagrees with "
                             f"{DOCUMENT_ORDER}={order} (the positive is document {order.index(0) + 1})")
        system, user = (m["content"] for m in
                        reason_distill.build_messages(scenario, question, [docs[j] for j in order], max_chars))
        row[DOCUMENT_ORDER] = order
        row[n["hard_negatives"]] = negatives
        row[POSITIVE_DOC_NUMBER] = order.index(0) + 1
        simulated = bool(row.get(SIMULATED) or False)
        if SIMULATED in row:
            row[SIMULATED] = simulated
        ref = row.get(n["reference"])
        reference = None if ref is None or (isinstance(ref, str) and not ref.strip()) else str(ref)
        yield Example(
            id=rid, question=question, scenario=scenario, positive=positive, hard_negatives=negatives,
            document_order=order, reasoning=reasoning, answer=answer, simulated=simulated, system=system,
            user=user, target=target_text(reasoning, answer), reference=reference, columns=row,
            optional={c: row[c] for c in optional}, rejected=rejected)


class FirstOfPrompt:
    """Each prompt's rejected samples handed out once: ``of(ex)`` gives the example's rejected
    samples the first time its prompt comes (the first accepted row of its question), ``[]``
    after. Only prompts with rejected samples are remembered (16 bytes each)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def of(self, ex: Example) -> list[Rejected]:
        if not ex.rejected:
            return []
        key = ex.prompt_key
        if key in self._seen:
            return []
        self._seen.add(key)
        return ex.rejected


@dataclass
class Tally:
    """What a dataset card says about the examples of an export, counted in one pass over them."""

    rows: int = 0
    simulated: int = 0
    references: int = 0
    positions: Counter = field(default_factory=Counter)  # 1-based position of the positive -> rows
    documents: Counter = field(default_factory=Counter)  # documents shown -> rows
    verdicts: Counter = field(default_factory=Counter)  # verification verdict ("none" if missing) -> rows
    left_out: dict[str, int] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    drawn: Counter = field(default_factory=Counter)  # samples drawn for the row's question -> rows
    pass_rates: Counter = field(default_factory=Counter)  # rare_pass_rate (rows with one) -> rows
    rejected: int = 0  # rejected samples, each prompt's counted once
    no_rejected: int = 0  # rows whose prompt has no rejected sample
    _first: FirstOfPrompt = field(default_factory=FirstOfPrompt, repr=False)

    @property
    def median_pass_rate(self) -> float | None:
        total = sum(self.pass_rates.values())
        if not total:
            return None
        values, seen = sorted(self.pass_rates.items()), 0
        lower = upper = None
        for value, n in values:
            seen += n
            if lower is None and seen >= (total + 1) // 2:
                lower = value
            if seen >= total // 2 + 1:
                upper = value
                break
        return (lower + upper) / 2

    def add(self, ex: Example) -> None:
        self.rows += 1
        self.simulated += ex.simulated
        self.references += ex.reference is not None
        self.positions[ex.document_order.index(0) + 1] += 1
        self.documents[len(ex.document_order)] += 1
        if VERIFY_VERDICT in ex.optional:
            verdict = ex.optional[VERIFY_VERDICT]
            self.verdicts["none" if verdict is None else str(verdict)] += 1
        if ex.optional.get(VERIFY_SAMPLES) is not None:
            self.drawn[int(ex.optional[VERIFY_SAMPLES])] += 1
        if ex.optional.get(PASS_RATE) is not None:
            self.pass_rates[float(ex.optional[PASS_RATE])] += 1
        self.rejected += len(self._first.of(ex))
        self.no_rejected += not ex.rejected


class ExampleSource:
    """The examples of a dataset read chunk by chunk, as often as a writer iterates them.

    In: ``frames()``, which yields the dataset's rows as consecutive frames (one frame, or a
    file's chunks) each time it is called, and the config naming the columns. Iterating gives
    the examples in order without holding more than a chunk's; :meth:`tally` makes one pass and
    counts what the card needs (and raises, as :func:`iter_examples` does, on a bad row before
    anything is written).
    """

    def __init__(self, frames: Callable[[], Iterable[pd.DataFrame]], config: PipelineConfig) -> None:
        self.frames, self.config = frames, config

    def __iter__(self) -> Iterator[Example]:
        left_out: dict[str, int] = {}
        for frame in self.frames():
            yield from iter_examples(frame, self.config, left_out)

    def tally(self) -> Tally:
        tally = Tally()
        for frame in self.frames():
            tally.columns = tally.columns or _used_columns(frame, self.config)[0]
            for ex in iter_examples(frame, self.config, tally.left_out):
                tally.add(ex)
        return tally


# ---------------------------------------------------------------------------------------------
# writers


def _line(record: dict) -> str:
    try:
        text = json.dumps(record, ensure_ascii=False)
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate: only \u escapes can carry it
        return json.dumps(record, ensure_ascii=True)


def write_jsonl(path: Path, records: Iterable[dict]) -> str:
    """One JSON line per record, written as they come (for a ``.json`` path, one JSON list: :class:`RecordFile`)."""
    with RecordFile(path) as out:
        for record in records:
            out.write(record)
    return path.name


def _dumps(data: Any, indent: int | None = 1) -> str:
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # a lone surrogate: only \u escapes can carry it
        return json.dumps(data, ensure_ascii=True, indent=indent)


def write_json(path: Path, data: Any) -> str:
    path.write_text(_dumps(data) + "\n", encoding="utf-8")
    return path.name


class RecordFile:
    """Records written as they come, for writers that fill several files in one pass: one JSON
    line each (``.jsonl``) or one JSON list laid out as ``json.dumps(list, indent=1)`` (``.json``).
    ``with RecordFile(path) as f: f.write(record)``; ``name`` is the file's name."""

    def __init__(self, path: Path) -> None:
        self.path, self.name, self.as_list, self.count = path, path.name, path.suffix == ".json", 0

    def __enter__(self) -> "RecordFile":
        self._out = open(self.path, "w", encoding="utf-8")
        if self.as_list:
            self._out.write("[")
        return self

    def write(self, record: dict) -> None:
        if self.as_list:
            self._out.write(("," if self.count else "") + "\n " + _dumps(record).replace("\n", "\n "))
        else:
            self._out.write(_line(record) + "\n")
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        try:
            if self.as_list and exc[0] is None:
                self._out.write("\n]\n" if self.count else "]\n")
        finally:
            self._out.close()


def write_with_dataset_info(folder: Path, file: str, records: Iterable[dict], info: dict) -> list[str]:
    """The records (JSONL, or a JSON list for a ``.json`` file) and LLaMA-Factory's ``dataset_info.json``."""
    return [write_jsonl(folder / file, records), write_json(folder / "dataset_info.json", info)]


def dataset_key(fmt: str) -> str:
    """The dataset's name in a LLaMA-Factory ``dataset_info.json``."""
    return "rare_" + fmt.replace("-", "_")
