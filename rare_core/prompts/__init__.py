"""Prompt templates. Each module has a ``VERSION`` that enters the response-cache key and
every output row's provenance: change the wording, bump the version."""

from rare_core.prompts import doc2query, reason_distill

__all__ = ["doc2query", "reason_distill"]
