"""Property tests of the reply parsers: whatever the content, a well-formed reply comes back exactly.

* a JSON object (any keys and values: unicode, backslashes, quotes, braces, properly escaped
  LaTeX) written by ``json.dumps`` into prose, maybe in a ```json fence, after prose that holds
  braces, is what ``parse_json_object`` returns;
* a ``<think>R</think><answer>A</answer>`` reply (and its variants without the opening
  ``<think>`` or without think tags) around any texts R and A gives back R and A, stripped.

Strings exclude backspace, form feed and carriage return: strict JSON of those is exactly what
unescaped ``\\beta``, ``\\frac``, ``\\rho`` look like, and the parser then prefers the LaTeX reading
(tests/test_parsing.py covers that choice).
"""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import RootModel

from rare_core.parsing import parse_json_object, parse_reasoning

SETTINGS = settings(max_examples=150, deadline=None)
LATEX = ["\\frac{a}{b}", "\\beta", "\\rho", "\\nu", "\\tau", "\\times", "\\right)", "\\left(", "\\alpha",
         "\\%", "\\\\", "\\sum_{i=1}^{n}", "\\text{mg}", "C:\\new\\table", "\\u00e9", "\\"]


class AnyObject(RootModel[dict]):
    """Whatever JSON object."""


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
    embedded = json.dumps(obj, indent=indent, ensure_ascii=ascii_only)
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
