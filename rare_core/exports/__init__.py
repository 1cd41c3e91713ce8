"""Exporters of the final dataset into the formats trainers read.

``export(dataset, config, formats, out_dir, provenance) -> {format: folder}`` writes one folder per
format, ``{out_dir}/{format}/``, holding the data file(s) and a dataset card ``README.md``.
``dataset`` is the final dataset as ``tasks.io.export_dataset`` writes it: a frame, or a function
giving its rows as consecutive frames each time it is called (a file read chunk by chunk, e.g.
:func:`file_chunks`), so that an export of any size holds one chunk of examples at a time;
columns are named by ``config.columns``.

Every SFT format's prompt is the teacher's prompt exactly as the teacher saw it
(``reason_distill.build_messages`` over ``[positive, *hard_negatives]`` in ``document_order``, cut
to ``config.distill.max_doc_chars``); its target is ``<think>{reasoning}</think>\\n<answer>{answer}</answer>``.

Formats (``FORMATS``): ``messages`` (OpenAI chat JSONL), ``sharegpt`` and ``alpaca`` (LLaMA-Factory,
with ``dataset_info.json``), ``prompt-completion`` (TRL), ``retrieval`` (query/pos/neg JSONL),
``rare`` (RARE's own records), ``hf`` (``datasets`` ``save_to_disk`` folder); the preference
formats ``dpo`` (accepted/rejected pairs of one prompt) and ``kto`` (every sample with its verdict
as a label) for TRL and LLaMA-Factory, from the samples verification rejected.

``provenance`` feeds the card; see :mod:`rare_core.exports.card` for the keys it reads.
Each folder is written in a temporary sibling folder and renamed into place, so a folder is
either the previous export or the complete new one.

A new format is one module defining ``FORMAT`` (an :class:`ExportFormat`) and one line in ``_MODULES``.
"""

from __future__ import annotations

import errno
import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from rare_core.config import PipelineConfig
from rare_core.exports.base import (
    Context, Example, ExampleSource, ExportFormat, Tally, iter_examples, target_text,
)
from rare_core.exports.card import render as render_card
from rare_core.prompts import reason_distill
from rare_core.storage import current_umask, iter_frames

# One line per format: the module (in this package) that defines its ``FORMAT``.
_MODULES = (
    "messages",
    "sharegpt",
    "alpaca",
    "prompt_completion",
    "retrieval",
    "rare",
    "hf",
    "dpo",
    "kto",
)
_REGISTRY: dict[str, ExportFormat] = {
    f.name: f for f in (importlib.import_module(f"{__name__}.{m}").FORMAT for m in _MODULES)}
FORMATS: tuple[str, ...] = tuple(_REGISTRY)
CARD = "README.md"

__all__ = ["CARD", "FORMATS", "Example", "ExampleSource", "ExportFormat", "Tally", "export", "file_chunks",
           "get_format", "iter_examples", "target_text"]


CHUNK_ROWS = 10_000  # dataset rows read and turned into examples at a time


def file_chunks(path: str | os.PathLike, rows: int = CHUNK_ROWS) -> Callable[[], Iterable[pd.DataFrame]]:
    """A dataset file as ``export`` reads one of any size: ``rows`` rows at a time, each call from
    the start. A missing file is a ``FileNotFoundError`` now, not at the first read."""
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    return lambda: iter_frames(path, rows)


def get_format(name: str) -> ExportFormat:
    """The format called ``name``; a one-line ``ValueError`` listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown export format {name!r}: choose from {', '.join(FORMATS)}") from None


def _check_prompt_version(provenance: dict) -> None:
    """The prompts are rebuilt with the current ``reason_distill`` prompt: refuse a dataset the
    provenance says was made with another version (its prompts would not be the teacher's)."""
    versions = provenance.get("prompt_versions")
    made_with = versions.get("distill") if isinstance(versions, dict) else None
    if made_with and made_with != reason_distill.VERSION:
        raise ValueError(f"the dataset was distilled with prompt {made_with!r}, this code builds "
                         f"{reason_distill.VERSION!r}: the exported prompts would not be the teacher's")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing what was there (kept aside until the rename succeeded)."""
    old = None
    if final.exists() or final.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old / final.name, final)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(dataset: pd.DataFrame | Callable[[], Iterable[pd.DataFrame]], config: PipelineConfig,
           formats: list[str], out_dir: str | Path, provenance: dict | None = None) -> dict[str, Path]:
    """Write ``dataset`` (a frame, or a function giving its chunks) in each of ``formats`` ->
    ``{format: {out_dir}/{format}/}``.

    Unknown formats, a dataset missing a required column or with no exportable row, and a
    ``document_order`` that does not fit its row raise a one-line ``ValueError`` before anything
    is written (a first pass over the rows checks them and counts the card's figures; each
    format then reads them again)."""
    if isinstance(formats, str):
        formats = [formats]
    chosen = [get_format(name) for name in dict.fromkeys(formats)]
    if not chosen:
        raise ValueError(f"no export format given: choose from {', '.join(FORMATS)}")
    provenance = dict(provenance or {})
    _check_prompt_version(provenance)
    source = ExampleSource((lambda: [dataset]) if isinstance(dataset, pd.DataFrame) else dataset, config)
    tally = source.tally()
    if not tally.rows:
        left = ", ".join(f"{n} {why}" for why, n in tally.left_out.items())
        raise ValueError("the dataset has no row to export" + (f" ({left})" if left else ""))
    ctx = Context(config=config, provenance=provenance, tally=tally)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in chosen:
        # The folder is the unit of atomicity: everything is written in a temporary sibling,
        # then renamed into place.
        tmp = Path(tempfile.mkdtemp(prefix=f".{fmt.name}.tmp-", dir=out))
        try:
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would keep the export private
            files = fmt.write(source, tmp, ctx)
            (tmp / CARD).write_text(render_card(fmt, files, tally, config, provenance), encoding="utf-8")
            _replace_dir(tmp, out / fmt.name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written[fmt.name] = out / fmt.name
    return written
