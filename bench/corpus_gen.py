"""Seeded synthetic corpus with English-like statistics, for the hard-negative benchmark.

In: ``docs`` (number of documents), ``seed``, optional ``questions`` (defaults to one per
document, cycling over the documents). Out: a DataFrame with ``id``, ``text`` and ``question``
columns (one row per question, its positive document's id and text), ready for
``BM25HardNeg.process``.

Text model: a vocabulary of pronounceable pseudo-words whose frequencies follow Zipf's law
(exponent ~1.1, as in English), mixed with real English function words at ~40% of tokens (so
the Lucene English analyzer's stopword removal and Porter stemming have real work) and some
suffixes (-s, -ing, -ed) for the stemmer. Each document belongs to one of many topics whose
own mid-frequency words make up a third of its tokens, so documents of a topic resemble each
other and BM25 has real hard negatives to find. A question picks a few of its document's
content words (mostly topic words) after a wh-phrase, like a Doc2Query question.

Run as a script to write a jsonl file: ``python bench/corpus_gen.py --docs 1000 --out c.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

FUNCTION_WORDS = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more can its who about into than them only other some could these two may then do first any "
    "my now such like our over also most me even after made many where much through before should"
).split()
QUESTION_STARTS = (
    "what is", "how does", "why do", "which", "what role does", "how is", "when does",
    "what causes", "where is", "how can",
)
ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr")
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "ee")
CODAS = ("", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "rt")
SUFFIXES = ("", "", "", "", "s", "ing", "ed")


def make_vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct pseudo-words of 1-3 syllables (shorter words get the frequent ranks)."""
    words: list[str] = []
    seen: set[str] = set(FUNCTION_WORDS)
    while len(words) < size:
        syllables = 1 + min(2, int(rng.exponential(0.4 + 1.2 * len(words) / size)))
        word = "".join(
            ONSETS[rng.integers(len(ONSETS))] + NUCLEI[rng.integers(len(NUCLEI))] + CODAS[rng.integers(len(CODAS))]
            for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return np.array(words, dtype=object)


def zipf_probabilities(size: int, exponent: float = 1.1) -> np.ndarray:
    """Normalised Zipf probabilities for ranks 1..size."""
    p = 1.0 / np.arange(1, size + 1) ** exponent
    return p / p.sum()


def generate(docs: int, seed: int = 13, questions: int | None = None, vocab_size: int = 60_000,
             topics: int | None = None, mean_len: int = 60) -> pd.DataFrame:
    """The benchmark frame: ``questions`` rows (default ``docs``) with ``id``, ``text``, ``question``."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(vocab_size, rng)
    cdf = np.cumsum(zipf_probabilities(vocab_size))
    n_topics = topics or max(10, docs // 50)
    topic_size = 120
    # topic words come from the mid/low-frequency part of the Zipf curve, as real topic terms do
    topic_words = rng.integers(200, vocab_size, size=(n_topics, topic_size))
    function_words = np.array(FUNCTION_WORDS, dtype=object)
    suffixes = np.array(SUFFIXES, dtype=object)

    lengths = np.clip(rng.poisson(mean_len, size=docs), 8, None)
    doc_topics = rng.integers(0, n_topics, size=docs)
    texts = np.empty(docs, dtype=object)
    content: list[np.ndarray] = []
    for i in range(docs):
        n = int(lengths[i])
        n_content = max(4, int(n * 0.6))
        general = np.searchsorted(cdf, rng.random(n_content))
        topical = topic_words[doc_topics[i], rng.zipf(1.3, size=n_content) % topic_size]
        words = np.where(rng.random(n_content) < 0.35, topical, np.minimum(general, vocab_size - 1))
        content.append(words)
        tokens = vocab[words] + suffixes[rng.integers(0, len(suffixes), size=n_content)]
        fillers = function_words[rng.integers(0, len(function_words), size=n - n_content)]
        merged = np.concatenate([tokens, fillers])
        rng.shuffle(merged)
        sentence_breaks = rng.random(n) < 0.07
        merged = np.where(sentence_breaks, merged + ".", merged)
        text = " ".join(merged.tolist())
        texts[i] = text[0].upper() + text[1:] + "."

    n_questions = questions or docs
    rows = np.arange(n_questions) % docs
    out_q = np.empty(n_questions, dtype=object)
    for j, i in enumerate(rows):
        words = content[i]
        picked = words[rng.choice(len(words), size=min(len(words), int(rng.integers(3, 7))), replace=False)]
        start = QUESTION_STARTS[rng.integers(len(QUESTION_STARTS))]
        out_q[j] = f"{start} {' '.join(vocab[picked].tolist())}?"
    ids = np.array([f"d{i:07d}" for i in range(docs)], dtype=object)
    return pd.DataFrame({"id": ids[rows], "text": texts[rows], "question": out_q})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=None)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from rare_core.storage import write_frame

    write_frame(generate(args.docs, args.seed, args.questions), args.out)


if __name__ == "__main__":
    main()
