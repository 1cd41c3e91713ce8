"""Parsing what real models emit: JSON objects with noise around them, and think/answer replies."""

import pytest

from rare_core.parsing import (
    GeneratedQuestion, GeneratedQuestions, ParseError, parse_json_object, parse_reasoning,
)

Q = "How would a drop in mitochondrial permeability change the timing of cell death here?"


@pytest.mark.parametrize("reply", [
    f'{{"question": "{Q}", "scenario": "A plant leaf."}}',
    f'Sure! Here is the JSON you asked for:\n{{"question": "{Q}", "scenario": "A plant leaf."}}\nHope it helps.',
    f'```json\n{{"question": "{Q}", "scenario": "A plant leaf."}}\n```',
    f'```\n{{\n  "scenario": "A plant leaf.",\n  "question": "{Q}"\n}}\n```',
    # braces inside reasoning that precedes the JSON; a non-matching object before the real one
    f'Let me think: the set {{a, b}} matters and {{"draft": true}} is not it.\n{{"question": "{Q}", "scenario": "A plant leaf."}}',
    # smart quotes as JSON delimiters
    f'\u201cignored\u201d {{\u201cquestion\u201d: \u201c{Q}\u201d, \u201cscenario\u201d: \u201cA plant leaf.\u201d}}',
    # trailing comma
    f'{{"question": "{Q}", "scenario": "A plant leaf.",}}',
])
def test_json_object_found_in_noisy_replies(reply):
    parsed = parse_json_object(reply, GeneratedQuestion)
    assert parsed.question == Q
    assert parsed.scenario == "A plant leaf."


def test_last_matching_object_wins():
    first = '{"question": "What is an early question about X and Y?", "scenario": "first"}'
    last = '{"question": "What is the final question about X and Y?", "scenario": "second"}'
    assert parse_json_object(f"Draft: {first}\nFinal: {last}", GeneratedQuestion).scenario == "second"


def test_latex_backslashes_survive():
    reply = r'{"question": "Why is \frac{a}{b} larger than \alpha when \beta \times \theta grows?", "scenario": "Cost \% rises.\nSecond line."}'
    parsed = parse_json_object(reply, GeneratedQuestion)
    assert r"\frac{a}{b}" in parsed.question
    assert r"\alpha" in parsed.question and r"\beta \times \theta" in parsed.question
    assert parsed.scenario == "Cost \\% rises.\nSecond line."  # \n stays a real newline


@pytest.mark.parametrize("reply,reason", [
    ("", "empty response"),
    (None, "empty response"),
    ("I cannot help with that.", "no JSON object"),
    ('{"question": "What does the passage say about the dose response?", "scenario": "s"}', "refers to its source"),
    ('{"question": "Why?", "scenario": "s"}', "too short"),
    ('{"question": "What happens to the dose response over time?", "scenario": "   "}', "scenario"),
    ('{"question": "What happens to the dose response over time?"', "no JSON object"),
])
def test_json_failures_name_the_reason(reply, reason):
    with pytest.raises(ParseError, match=reason):
        parse_json_object(reply, GeneratedQuestion)


def test_several_questions():
    reply = '{"questions": [{"question": "%s", "scenario": "a"}, {"question": "%s", "scenario": "b"}]}' % (Q, Q)
    parsed = parse_json_object(reply, GeneratedQuestions)
    assert [q.scenario for q in parsed.questions] == ["a", "b"]
    with pytest.raises(ParseError):
        parse_json_object('{"questions": []}', GeneratedQuestions)


@pytest.mark.parametrize("reply,reasoning,answer", [
    ("<think>Step 1. Step 2.</think>\n<answer>42</answer>", "Step 1. Step 2.", "42"),
    ("Preamble <think>\nA {brace} b\n</think>  <answer>\n Yes, because X.\n</answer> trailing", "A {brace} b", "Yes, because X."),
    ("Reasoning without the opening tag.</think><answer>B</answer>", "Reasoning without the opening tag.", "B"),
    ("No think tags, just reasoning.\n<answer>C</answer>", "No think tags, just reasoning.", "C"),
    ("<THINK>upper</THINK><ANSWER>D</ANSWER>", "upper", "D"),
])
def test_reasoning_split(reply, reasoning, answer):
    parsed = parse_reasoning(reply)
    assert parsed.reasoning == reasoning
    assert parsed.answer == answer


@pytest.mark.parametrize("reply,reason", [
    ("", "empty response"),
    ("<think>only thinking</think>", "no <answer> block"),
    ("<think>cut off</think><answer>The answer is", "unterminated"),
    ("<think>x</think><answer>  </answer>", "empty <answer>"),
    ("<answer>bare answer</answer>", "no reasoning"),
])
def test_reasoning_failures(reply, reason):
    with pytest.raises(ParseError, match=reason):
        parse_reasoning(reply)
