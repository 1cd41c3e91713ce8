"""Prompt templates. Each module has a ``VERSION`` that enters the response-cache key and
every output row's provenance: change the wording, bump the version. Each also reads its own
prompt back with the layout it writes (:mod:`rare_core.prompts.layout`); a simulator reads
requests through :func:`rare_core.prompts.view.read_prompt` only."""

from rare_core.prompts import closed_book, doc2query, negative_check, reason_distill

__all__ = ["closed_book", "doc2query", "negative_check", "reason_distill"]
