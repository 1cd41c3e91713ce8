"""The dataset card (``README.md``) written beside every export: Hugging Face YAML front matter
and a body with the provenance (counts per step and filter, models, prompt versions,
verification, samples drawn and pass rate when the dataset records them, simulated or not, the
command), the format's fields and its own figures (``ExportFormat.card_lines``).

``provenance`` keys read (all optional): ``steps`` and ``filters`` (counts: a list of dicts with a
``step``/``filter``/``name`` key, a dict name -> dict of counts, or a dict name -> count),
``verification`` (str or dict), ``command`` (str or argv list), ``simulated`` (bool), ``language``
(str or list), ``name`` (the card's title), ``prompt_versions`` (``{"doc2query": ..., "distill": ...}``
as the run recorded them); other keys are listed under "Other provenance".
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import PurePath
from typing import Any

import yaml

from rare_core.config import PipelineConfig
from rare_core.exports.base import ExportFormat, Tally, reference_column
from rare_core.prompts import doc2query, reason_distill

KNOWN_KEYS = ("steps", "filters", "verification", "command", "simulated", "language", "name", "prompt_versions", "found")
DEFAULT_NAME = "RARE retrieval-augmented reasoning data"
LICENSE_LINE = "license: other  # fill in: the source documents' license and the models' terms of use"
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_SECRET_PARAM = re.compile(r"([?&](?:api[_-]?key|key|token|access_token|secret)=)[^&\s'\"]+", re.IGNORECASE)


def size_category(n: int) -> str:
    """Hugging Face's ``size_categories`` bucket of ``n`` rows."""
    for bound, name in _SIZES:
        if n < bound:
            return name
    return "n>1B"


