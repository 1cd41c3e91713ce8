"""MkDocs hooks of the documentation site (mkdocs.yml ``hooks:``; ``make docs`` builds it).

In: the pages under docs/, the benchmark READMEs under bench/ and ``rare_core.config.PipelineConfig``.
Out, at build time, nothing written to the repository:

- the configuration page's ``<!-- config-reference -->`` marker replaced by a table of every
  field of ``PipelineConfig`` and of each nested section (type, limits, default, description),
  generated from the pydantic models so that it cannot go stale; the page's YAML examples are
  validated against the same model, so a renamed or removed field fails the build;
- the benchmark READMEs (``PUBLISHED``) published as pages at their repository paths;
- relative links written for the repository (``../bench/README.md`` from docs/) pointed at
  those pages; a link to another repository file (a test, a module) keeps its text only, as
  the site does not hold that file. A link to a file that does not exist is left alone, and
  ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import inspect
import json
import posixpath
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rare_core.config import PipelineConfig

MARKER = "<!-- config-reference -->"
CONFIG_PAGE = "configuration.md"
# Repository files published as pages of the site, at the same paths.
PUBLISHED = ("bench/README.md", "bench/README_scale.md", "bench/README_hardneg.md")
# A relative markdown link or image: [text](target#anchor); targets with a scheme are external.
LINK = re.compile(r"\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s:#]+)(?P<anchor>#[^)\s]*)?\)")
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.M | re.S)


def _repo_root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files: Files, config: Any) -> Files:
    root = _repo_root(config)
    for path in PUBLISHED:
        files.append(File.generated(config, path, abs_src_path=str(root / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    root = _repo_root(config)
    src = page.file.src_uri
    repo_path = src if src in PUBLISHED else posixpath.join(Path(config.docs_dir).resolve().relative_to(root).as_posix(), src)
    markdown = LINK.sub(lambda m: _repo_link(m, repo_path, src, root), markdown)
    if src == CONFIG_PAGE:
        if MARKER not in markdown:
            raise PluginError(f"{CONFIG_PAGE} lost its {MARKER} marker: the configuration reference has no place")
        for block in FENCE.findall(markdown):
            _check_example(block)
        markdown = markdown.replace(MARKER, config_reference())
    return markdown


def _repo_link(match: re.Match[str], repo_path: str, site_path: str, root: Path) -> str:
    """A link as the repository resolves it, made to point where the site has that file."""
    target = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), match["target"]))
    if target in PUBLISHED:
        href = posixpath.relpath(target, posixpath.dirname(site_path) or ".")
        return f"[{match['text']}]({href}{match['anchor'] or ''})"
    if not target.startswith("docs/") and (root / target).exists():
        return match["text"]
    return match[0]


def _check_example(block: str) -> None:
    """A YAML example of the configuration page must be a valid PipelineConfig (input_path may be left out)."""
    try:
        PipelineConfig.model_validate({"input_path": "docs.jsonl", **(yaml.safe_load(block) or {})})
    except ValueError as exc:
        raise PluginError(f"{CONFIG_PAGE}: a YAML example is not a valid PipelineConfig:\n{exc}") from None


# --- the configuration reference ---------------------------------------------------------------


def config_reference() -> str:
    """Markdown: one table per model, PipelineConfig first, then each nested section in field order."""
    sections: list[str] = []
    rendered: dict[tuple[type, str], str] = {}  # (model, its defaults) -> the path it was first rendered at
    _section(PipelineConfig, "", _defaults_of(PipelineConfig), sections, rendered)
    return "\n".join(sections)


def _section(model: type[BaseModel], path: str, defaults: BaseModel | None, out: list[str],
             rendered: dict[tuple[type, str], str]) -> None:
    title = f"`{path}`" if path else "Top level: `PipelineConfig`"
    anchor = _anchor(path) if path else "top-level"
    key = (model, repr(defaults.model_dump() if defaults is not None else None))
    if key in rendered:  # roles.teacher after roles.question_writer, distill.role_guard...
        first = rendered[key]
        out.append(f"### {title} {{#{anchor}}}\n\nThe same fields and defaults as [`{first}`](#{_anchor(first)}).\n")
        return
    rendered[key] = path
    rows = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    nested: list[tuple[type[BaseModel], str, BaseModel | None]] = []
    for name, info in model.model_fields.items():
        field_path = f"{path}.{name}" if path else name
        value = getattr(defaults, name, PydanticUndefined) if defaults is not None else info.get_default(call_default_factory=True)
        models = list(_models_in(info.annotation))
        for sub in models:
            sub_path = field_path if _is_model_or_optional(info.annotation, sub) else f"{field_path}.<name>"
            sub_defaults = value if isinstance(value, sub) else None
            nested.append((sub, sub_path, sub_defaults))
        description = info.description or (_doc(models[0]).split("\n\n")[0] if models else "")
        default = "see below" if isinstance(value, BaseModel) else _default(value)
        rows.append(f"| `{name}` | {_type(info.annotation, field_path)}{_limits(info.metadata)} | {default} "
                    f"| {_cell(description)} |")
    body = "\n\n".join(part for part in (_doc(model), "\n".join(rows)) if part)
    out.append(f"### {title} {{#{anchor}}}\n\n{body}\n")
    for sub, sub_path, sub_defaults in nested:
        _section(sub, sub_path, sub_defaults, out, rendered)


def _defaults_of(model: type[BaseModel]) -> BaseModel:
    """The model with every default, built without validation: PipelineConfig requires input_path
    (left out, shown as required), and its validators would put the simulator's model in llm.model."""
    return model.model_construct()


