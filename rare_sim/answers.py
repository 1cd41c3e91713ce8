"""What the simulator answers: deterministic, prompt-aware thinking and answers built from the
prompt's own words.

In: a request's chat messages and its ``seed``. The prompt is read with
:func:`rare_core.prompts.view.read_prompt`, the pipeline's own readers of its prompts, never by
matching their wording here. Out: :class:`SimulatedParts` (kind, thinking, answer, topic words)
from :func:`simulated_parts`:

* a Doc2Query prompt: the JSON questions it asks for (:func:`doc2query_answer`);
* a ReasonDistill prompt: reasoning over the documents and a quote of the best-sharing one
  (:func:`reason_distill_parts`), opened by yes/no/maybe (:func:`closed_answer`, a new draw per
  seed) when the question is closed;
* a judge prompt: a verdict JSON (:func:`judge_answer`);
* a closed-book probe: an answer JSON from the question alone (:func:`closed_book_answer`);
* a negative check: whether the candidate document holds the reference answer's content words
  (:func:`negative_check_answer`), so that a planted false negative is caught;
* anything else: a short echo.

Every answer is marked ``[simulated]``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from rare_core.prompts.view import (
    ClosedBookView, Doc2QueryView, DistillView, JudgeView, NegativeCheckView, read_prompt,
)
from rare_core.verify import closed_form
from rare_sim.models import ChatMessage

_STOPWORDS = frozenset(
    """a about above after again against all also an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how however i if in into is it its itself
    may might more most much must no nor not of off on once only or other our out over own same
    she should so some such than that the their theirs them then there these they this those
    through thus to too under until up upon very was we were what when where whether which while
    who whom why will with within without would yet you your document documents passage text
    study authors question questions""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