def redact(text: str) -> str:
    """Credentials in URLs (user info, ``?key=``) -> ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))


def is_simulated(tally: Tally, provenance: dict) -> bool:
    return bool(provenance.get("simulated")) or tally.simulated > 0


def _languages(provenance: dict) -> list[str]:
    lang = provenance.get("language")
    if not lang:
        return []
    return [lang] if isinstance(lang, str) else [str(x) for x in lang]


def front_matter(fmt: ExportFormat, tally: Tally, provenance: dict) -> str:
    meta: dict[str, Any] = {}
    if langs := _languages(provenance):
        meta["language"] = langs
    meta["task_categories"] = list(fmt.task_categories)
    records = fmt.records(tally) if fmt.records else tally.rows
    meta["size_categories"] = [size_category(records)]
    meta["pretty_name"] = f"{provenance.get('name') or DEFAULT_NAME} ({fmt.name})"
    tags = ["rare", "synthetic", "retrieval-augmented-generation", "reasoning"]
    if is_simulated(tally, provenance):
        tags.append("simulated")
    meta["tags"] = tags
    if fmt.data_files and records:  # an empty file is not loadable
        meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": fmt.data_files}]}]
    body = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{LICENSE_LINE}\n{body}---\n"


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        value = ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) if value else ""
    elif isinstance(value, (list, tuple)):
        value = ", ".join(_cell(v) for v in value)
    elif value is None:
        value = ""
    elif isinstance(value, float):
        value = f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def counts_table(counts: Any, what: str) -> str:
    """Counts per step or filter (see the module docstring) -> a markdown table."""
    if isinstance(counts, dict):
        if all(not isinstance(v, dict) for v in counts.values()):
            rows = [{what: k, "count": v} for k, v in counts.items()]
        else:
            rows = [{what: k, **(v if isinstance(v, dict) else {"count": v})} for k, v in counts.items()]
    elif isinstance(counts, list):
        rows = []
        for item in counts:
            if isinstance(item, dict):
                item = dict(item)
                label = next((item.pop(k) for k in (what, "step", "filter", "name") if k in item), "")
                rows.append({what: label, **item})
            else:
                rows.append({what: _cell(item)})
    else:
        return _cell(counts)
    if not rows:
        return "(none)"
    header = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in header) + " |" for row in rows]
    return "\n".join(lines)


def _command(provenance: dict) -> str | None:
    cmd = provenance.get("command")
    if not cmd:
        return None
    text = shlex.join(str(a) for a in cmd) if isinstance(cmd, (list, tuple)) else str(cmd)
    return redact(text)


def _verification(tally: Tally, config: PipelineConfig, provenance: dict) -> str:
    ver = provenance.get("verification")
    verify = getattr(config, "verify", None)  # the pipeline's verify section, where it has one
    if isinstance(ver, dict):
        text = ", ".join(f"{k}: {_cell(v)}" for k, v in ver.items())
    elif ver:
        text = str(ver)
    elif verify is not None:
        text = f"method `{verify.method}` (from the configuration)"
    else:
        text = "not recorded"
    method = ver.get("method") if isinstance(ver, dict) else ver if isinstance(ver, str) else getattr(verify, "method", None)
    if method in ("judge", "auto") and "judge" in type(config.roles).model_fields:
        text += f"; judge model `{config.llm_for('judge').model}`"
    if tally.verdicts:
        text += "; verdicts in this export: " + ", ".join(f"{k}: {n}" for k, n in tally.verdicts.most_common())
    return text


def pass_rate_lines(tally: Tally) -> list[str]:
    """Samples drawn per row's question -> rows, and the median ``rare_pass_rate``; none when
    the dataset records neither."""
    if not tally.drawn and not tally.pass_rates:
        return []
    out = ["### Samples drawn and pass rate", ""]
    if tally.drawn:
        out += ["Samples the teacher drew for the row's question (`rare_verify_samples`):", "",
                counts_table([{"samples drawn": k, "rows": v} for k, v in sorted(tally.drawn.items())],
                             "samples drawn"), ""]
    median = tally.median_pass_rate
    if median is not None:
        out += [f"Median pass rate (`rare_pass_rate`, accepted / drawn, over the {sum(tally.pass_rates.values())} "
                f"rows whose question drew more than one sample): {median:.3g}.", ""]
    return out


def render(fmt: ExportFormat, files: list[str], tally: Tally, config: PipelineConfig, provenance: dict) -> str:
    """The whole README.md."""
    n = tally.rows
    simulated = is_simulated(tally, provenance)
    n_sim = tally.simulated
    title = provenance.get("name") or DEFAULT_NAME
    out = [front_matter(fmt, tally, provenance), f"# {title}: `{fmt.name}` export", ""]
    if simulated:
        out += ["> **⚠️ SIMULATED ANSWERS: DO NOT TRAIN ON THIS DATA.** The questions, reasoning and answers "
                f"({n_sim} of {n} rows flagged `rare_simulated`) were written by the pipeline's built-in "
                "LLM simulator, not by a model. This export is for checking the pipeline and the trainer's "
                "data loading only.", ""]
    given = bool(getattr(config, "questions_given", False))
    source = "questions given with the input" if given else "Doc2Query questions"
    out += [f"{fmt.summary[:1].upper()}{fmt.summary[1:]}. {n} rows, made by the RARE pipeline ({source}, "
            f"BM25 hard negatives, ReasonDistill reasoning) from `{PurePath(config.input_path).name}`.", ""]
    if fmt.card_lines:
        out += [*fmt.card_lines(tally), ""]

    out += ["## Files and fields", "", "Files: " + ", ".join(f"`{f}`" for f in files) + ", and this card.", "",
            "| field | content |", "|---|---|"]
    out += [f"| `{k}` | {v.replace('|', chr(92) + '|')} |" for k, v in fmt.fields.items()]
    out += [""]
    if fmt.notes:
        out += [fmt.notes, ""]
    out += ["## Loading", "", fmt.usage, ""]

    positions, n_docs = tally.positions, tally.documents
    if fmt.task_categories != ("text-retrieval",):
        out += ["## Prompt and target", "",
                "The prompt is the teacher's prompt exactly as the teacher saw it: the system and user messages "
                f"of the `{reason_distill.VERSION}` prompt, with the scenario (when the question has one), the "
                "question and the documents "
                "(the positive shuffled among its hard negatives, in the row's `document_order`, each cut to "
                f"{config.distill.max_doc_chars:,} characters). The target is "
                "`<think>{reasoning}</think>\\n<answer>{answer}</answer>`.", ""]
    out += ["Documents per row: " + ", ".join(f"{k}: {v} rows" for k, v in sorted(n_docs.items())) + ". "
            "Position of the positive among the shown documents: "
            + (", ".join(f"{k}: {v}" for k, v in sorted(positions.items())) or "none") + ".", ""]

    writer, teacher = config.llm_for("question_writer"), config.llm_for("teacher")
    recorded = provenance.get("prompt_versions") if isinstance(provenance.get("prompt_versions"), dict) else {}
    q_version = recorded.get("doc2query") or doc2query.VERSION
    out += ["## Provenance", "",
            "- Questions: given with the input (Doc2Query skipped)" if given else
            f"- Questions and scenarios (Doc2Query): model `{writer.model}`, prompt `{q_version}`",
            f"- Reasoning and answers (ReasonDistill): model `{teacher.model}`, prompt `{reason_distill.VERSION}`",
            f"- Hard negatives: BM25 (Lucene), {config.hardneg.num_neg} asked per question",
            f"- Verification: {_verification(tally, config, provenance)}",
            f"- Answers simulated: {'**YES: SIMULATED**' if simulated else 'no'}"]
    n_ref = tally.references
    if n_ref:
        out += [f"- Reference answers: {n_ref} of {n} rows (`{reference_column(config)}`)"]
    cmd = _command(provenance)
    if cmd is None:
        out += ["- Command: not recorded", ""]
    else:
        out += ["- Command:", "", "  ```", f"  {cmd}", "  ```", ""]
    out += ["### Counts per step", "", counts_table(provenance["steps"], "step") if provenance.get("steps")
            else "not recorded", ""]
    if provenance.get("filters"):
        out += ["### Filters", "", counts_table(provenance["filters"], "filter"), ""]
    out += pass_rate_lines(tally)
    if provenance.get("found"):
        out += ["### What the steps found", "", *(f"- {line}" for line in provenance["found"]), ""]
    if tally.left_out:
        out += ["### Rows left out of this export", "", counts_table(tally.left_out, "reason"), ""]
    other = {k: v for k, v in provenance.items() if k not in KNOWN_KEYS}
    if other:
        out += ["### Other provenance", "", "```json", redact(json.dumps(other, indent=1, default=str,
                                                                          ensure_ascii=False)), "```", ""]
    return "\n".join(out)