def _models_in(annotation: Any) -> typing.Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _is_model_or_optional(annotation: Any, model: type[BaseModel]) -> bool:
    return annotation is model or (_is_union(annotation) and model in typing.get_args(annotation))


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", path.lower()).strip("-")


def _type(annotation: Any, path: str) -> str:
    """A type in words: `int` or `null`, one of `"use"`, `"off"`, a link to a nested section."""
    if annotation is type(None):
        return "`null`"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(path)})"
    origin = typing.get_origin(annotation)
    if origin is Literal and len(typing.get_args(annotation)) == 1:
        return f"`{json.dumps(typing.get_args(annotation)[0])}`"
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in typing.get_args(annotation))
    if _is_union(annotation):
        return " or ".join(_type(arg, path) for arg in typing.get_args(annotation))
    if origin in (list, dict, tuple):
        args = typing.get_args(annotation)
        if origin is dict and isinstance(args[1], type) and issubclass(args[1], BaseModel):
            return f"`dict`: `{_name(args[0])}` → {_type(args[1], f'{path}.<name>')}"
        return f"`{origin.__name__}[{', '.join(_name(a) for a in args)}]`"
    return f"`{_name(annotation)}`"


def _name(annotation: Any) -> str:
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", str(annotation))


def _limits(metadata: list[Any]) -> str:
    words = {Ge: ("ge", "≥"), Gt: ("gt", ">"), Le: ("le", "≤"), Lt: ("lt", "&lt;"),
             MinLen: ("min_length", "length ≥"), MaxLen: ("max_length", "length ≤")}
    limits = []
    for item in metadata:
        for kind, (attr, sign) in words.items():
            if isinstance(item, kind):
                limits.append(f"{sign} {getattr(item, attr)}")
        if getattr(item, "pattern", None):
            limits.append(f"matches `{item.pattern}`")
    return f"<br>{', '.join(limits)}" if limits else ""


def _default(value: Any) -> str:
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _doc(model: type[BaseModel]) -> str:
    """The model's docstring as markdown (reST's ``x`` and :class:`x` become `x`)."""
    if model.__doc__ is None or model.__doc__ == BaseModel.__doc__:  # getdoc would give BaseModel's
        return ""
    doc = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", inspect.getdoc(model) or "")
    return doc.replace("``", "`")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")