FILLER_WORDS = ("mechanism", "outcome", "condition")
"""Words that stand in for a text too short to have three content words of its own."""
_QUESTION_TEMPLATES = (
    "How would a change in {a} alter {b}, and what would that imply for {c}?",
    "Why might {b} respond differently to {a} when {c} is also present?",
    "Which outcome for {c} would you expect if {a} were removed but {b} kept constant, and why?",
    "What trade-off between {a} and {c} should guide a decision about {b}?",
)
# A closed (yes/no/maybe) question, as PubMedQA's are, is not opened by a wh-word (PubMedQA's
# titles are often statements with a "?").
_OPEN_QUESTION = re.compile(r"^\s*(what|why|how|which|who|whom|whose|when|where|in what|to what)\b", re.I)


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` minus stopwords and words shorter than three letters."""
    words = (w.lower().strip("'-") for w in _WORD.findall(text))
    return [w for w in words if len(w) >= 3 and w not in _STOPWORDS]


def keywords(text: str, limit: int) -> list[str]:
    """The ``limit`` most frequent content words of ``text``, ties broken by first appearance."""
    counts = Counter(content_words(text))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _clip(text: str, max_words: int) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def _best_sentence(question: str, sentences: list[str]) -> str:
    asked = set(content_words(question))
    return max(sentences, key=lambda s: len(asked.intersection(content_words(s))))


def doc2query_answer(document: str, num_questions: int) -> str:
    """The JSON answer to a Doc2Query prompt, built from the document's salient words."""
    words = keywords(document, limit=num_questions + 4)
    words += FILLER_WORDS[: max(0, 3 - len(words))]
    sentences = _sentences(document) or ["No details are given."]
    items = []
    for i in range(num_questions):
        a, b, c = (words[(i + k) % len(words)] for k in range(3))
        scenario = (
            f"[simulated] A specialist is assessing a case that involves {a} and {b}. "
            f"{_clip(sentences[i % len(sentences)], 10)}"  # a scenario never copies 13+ words (leakage filter)
        )
        question = _QUESTION_TEMPLATES[i % len(_QUESTION_TEMPLATES)].format(a=a, b=b, c=c)
        # The reference is what a faithful teacher would quote for this question from this document.
        reference = f"[simulated] {_clip(_best_sentence(question, sentences), 30)}"
        items.append({"scenario": scenario, "question": question, "reference_answer": reference})
    return json.dumps(items[0] if num_questions == 1 else {"questions": items})


def reason_distill_parts(question: str, documents: list[str], seed: int | None = None) -> tuple[str, str]:
    """The thinking and the final answer of a ReasonDistill reply, without their tags.

    Judges each document by the content words it shares with ``question``; the answer quotes
    the best-sharing sentence of the document that shares the most (the first one on ties).
    With a ``seed`` (another sample), the document is drawn among those sharing any word.
    """
    asked = set(content_words(question))
    if not documents:
        return ("[simulated reasoning] No documents were provided, so nothing can ground an answer.",
                "[simulated] The documents give no basis for an answer.")
    steps = [f"The question turns on: {', '.join(keywords(question, 4)) or 'nothing specific'}."]
    shared_by_doc = []
    for i, doc in enumerate(documents, start=1):
        shared = sorted(asked.intersection(content_words(doc)))
        shared_by_doc.append(shared)
        verdict = (
            f"shares {len(shared)} words with the question ({', '.join(shared[:5])}): helpful."
            if shared
            else "shares no words with the question: it only looks relevant."
        )
        steps.append(f"Document {i} {verdict}")
    best = max(range(len(documents)), key=lambda i: (len(shared_by_doc[i]), -i))
    sharing = [i for i in range(len(documents)) if shared_by_doc[i]]
    if seed and len(sharing) > 1:
        best = random.Random(f"{seed}\x00{question}").choice(sharing)
    steps.append(f"Document {best + 1} overlaps most with the question, so the answer rests on it.")
    quote = _best_sentence(question, _sentences(documents[best]) or [documents[best]])
    return (f"[simulated reasoning] {' '.join(steps)}",
            f'[simulated] According to Document {best + 1}: "{_clip(quote, 30)}"')


def closed_answer(prompt: str, seed: int | None) -> str:
    """yes, no or maybe, drawn from the prompt and the request's seed, so that each sample of a
    rejection-sampling run is a new draw."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()
    return ("yes", "no", "maybe")[digest[0] % 3]


def closed_book_answer(question: str, seed: int | None = None) -> str:
    """The JSON answer to a closed-book probe, from the question alone: yes, no or maybe for a
    closed question (:func:`closed_answer`, so that a share of rows come out correct), else the
    question's salient words, as a model would answer from memory."""
    if _OPEN_QUESTION.match(question):
        answer = f"[simulated] From memory: {', '.join(keywords(question, 4)) or 'nothing specific'}."
    else:
        answer = f"{closed_answer(question, seed).capitalize()}. [simulated] From memory."
    return json.dumps({"answer": answer})


def holds_most(reference: str, text: str) -> bool:
    """Whether ``text`` holds at least half of ``reference``'s content words (and it has some)."""
    words = set(content_words(reference))
    return bool(words) and len(words & set(content_words(text))) >= 0.5 * len(words)


def judge_answer(reference: str, candidate: str) -> str:
    """The simulated judge: correct when the closed forms agree, or when the candidate holds
    most of the reference's content words."""
    want, got = closed_form(reference), closed_form(candidate)
    ok = want == got if want is not None else holds_most(reference, candidate)
    verdict = "correct" if ok else "incorrect"
    return json.dumps({"verdict": verdict, "reason": f"[simulated] the candidate {'agrees' if ok else 'disagrees'} "
                                                     f"with the reference"})


def negative_check_answer(reference: str, document: str) -> str:
    """The JSON answer to a negative check: the document supports the answer when it holds most
    of the reference's content words (a copy of the positive's answering sentence does)."""
    supports = holds_most(reference, document)
    why = "holds" if supports else "lacks"
    return json.dumps({"supports": supports, "reason": f"[simulated] the document {why} the reference's content words"})


@dataclass(frozen=True)
class SimulatedParts:
    """What a simulated model thinks and answers for one prompt, before any formatting.

    ``kind``: ``doc2query``, ``reason_distill``, ``judge``, ``closed_book``, ``negative_check`` or ``echo``.
    ``thinking`` and ``answer`` carry no tags; ``topic`` holds the prompt's salient words (long
    thinking is padded with them)."""

    kind: Literal["doc2query", "reason_distill", "judge", "closed_book", "negative_check", "echo"]
    thinking: str
    answer: str
    topic: tuple[str, ...] = ()


def simulated_parts(messages: list[ChatMessage], seed: int | None = None) -> SimulatedParts:
    """The deterministic thinking and answer for ``messages`` (and the request's ``seed``), by
    the prompt they carry. The fields are read stripped of surrounding whitespace."""
    view = read_prompt({"role": m.role, "content": m.content} for m in messages)
    if isinstance(view, Doc2QueryView):
        document, n = view.document.strip(), view.num_questions
        topic = tuple(keywords(document, 4))
        thinking = (f"[simulated reasoning] The document is about {', '.join(topic) or 'nothing specific'}; "
                    f"the reply is {n} standalone question{'s' if n != 1 else ''} as JSON.")
        return SimulatedParts("doc2query", thinking, doc2query_answer(document, n), topic)
    if isinstance(view, JudgeView):
        return SimulatedParts("judge", "[simulated reasoning] Compare the candidate with the reference.",
                              judge_answer(view.reference.strip(), view.candidate.strip()), ())
    if isinstance(view, ClosedBookView):
        question = view.question.strip()
        return SimulatedParts("closed_book", "[simulated reasoning] No documents: answer from memory.",
                              closed_book_answer(question, seed), tuple(keywords(question, 4)))
    if isinstance(view, NegativeCheckView):
        return SimulatedParts("negative_check", "[simulated reasoning] Look for the answer's words in the document.",
                              negative_check_answer(view.reference.strip(), view.document.strip()),
                              tuple(keywords(view.question, 4)))
    if isinstance(view, DistillView):
        question = view.question.strip()
        thinking, answer = reason_distill_parts(question, [d.strip() for d in view.documents], seed)
        if not _OPEN_QUESTION.match(question):
            answer = f"{closed_answer(view.text, seed).capitalize()}. {answer}"
        return SimulatedParts("reason_distill", thinking, answer, tuple(keywords(question, 4)))
    prompt = next((m.text() for m in reversed(messages) if m.role == "user"), "")
    return SimulatedParts("echo", "[simulated reasoning] A plain prompt: echo it back.",
                          f"[simulated] echo: {_clip(prompt, 24) or '(empty prompt)'}", tuple(keywords(prompt, 4)))
