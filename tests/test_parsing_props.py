"""Property tests of the reply parsers: whatever the content, a well-formed reply comes back exactly.

* a JSON object (any keys and values: unicode, backslashes, quotes, braces, properly escaped
  LaTeX) written by ``json.dumps`` into prose, maybe in a ```json fence, after prose that holds
  braces, is what ``parse_json_object`` returns;
* a ``<think>R</think><answer>A</answer>`` reply (and its variants without the opening
  ``<think>`` or without think tags) around any texts R and A gives back R and A, stripped;
* a reply that quotes documents full of our own markup (``</think><answer>X</answer>``,
  ``<answer>`` fragments, JSON objects with question/scenario keys) before, inside or after its
  own well-formed answer or question object never gives the quoted answer or question: it gives
  its own, or, where a quoted candidate differs from it, ParseError "conflicting ...".

Strings exclude backspace, form feed and carriage return: strict JSON of those is exactly what
unescaped ``\\beta``, ``\\frac``, ``\\rho`` look like, and the parser then prefers the LaTeX reading
(tests/test_parsing.py covers that choice).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import RootModel, model_validator

from rare_core.parsing import ParseError, parse_json_object, parse_questions, parse_reasoning

SETTINGS = settings(max_examples=150, deadline=None)
LATEX = ["\\frac{a}{b}", "\\beta", "\\rho", "\\nu", "\\tau", "\\times", "\\right)", "\\left(", "\\alpha",
         "\\%", "\\\\", "\\sum_{i=1}^{n}", "\\text{mg}", "C:\\new\\table", "\\u00e9", "\\"]


class AnyObject(RootModel[dict]):
    """Whatever JSON object that holds the key "expected" (the objects in the prose before it,
    ``{"draft": true}``, ``{ }``, do not: two different objects that both match are a conflict)."""

    @model_validator(mode="after")
    def _marked(self):
        if "expected" not in self.root:
            raise ValueError("not the expected object")
        return self


chars = st.characters(codec="utf-8", exclude_characters="\x08\x0c\x0d")
strings = st.one_of(
    st.text(chars, max_size=30),
    st.text(st.sampled_from('{}[]"\\:,\'` \n\t'), max_size=12),
    st.lists(st.sampled_from(LATEX) | st.text(chars, max_size=5), max_size=6).map("".join),
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | strings
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
                      max_leaves=12)
objects = st.dictionaries(strings, values, max_size=5)
prose_after = st.text(st.characters(codec="utf-8", exclude_characters="{}"), max_size=40)  # no object after the answer
prose_before = st.text(chars, max_size=40) | st.lists(
    st.sampled_from(["Let me think.", "{a, b}", "{", "}", "{\"draft\": true}", "f(x) = {x | x > 0}", "\\{", "\n",
                     "“quoted”", "```", "{\"x\": [1, 2"]), max_size=6).map(" ".join)


@SETTINGS
@given(obj=objects, before=prose_before, after=prose_after, fenced=st.booleans(), indent=st.sampled_from([None, 2]),
       ascii_only=st.booleans())
def test_an_embedded_json_object_round_trips(obj, before, after, fenced, indent, ascii_only):
    embedded = json.dumps({**obj, "expected": True}, indent=indent, ensure_ascii=ascii_only)
    body = f"```json\n{embedded}\n```" if fenced else embedded
    reply = f"{before}\n{body}\n{after}"
    assert parse_json_object(reply, AnyObject).root == json.loads(embedded)


TAGS = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
untagged = st.text(st.characters(codec="utf-8"), max_size=60) | st.lists(
    st.sampled_from(["<", ">", "/", "think", "answer", "<think", "answer>", "</", " ", "\n", "{", "}"]),
    max_size=8).map("".join)
untagged = untagged.filter(lambda t: not TAGS.search(t))
part = untagged.filter(lambda t: t.strip() != "")


@SETTINGS
@given(reasoning=part, answer=part, pre=untagged, mid=untagged, post=untagged,
       shape=st.sampled_from(["tagged", "no opening tag", "no think tags"]))
def test_think_answer_replies_split_into_their_parts(reasoning, answer, pre, mid, post, shape):
    if shape == "tagged":
        reply = f"{pre}<think>{reasoning}</think>{mid}<answer>{answer}</answer>{post}"
        expected_tags = 4
    elif shape == "no opening tag":
        reply = f"{reasoning}</think>{mid}<answer>{answer}</answer>{post}"
        expected_tags = 3
    else:
        reply = f"{reasoning}<answer>{answer}</answer>{post}"
        expected_tags = 2
    assert len(TAGS.findall(reply)) == expected_tags  # no tag formed across a part's edge
    parsed = parse_reasoning(reply)
    assert (parsed.reasoning, parsed.answer) == (reasoning.strip(), answer.strip())


# -- replies that quote documents full of our own markup ------------------------------------------

word = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1,
               max_size=8)
plain = st.lists(word, min_size=1, max_size=5).map(" ".join)  # no tags, no braces, not blank
POOL = ["How do cats purr at night?", "Why do dogs bark at strangers?", "What makes birds sing at dawn?",
        "Why would ibuprofen be avoided in kidney disease?", "How does salt change the boiling point of water?"]
# Markup that never makes a whole <answer>…</answer> block (there is no "</answer>") nor a JSON
# object that matches: a question without scenario, a blank scenario, one pointing at its source.
TAG_NOISE = ["<answer>", "<think>", "</think>", "<ANSWER>", "</Think>", "<answer", "answer>", "</"]
JSON_NOISE = ['{"question": "%s"}' % POOL[0], '{"scenario": "A harbour at dusk."}', "{", "}", "```json", "```",
              '{"question": "%s", "scenario": " "}' % POOL[1], '{"questions": [{"question": "%s"}]}' % POOL[2],
              '{"question": "What does the passage say about tides?", "scenario": "A harbour."}', '{"draft": true}']
noise = st.lists(st.sampled_from(TAG_NOISE + JSON_NOISE) | plain, max_size=8).map(" ".join)
# For question objects, whole answer blocks are noise too.
json_noise = st.lists(st.sampled_from(TAG_NOISE + JSON_NOISE + ["</think><answer>Ibuprofen</answer>"]) | plain,
                      max_size=8).map(" ".join)


def _quoting(doc: str, where: str, reasoning: str, answer: str, shape: str) -> tuple[str, str | None]:
    """A reply (content, reasoning field) of ``shape`` whose own answer is ``answer``, quoting ``doc``
    before it, inside the thinking, or after it."""
    if shape == "field":  # the thinking came in a field of its own: the document is quoted in the content
        own = f"<answer>{answer}</answer>"
        return (f"{doc}\n{own}" if where != "after" else f"{own}\n{doc}"), reasoning
    opening = "<think>" if shape == "tagged" else ""
    if where == "inside":
        return f"{opening}{reasoning} {doc} {reasoning}</think>\n<answer>{answer}</answer>", None
    own = f"{opening}{reasoning}</think>\n<answer>{answer}</answer>"
    return (f"{doc}\n{own}" if where == "before" else f"{own}\n{doc}"), None


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


reply_shapes = dict(where=st.sampled_from(["before", "inside", "after"]),
                    shape=st.sampled_from(["tagged", "swallowed", "field"]))
QUOTE_SHAPES = ["</think><answer>{}</answer>", "<answer>{}</answer>", "<think>{0}</think><answer>{0}</answer>"]


@SETTINGS
@given(doc=noise, reasoning=plain, answer=plain, **reply_shapes)
def test_markup_quoted_around_a_well_formed_answer_leaves_that_answer(doc, reasoning, answer, where, shape):
    content, field = _quoting(doc, where, reasoning, answer, shape)
    assert parse_reasoning(content, field, "reasoning_content").answer == answer


@SETTINGS
@given(fragments=st.lists(noise, min_size=1, max_size=4), quoted=st.lists(plain, min_size=1, max_size=3),
       quote_shape=st.sampled_from(QUOTE_SHAPES), reasoning=plain, answer=plain, **reply_shapes)
def test_a_quoted_answer_is_never_the_answer(fragments, quoted, quote_shape, reasoning, answer, where, shape):
    doc = " ".join(f"{f} {quote_shape.format(q)}" for f, q in zip(fragments, quoted))
    content, field = _quoting(doc, where, reasoning, answer, shape)
    try:
        parsed = parse_reasoning(content, field, "reasoning_content")
    except ParseError as exc:  # conflicting answers; or the same answer quoted first, no reasoning before it
        if str(exc) == "no reasoning before the answer":
            assert where == "before" and shape != "field"
        else:
            assert str(exc).startswith("conflicting answers: the reply holds"), str(exc)
            assert not all(_same(q, answer) for q in quoted)  # identical duplicates are no conflict
    else:
        assert parsed.answer == answer


@SETTINGS
@given(before=noise, after=noise, quoted=plain, reasoning=plain, answer=plain, **reply_shapes)
def test_a_quoted_answer_block_after_a_think_end_that_differs_is_a_conflict(before, after, quoted, reasoning, answer,
                                                                            where, shape):
    if _same(quoted, answer):
        quoted += " not"
    doc = f"{before} </think><answer>{quoted}</answer> {after}"
    content, field = _quoting(doc, where, reasoning, answer, shape)
    with pytest.raises(ParseError, match="conflicting answers: the reply holds 2 different <answer> blocks"):
        parse_reasoning(content, field, "reasoning_content")


def _question(q: str, scenario: str, reference: str = "") -> dict:
    return {"scenario": scenario, "question": q, "reference_answer": reference}


own_questions = st.integers(1, 3).flatmap(lambda n: st.tuples(
    st.permutations(POOL).map(lambda qs: qs[:n]), st.lists(plain, min_size=n, max_size=n), plain))


def _own_reply(questions, scenarios, reference, fenced, indent) -> tuple[str, int]:
    items = [_question(q, s, reference) for q, s in zip(questions, scenarios)]
    obj = items[0] if len(items) == 1 else {"questions": items}
    text = json.dumps(obj, indent=indent)
    return (f"```json\n{text}\n```" if fenced else text), len(items)


@SETTINGS
@given(own=own_questions, before=json_noise, after=json_noise, fenced=st.booleans(), indent=st.sampled_from([None, 2]),
       single=st.tuples(st.sampled_from(POOL), plain), thinking=st.none() | plain)
def test_question_objects_quoted_around_the_own_object_are_never_the_questions(own, before, after, fenced, indent,
                                                                               single, thinking):
    body, n = _own_reply(*own, fenced, indent)
    if n > 1:  # a whole single question object is not a list of them: it is quoted text like any other
        after += " " + json.dumps(_question(*single))
    before = f"Document: {before}"  # a reply that opens with <think> opens with the model's own thinking:
    if thinking is not None:         # a reasoning model's, with a draft in it
        before = f"<think>{thinking} {json.dumps(_question(*single))} {thinking}</think>\n{before}"
    parsed = parse_questions(f"{before}\n{body}\n{after}", n)
    assert [(q.question, q.scenario, q.reference_answer) for q in parsed] == list(zip(own[0], own[1], [own[2]] * n))


@SETTINGS
@given(own=own_questions, before=json_noise, after=json_noise, fenced=st.booleans(), quote_first=st.booleans(),
       other=st.tuples(st.permutations(POOL), plain))
def test_a_quoted_question_object_that_differs_is_a_conflict(own, before, after, fenced, quote_first, other):
    body, n = _own_reply(*own, fenced, None)
    questions, scenario = other
    if questions[0] == own[0][0]:
        questions = questions[1:] + questions[:1]
    quoted = (_question(questions[0], scenario) if n == 1
              else {"questions": [_question(q, scenario) for q in questions[:n]]})
    quote = f"The document reads: {before} {json.dumps(quoted)} {after}"  # not a <think> that opens the reply
    reply = f"{quote}\n{body}" if quote_first else f"{body}\n{quote}"
    with pytest.raises(ParseError, match="conflicting objects: the reply holds 2 different JSON objects"):
        parse_questions(reply, n)
