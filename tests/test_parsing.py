"""Parsing what real models emit: JSON objects with noise around them, and think/answer replies."""

import json
import random
import re
import zipfile
from pathlib import Path

import pytest

from rare_core.parsing import (
    GeneratedQuestion, GeneratedQuestions, ParseError, parse_json_object, parse_questions, parse_reasoning,
    source_reference,
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


def test_two_different_matching_objects_conflict():
    # A draft and a final object look exactly like a quoted document's object and the model's
    # own, in either order: which one is the model's cannot be told, so the reply is unusable.
    first = '{"question": "What is an early question about X and Y?", "scenario": "first"}'
    last = '{"question": "What is the final question about X and Y?", "scenario": "second"}'
    for reply in (f"Draft: {first}\nFinal: {last}", f"{last}\n\nThe document reads: {first}"):
        with pytest.raises(ParseError, match="conflicting objects: the reply holds 2 different JSON objects"):
            parse_json_object(reply, GeneratedQuestion)
    assert parse_json_object(f"{last}\nAgain: ```json\n{last}\n```", GeneratedQuestion).scenario == "second"


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


# -- the answer block comes after the last </think> ---------------------------------------------

@pytest.mark.parametrize("reply,reasoning", [
    ("<think>I will put it in the <answer> block. Doc 2 is relevant.</think>\n<answer>Aspirin</answer>",
     "I will put it in the <answer> block. Doc 2 is relevant."),
    ("I will put it in the <answer> block. Doc 2 is relevant.</think>\n<answer>Aspirin</answer>",
     "I will put it in the <answer> block. Doc 2 is relevant."),
    ("<think>the <answer>x</answer> tag goes last</think><answer>Aspirin</answer>",
     "the <answer>x</answer> tag goes last"),
    ("<think>first <answer>draft</answer></think> <think>second</think>\n<answer>Aspirin</answer>",
     "first <answer>draft</answer>\nsecond"),
])
def test_an_answer_tag_inside_the_thinking_is_reasoning(reply, reasoning):
    parsed = parse_reasoning(reply)
    assert parsed.answer == "Aspirin"
    assert parsed.reasoning == reasoning


def test_an_answer_only_inside_the_thinking_is_no_answer():
    with pytest.raises(ParseError, match="no <answer> block after </think>"):
        parse_reasoning("<think>I would say <answer>Aspirin</answer>.</think> That is all.")
    with pytest.raises(ParseError, match="unterminated"):
        parse_reasoning("<think>see <answer>x</answer></think><answer>Aspi")


# -- a reply that quotes documents holding our own markup ---------------------------------------

OWN = "<think>Document 1 is relevant; Document 2 only looks relevant.</think>\n<answer>Aspirin</answer>"
MARKUP_DOC = "Forum post: the bot replied </think><answer>Ibuprofen</answer> and stopped."


@pytest.mark.parametrize("reply", [
    f"{OWN}\n\nDocument 2 reads: \"{MARKUP_DOC}\"",                       # quoted after the answer
    f"<think>Document 2 reads: \"{MARKUP_DOC}\" It only looks relevant.</think>\n<answer>Aspirin</answer>",
    f"Document 2 reads: \"{MARKUP_DOC}\"\n{OWN}",                          # quoted before the thinking
    f"{OWN}\nAs Document 2 puts it: <answer>Ibuprofen</answer>",              # an <answer> fragment after
    "Doc 1 helps, so<answer>Aspirin</answer>\nDocument 2: </think><answer>Ibuprofen</answer>",  # untagged own
])
def test_a_quoted_answer_that_differs_makes_the_reply_unusable(reply):
    with pytest.raises(ParseError, match="conflicting answers: the reply holds 2 different <answer> blocks"):
        parse_reasoning(reply)


def test_a_quoted_answer_conflicts_with_the_content_beside_a_reasoning_field():
    for content in (f"<answer>Aspirin</answer>\nDocument 2: {MARKUP_DOC}", f"Document 2: {MARKUP_DOC}\n<answer>Aspirin</answer>"):
        with pytest.raises(ParseError, match="conflicting answers"):
            parse_reasoning(content, "Doc 1 helps.", "reasoning_content")


@pytest.mark.parametrize("reply", [
    f"{OWN}\nDocument 2: \"the bot replied </think><answer>  Aspirin </answer>\"",  # the same answer again
    "<think>Document 2 quotes <answer>Ibuprofen</answer>; it only looks relevant.</think><answer>Aspirin</answer>",
    f"{OWN}\nDocument 2's template: \"<answer> ... </think> then <think>\"",     # fragments, no whole block
    "<think>Doc 1 helps.</think><answer> Document 2 said <answer>Aspirin</answer>",   # a block holds no tag
])
def test_markup_that_makes_no_second_answer_leaves_the_own_answer(reply):
    assert parse_reasoning(reply).answer == "Aspirin"


QUOTED_Q = "Why would ibuprofen be avoided in a patient with kidney disease?"


def test_a_quoted_question_object_is_never_the_question():
    own = {"scenario": "A clinic.", "question": QS[0], "reference_answer": "By vibrating."}
    quoted_full = json.dumps({"question": QUOTED_Q, "scenario": "A ward."})
    quoted_partial = json.dumps({"question": QUOTED_Q})  # not a question object: no scenario
    for reply in (f"{json.dumps(own)}\nThe document held {quoted_partial}",
                  f"The document held {quoted_partial}\n```json\n{json.dumps(own)}\n```",
                  json.dumps({**own, "evidence": json.loads(quoted_full)})):  # nested in the own object
        assert [q.question for q in parse_questions(reply, 1)] == [QS[0]]
    for reply in (f"{json.dumps(own)}\nThe document held {quoted_full}", f"The document held {quoted_full}\n{json.dumps(own)}"):
        with pytest.raises(ParseError, match="conflicting objects"):
            parse_questions(reply, 1)
    many = _questions_reply(*QS)
    assert [q.question for q in parse_questions(f"{many}\nThe document held {quoted_full}", 3)] == QS
    with pytest.raises(ParseError, match="conflicting objects"):
        parse_questions(f"{many}\nThe document held {_questions_reply(QUOTED_Q, *QS[1:])}", 3)


def test_drafts_in_the_thinking_that_opens_the_reply_are_no_candidates():
    draft, final = json.dumps({"question": QUOTED_Q, "scenario": "draft"}), json.dumps({"question": QS[0], "scenario": "final"})
    reply = f"<think>First try: {draft}. The question must be harder.</think>\n```json\n{final}\n```"
    assert [q.scenario for q in parse_questions(reply, 1)] == ["final"]
    with pytest.raises(ParseError, match="conflicting objects"):  # no opening tag: the draft may be a quote
        parse_questions(reply.removeprefix("<think>"), 1)


# -- strict JSON first; LaTeX repairs only for LaTeX damage -------------------------------------

@pytest.mark.parametrize("scenario,expected", [
    (r"line\nu = 3", "line\nu = 3"),       # a newline, then "u = 3"
    (r"col\tau", "col\tau"),               # a tab, then "au"
    (r"path C:\\temp\\new", "path C:\\temp\\new"),
])
def test_valid_json_escapes_are_read_as_json(scenario, expected):
    parsed = parse_json_object(f'{{"question": "{Q}", "scenario": "{scenario}"}}', GeneratedQuestion)
    assert parsed.scenario == expected


@pytest.mark.parametrize("scenario,expected", [
    (r"\frac{1}{2} of \beta", r"\frac{1}{2} of \beta"),
    (r"density \rho and \nu", r"density \rho and \nu"),     # \r damage: the whole object is repaired
    (r"\left( x \right) \times 2", r"\left( x \right) \times 2"),
])
def test_unescaped_latex_that_strict_json_damages_is_repaired(scenario, expected):
    parsed = parse_json_object(f'{{"question": "{Q}", "scenario": "{scenario}"}}', GeneratedQuestion)
    assert parsed.scenario == expected


def test_a_carriage_return_no_repair_removes_is_kept():
    parsed = parse_json_object(f'{{"question": "{Q}", "scenario": "one\\r\\ntwo"}}', GeneratedQuestion)
    assert parsed.scenario == "one\r\ntwo"


def test_an_object_is_tried_before_the_objects_nested_in_it():
    reply = '{"questions": [{"question": "%s", "scenario": "a"}, {"question": "%s", "scenario": "b"}]}' % (Q, Q)
    assert parse_json_object(reply, GeneratedQuestion).scenario == "b"  # no outer match: the last item
    from pydantic import RootModel

    class Anything(RootModel[dict]):
        pass

    assert parse_json_object('x {"a": {"b": 1}} y', Anything).root == {"a": {"b": 1}}


# -- parse_questions: exactly n distinct questions -------------------------------------------------

QS = ["How do cats purr at night?", "Why do dogs bark at strangers?", "What makes birds sing at dawn?"]


def _questions_reply(*questions):
    return json.dumps({"questions": [{"question": q, "scenario": f"s{i}"} for i, q in enumerate(questions)]})


def test_parse_questions_one():
    single = json.dumps({"question": QS[0], "scenario": "s"})
    assert [q.question for q in parse_questions(single, 1)] == [QS[0]]
    assert [q.question for q in parse_questions(_questions_reply(QS[0]), 1)] == [QS[0]]
    assert [q.question for q in parse_questions(_questions_reply(*QS), 1)] == [QS[0]]  # the first, not the last
    with pytest.raises(ParseError, match="refers to its source"):
        parse_questions('{"question": "What does the passage say about cats?", "scenario": "s"}', 1)


def test_parse_questions_several():
    assert [q.question for q in parse_questions(_questions_reply(*QS), 3)] == QS
    assert [q.scenario for q in parse_questions(_questions_reply(*QS), 2)] == ["s0", "s1"]  # the first n


@pytest.mark.parametrize("reply,n,reason", [
    (_questions_reply(QS[0]), 2, "expected 2 questions, got 1"),
    (_questions_reply(*QS), 4, "expected 4 questions, got 3"),
    (_questions_reply(QS[0], QS[1], "  how do CATS purr   at night "), 3, "questions 1 and 3 are the same"),
    (_questions_reply(QS[1], QS[1] + "!!"), 2, "questions 1 and 2 are the same"),
    (json.dumps({"question": QS[0], "scenario": "s"}), 2, "questions Field required"),
    ("no JSON here", 2, "no JSON object"),
])
def test_parse_questions_failures(reply, n, reason):
    with pytest.raises(ParseError, match=reason):
        parse_questions(reply, n)


# -- standalone questions ------------------------------------------------------------------------

STANDALONE = [
    "How should a court apply this article of the Convention to a detained asylum seeker?",
    "Why might the text message have been misread by the recipient?",
    "How would a given text classifier be affected by label noise?",
    "How did the passage of the Civil Rights Act change voter registration in the South?",
    "Why is the study of rare diseases underfunded compared with common ones?",
    "How does the passage of food through the small intestine change after gastric bypass?",
    "Why do reviews show that studies indicate a link between sleep and memory?",
    "How do text-based symptom checkers compare with nurses on triage accuracy?",
    "Why does the abstract expressionist movement matter for modern design?",
    "How absorbent is a paper towel compared with a cotton cloth?",
    "Which article of clothing loses the most body heat in cold weather?",
    "How are emotions conveyed in the text messages teenagers send each other?",
    "Why would the following text messages be flagged as spam by a filter?",
    "What makes a document admissible as evidence in a US federal court?",
    "How do hospitals document consent from patients who cannot read?",
]
SOURCE_POINTING = [
    ("According to the passage, why does the drug lower blood pressure?", "According to the passage"),
    ("What does the document suggest about the risk of relapse?", "the document"),
    ("Based on the text above, what causes the rash?", "Based on the text"),
    ("As described in this abstract, how is the enzyme activated?", "As described in this abstract"),
    ("What did the authors of the study find?", "the study"),
    ("In the given passage, which gene is overexpressed?", "In the given passage"),
    ("What does the passage not explicitly say about dosing?", "the passage"),
    ("Which drug does the excerpt recommend for children?", "the excerpt"),
    ("What is the paper's main claim about vitamin D?", "the paper"),
    ("Why was this study stopped early?", "this study"),
    ("What do the following passages have in common?", "the following passages"),
    ("What is discussed in the text about statins?", "discussed in the text"),
    ("What did the authors conclude about coffee?", "the authors"),
]


@pytest.mark.parametrize("question", STANDALONE)
def test_standalone_questions_are_accepted(question):
    assert source_reference(question) is None
    assert GeneratedQuestion(question=question, scenario="s").question == question


@pytest.mark.parametrize("question,words", SOURCE_POINTING)
def test_questions_pointing_at_their_source_are_rejected(question, words):
    assert source_reference(question) == words
    with pytest.raises(ValueError, match="refers to its source"):
        GeneratedQuestion(question=question, scenario="s")


# The refusal rate on legitimate questions made of real passages' own words (PubMedQA abstracts,
# MIT; BEIR NFCorpus, CC BY-SA 4.0; both read from shared/ beside the repository).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data"
OLD_SOURCE_REFERENCE = re.compile(  # the rule before, for the "before" figure printed below
    r"\b(the|this|that|above|given|provided|following)\s+(document|passage|text|excerpt|abstract|article)\b",
    re.IGNORECASE)
SOURCE_NOUNS = re.compile(
    r"\b(?:documents?|passages?|texts?|excerpts?|abstracts?|articles?|papers?|stud(?:y|ies)|authors?)\b", re.IGNORECASE)
# Sentences about the source itself ("we", "this study", "these papers", "the present trial",
# "the authors"...): a question built from them would not stand alone, so they are left out of
# the legitimate set. Deliberately broader than the rule under test and blind to what follows
# the noun: "this"/"these" before any document word, "the" before a word for a study or its parts.
_STUDY_WORDS = (r"study|studies|trials?|reviews?|articles?|papers?|reports?|analys[ie]s|abstracts?|surveys?"
                r"|investigations?|work|research|authors?|researchers|investigators|data|results|findings"
                r"|participants|patients|subjects")
ABOUT_THE_SOURCE = re.compile(
    r"\b(?:we|our|ours|us|here|herein|hereby)\b"
    rf"|\b(?:this|these|present|current)\s+(?:\w+\s+)?(?:{_STUDY_WORDS}|texts?|documents?|passages?|excerpts?)\b"
    rf"|\bthe\s+(?:\w+\s+)?(?:{_STUDY_WORDS})\b",
    re.IGNORECASE)
TEMPLATES = ["How does {a} relate to {b}?", "Why would {a} matter for {b}?", "What explains {a}?",
             "How might {a} change {b}?", "Why is {a} linked to {b}?", "In what way does {a} affect {b}?",
             "Why would {a}?", "How does {a} work?"]


def _real_sentences() -> list[str]:
    with open(SHARED_DATA / "pubmedqa/abstracts.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    with zipfile.ZipFile(SHARED_DATA / "nfcorpus/nfcorpus.zip") as z, z.open("nfcorpus/corpus.jsonl") as f:
        texts += [json.loads(line)["text"] for line in f]
    return [s for t in texts for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", t)
            if 6 <= len(s.split()) <= 60 and not ABOUT_THE_SOURCE.search(s)]


def _fragment(rng: random.Random, words: list[str], around: int | None = None) -> str:
    """3 to 8 consecutive words (containing ``words[around]`` if given), outer punctuation off."""
    n = min(len(words), rng.randint(3, 8))
    if around is None:
        start = rng.randrange(0, len(words) - n + 1)
    else:
        start = max(0, min(len(words) - n, around - rng.randrange(n)))
    frag = " ".join(words[start:start + n]).strip(" ,;:.!?()[]\"'")
    return frag[0].lower() + frag[1:] if frag[:1].isupper() and frag[1:2].islower() else frag


def legitimate_questions(seed: int = 7, plain: int = 300, with_noun: int = 200) -> list[str]:
    """``plain`` questions around fragments of random sentences and ``with_noun`` around a
    fragment holding one of the rule's nouns (in these texts: "studies have shown", "the
    passage of", "cohort study of"...), seeded."""
    rng = random.Random(seed)
    sentences = _real_sentences()
    noun_sentences = [s for s in sentences if SOURCE_NOUNS.search(s)]
    out = []
    for pool, count in ((sentences, plain), (noun_sentences, with_noun)):
        for _ in range(count):
            words = rng.choice(pool).split()
            around = None
            if pool is noun_sentences:
                around = rng.choice([i for i, w in enumerate(words) if SOURCE_NOUNS.search(w)])
            template = rng.choice(TEMPLATES)
            a = _fragment(rng, words, around)
            out.append(template.format(a=a, b=_fragment(rng, rng.choice(pool).split())))
    return out


def test_legitimate_questions_from_real_passages_are_rarely_refused():
    missing = [str(p) for p in (SHARED_DATA / "pubmedqa/abstracts.jsonl", SHARED_DATA / "nfcorpus/nfcorpus.zip")
               if not p.exists()]
    if missing:
        pytest.skip(reason=f"shared data not found: {', '.join(missing)} (shared/ beside the repo)")
    questions = legitimate_questions()
    assert len(questions) == 500 and sum(bool(SOURCE_NOUNS.search(q)) for q in questions) >= 200
    refused = [(q, source_reference(q)) for q in questions if source_reference(q)]
    before = sum(bool(OLD_SOURCE_REFERENCE.search(q)) for q in questions)
    print(f"\nrefused {len(refused)}/{len(questions)} ({len(refused) / len(questions):.1%}); "
          f"the previous rule: {before}/{len(questions)} ({before / len(questions):.1%})")
    assert len(refused) <= len(questions) // 100, refused
