"""The LLM simulator, exercised through the real ``openai`` client over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import time

from pathlib import Path

import openai
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from waiting import wait_until

import rare_sim
from rare_core.llm.simulated import SIMULATED_FINGERPRINT
from rare_core.prompts import doc2query, reason_distill
from rare_core.prompts.view import Doc2QueryView, DistillView, JudgeView, read_prompt
from rare_core.verify import JUDGE_USER, judge_messages
from rare_sim import FaultSpec, SimulatorProcess

DOC_A = (
    "Metformin lowers hepatic glucose production. In patients with type 2 diabetes, metformin "
    "improves insulin sensitivity. Lactic acidosis is a rare complication of metformin when renal "
    "clearance fails. The document notes that metformin is cheap."
)
DOC_B = (
    "Beta blockers reduce heart rate and myocardial oxygen demand. After a myocardial infarction, "
    "beta blockers lower mortality. Asthma patients may suffer bronchospasm on non-selective beta blockers."
)
BANNED = ("the document", "the passage", "the text")
THINK_ANSWER = re.compile(r"^<think>\[simulated reasoning\] (.+)</think>\n<answer>\[simulated\] (.+)</answer>$", re.S)


@pytest.fixture
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0, timeout=10)


def ask(client, messages, model="sim-model", **kwargs):
    return client.chat.completions.create(model=model, messages=messages, **kwargs)


def hello(text="hello there"):
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------- answer formats


def test_doc2query_one_question_is_json_built_from_the_document(client):
    response = ask(client, doc2query.build_messages(DOC_A, 1), model="my-model")
    item = json.loads(response.choices[0].message.content)

    assert set(item) == {"scenario", "question", "reference_answer"}
    assert item["scenario"].startswith("[simulated] ")
    assert item["question"].endswith("?")
    assert "metformin" in item["question"]  # the most frequent content word of DOC_A
    assert not any(phrase in item["question"].lower() for phrase in BANNED)
    assert response.model == "my-model"
    assert response.system_fingerprint == SIMULATED_FINGERPRINT
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_doc2query_three_questions_deterministic_and_document_dependent(client):
    first = ask(client, doc2query.build_messages(DOC_A, 3)).choices[0].message.content
    again = ask(client, doc2query.build_messages(DOC_A, 3)).choices[0].message.content
    other = ask(client, doc2query.build_messages(DOC_B, 3)).choices[0].message.content

    items = json.loads(first)["questions"]
    assert len(items) == 3
    assert len({item["question"] for item in items}) == 3
    for item in items + json.loads(other)["questions"]:
        assert item["scenario"].startswith("[simulated] ")
        assert item["question"].endswith("?")
        assert not any(phrase in item["question"].lower() for phrase in BANNED)
    assert first == again
    assert first != other
    assert "blockers" in other


def test_reason_distill_names_the_best_document_and_quotes_it(client):
    docs = ["Aspirin inhibits platelet aggregation.", DOC_A, "Renal failure slows drug clearance."]
    messages = reason_distill.build_messages(
        "A patient on metformin develops renal failure.", "Why is metformin risky when renal clearance fails?", docs
    )
    content = ask(client, messages).choices[0].message.content
    match = THINK_ANSWER.match(content)

    assert match, content
    think, answer = match.groups()
    assert all(f"Document {i}" in think for i in (1, 2, 3))
    assert "Document 2 overlaps most" in think
    assert answer.startswith("According to Document 2:")
    assert "Lactic acidosis is a rare complication of metformin when renal clearance fails." in answer
    assert ask(client, messages).choices[0].message.content == content

    swapped = reason_distill.build_messages("A case.", "Why does asthma limit beta blockers?", [DOC_A, DOC_B])
    assert "Document 2 overlaps most" in THINK_ANSWER.match(ask(client, swapped).choices[0].message.content)[1]


def test_other_prompts_get_a_short_simulated_echo(client):
    content = ask(client, hello("what is two plus two")).choices[0].message.content
    assert content == "[simulated] echo: what is two plus two"


def test_models_endpoint_lists_the_models_asked(client):
    ask(client, hello(), model="model-x")
    ids = [m.id for m in client.models.list().data]
    assert ids == [SIMULATED_FINGERPRINT, "model-x"]


# ---------------------------------------------------------------------------- faults


def test_rate_limit_with_retry_after_then_recovers(sim, client):
    sim.inject([FaultSpec(kind="rate_limit", count=2, retry_after=0.1)])
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as err:
            ask(client, hello())
        assert err.value.response.headers["retry-after"] == "0.1"
        assert err.value.code == "rate_limit_exceeded"
    assert ask(client, hello()).choices[0].message.content.startswith("[simulated]")
    assert sim.stats().faults_served == {"rate_limit": 2}


def test_rate_limit_seen_through_raw_response(sim, client):
    sim.inject([FaultSpec(kind="rate_limit")])
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.with_raw_response.create(model="m", messages=hello())
    assert err.value.response.status_code == 429
    assert err.value.response.headers["retry-after"] == "1"  # the default
    raw = client.chat.completions.with_raw_response.create(model="m", messages=hello())
    assert raw.http_response.status_code == 200 and raw.parse().system_fingerprint == SIMULATED_FINGERPRINT


@pytest.mark.parametrize(
    ("kind", "error"),
    [("server_error", openai.InternalServerError), ("unauthorized", openai.AuthenticationError)],
)
def test_status_faults_raise_the_matching_client_error(sim, client, kind, error):
    sim.inject([FaultSpec(kind=kind)])
    with pytest.raises(error) as err:
        ask(client, hello())
    assert set(err.value.body) == {"message", "type", "param", "code"}
    assert sim.stats().faults_served == {kind: 1}


def test_hang_times_out_the_client_and_ends_when_it_gives_up(sim, client):
    sim.inject([FaultSpec(kind="hang")])
    with pytest.raises(openai.APITimeoutError):  # not the 504 that ends a hang the client waits out
        ask(client, hello(), timeout=0.3)
    # the server noticed the disconnect and let go (a hang it does not notice lasts 10 minutes)
    wait_until(lambda: not sim.stats().in_flight, 30, "the server to let go of the hung request")
    assert ask(client, hello()).choices[0].message.content.startswith("[simulated]")


def test_malformed_json_is_a_200_whose_content_does_not_parse(sim, client):
    sim.inject([FaultSpec(kind="malformed_json")])
    broken = ask(client, doc2query.build_messages(DOC_A, 1))
    assert broken.choices[0].finish_reason == "stop"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.choices[0].message.content)
    json.loads(ask(client, doc2query.build_messages(DOC_A, 1)).choices[0].message.content)


def test_bad_body_is_a_200_that_is_not_json(sim, client):
    sim.inject([FaultSpec(kind="bad_body")])
    # The openai client reads a JSON content type and fails to decode it (a ValueError, not an openai error).
    with pytest.raises(json.JSONDecodeError):
        ask(client, hello())
    raw = client.chat.completions.with_raw_response
    sim.inject([FaultSpec(kind="bad_body")])
    with pytest.raises(json.JSONDecodeError):
        raw.create(model="m", messages=hello()).parse()


def test_length_and_empty_faults(sim, client):
    full = ask(client, doc2query.build_messages(DOC_A, 1)).choices[0].message.content
    sim.inject([FaultSpec(kind="length"), FaultSpec(kind="empty")])

    cut = ask(client, doc2query.build_messages(DOC_A, 1)).choices[0]
    assert cut.finish_reason == "length"
    assert 0 < len(cut.message.content) < len(full) and full.startswith(cut.message.content)
    empty = ask(client, hello())
    assert empty.choices[0].message.content == ""
    assert empty.usage.completion_tokens == 0
    assert sim.stats().faults_served == {"length": 1, "empty": 1}


def test_match_restricts_a_fault_and_specs_apply_in_order(sim, client):
    pending = sim.inject(
        [FaultSpec(kind="server_error", match="FAULTY"), FaultSpec(kind="unauthorized", match="FAULTY")]
    )
    assert [spec.kind for spec in pending] == ["server_error", "unauthorized"]

    assert ask(client, hello("a normal prompt")).choices[0].message.content.startswith("[simulated]")
    with pytest.raises(openai.InternalServerError):
        ask(client, hello("a FAULTY prompt"))
    with pytest.raises(openai.AuthenticationError):
        ask(client, hello("another FAULTY prompt"))
    assert ask(client, hello("a FAULTY prompt")).choices[0].message.content.startswith("[simulated]")


def test_clear_faults_drops_pending_faults(sim, client):
    sim.inject([FaultSpec(kind="server_error", count=5)])
    sim.clear_faults()
    assert ask(client, hello()).choices[0].finish_reason == "stop"
    assert sim.stats().faults_served == {}


def test_raw_retry_after_header_is_sent_as_given(sim, client):
    sim.inject([FaultSpec(kind="rate_limit", retry_after_header="soon")])
    with pytest.raises(openai.RateLimitError) as info:
        ask(client, hello())
    assert info.value.response.headers["retry-after"] == "soon"


def test_odd_shape_is_a_200_whose_json_is_not_a_completion(sim, client):
    sim.inject([FaultSpec(kind="odd_shape")])
    raw = client.chat.completions.with_raw_response.create(model="m", messages=hello())
    assert raw.status_code == 200
    body = json.loads(raw.text)
    assert body["choices"] and all(isinstance(c, str) for c in body["choices"])
    assert sim.stats().faults_served == {"odd_shape": 1}
    assert ask(client, hello()).choices[0].message.content  # one use only


def test_fault_spec_rejects_unknown_kinds_and_fields():
    with pytest.raises(ValueError):
        FaultSpec(kind="explode")
    with pytest.raises(ValueError):
        FaultSpec(kind="rate_limit", retry=1)


# ---------------------------------------------------------------------------- latency, stats


def test_latency_applies_concurrently(sim):
    sim.set_latency(0.3)

    async def burst() -> list:
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="test", max_retries=0) as client:
            return await asyncio.gather(
                *(client.chat.completions.create(model="m", messages=hello(f"request {i}")) for i in range(20))
            )

    started = time.monotonic()
    responses = asyncio.run(burst())
    elapsed = time.monotonic() - started

    assert [r.choices[0].message.content for r in responses] == [f"[simulated] echo: request {i}" for i in range(20)]
    assert elapsed >= 0.3  # the latency applies
    stats = sim.stats()
    assert stats.max_in_flight >= 10  # concurrently: 10 or more slept at once
    assert stats.in_flight == 0
    assert stats.completions_served == 20


def test_stats_count_requests_and_reset_zeroes_them(sim, client):
    ask(client, hello(), model="a")
    ask(client, hello(), model="b")
    ask(client, hello(), model="a")
    client.models.list()
    sim.inject([FaultSpec(kind="empty")])
    ask(client, hello(), model="a")

    stats = sim.stats()
    assert stats.requests_by_path == {
        "/v1/chat/completions": 4,
        "/v1/models": 1,
        "/_sim/faults": 1,
        "/_sim/stats": 1,  # this call
    }
    assert stats.requests_total == 7
    assert stats.completions_served == 3
    assert stats.faults_served == {"empty": 1}
    assert stats.models == ["a", "b"] and stats.model_count == 2
    assert stats.in_flight == 0 and stats.max_in_flight == 1

    sim.inject([FaultSpec(kind="server_error")])
    sim.reset()
    after = sim.stats()
    assert after.requests_by_path == {"/_sim/stats": 1}
    assert (after.completions_served, after.faults_served, after.models) == (0, {}, [])
    assert ask(client, hello()).choices[0].finish_reason == "stop"  # the pending fault is gone


# ---------------------------------------------------------------------------- process, API key


def test_api_key_is_checked_and_the_process_stops_cleanly():
    with SimulatorProcess(api_key="secret-key") as keyed:
        process = keyed._proc
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0).models.list()
        assert err.value.code == "invalid_api_key"
        assert "secret-key" not in str(err.value) and "secret-key" not in " ".join(process.args)
        good = openai.OpenAI(base_url=keyed.base_url, api_key="secret-key", max_retries=0)
        assert ask(good, hello()).system_fingerprint == SIMULATED_FINGERPRINT
        assert keyed.stats().completions_served == 1
    assert process.poll() is not None
    with pytest.raises(RuntimeError, match="not running"):
        keyed.stats()


def test_start_failure_reports_the_child_stderr():
    with pytest.raises(RuntimeError, match=r"did not become ready(.|\n)*stderr"):
        SimulatorProcess(host="256.256.256.256").start()


def test_invalid_request_is_a_400_in_the_openai_shape(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=[{"content": "no role"}])
    assert err.value.type == "invalid_request_error" and "role" in err.value.message


def test_a_reask_is_answered_like_the_original_prompt(client):
    original = doc2query.build_messages(DOC_A, 1)
    reask = original + [
        {"role": "assistant", "content": "not json"},
        {"role": "user", "content": "Your reply was not valid JSON. Answer again."},
    ]
    assert ask(client, reask).choices[0].message.content == ask(client, original).choices[0].message.content


# ---------------------------------------------------------------------------- prompts read back
# The simulator knows a prompt only through rare_core.prompts.view.read_prompt, which reads each
# prompt with the layout its builder writes: whatever a builder writes, the reader gets back.

FRAGMENTS = st.sampled_from([
    "x", "Metformin", " ", "\n", "\n\n", "é", "?", "[Document 2]\n", "\n\n[Document 3]\n", "[Document 1]",
    "<question>", "</question>", "<documents>", "</documents>", "<document>", "</document>", "<scenario>\n",
    "</candidate_answer>", "<reference_answer>", "Number of questions: 7\n", "{json_shape}", "N",
])
TEXT = st.lists(FRAGMENTS | st.text(max_size=8), max_size=12).map("".join)
REASK = [{"role": "assistant", "content": "not usable"}, {"role": "user", "content": "Answer again. [attempt 2]"}]


@settings(max_examples=200, deadline=None)
@given(document=TEXT, num_questions=st.integers(1, 12), max_doc_chars=st.integers(1, 60))
def test_doc2query_prompt_reads_back_as_built(document, num_questions, max_doc_chars):
    messages = doc2query.build_messages(document, num_questions, max_doc_chars)
    view = read_prompt(messages)
    assert isinstance(view, Doc2QueryView) and view.kind == "doc2query"
    assert (view.document, view.num_questions) == (doc2query.truncate(document, max_doc_chars), num_questions)
    assert view.text == messages[-1]["content"]
    assert read_prompt(messages + REASK) == view


def closed_once(value: str, close: str) -> bool:
    """Whether the first ``close`` after a field holding ``value`` is its own: a field that holds
    the text closing it is ambiguous to any reader."""
    return (value + close).find(close) == len(value)


@settings(max_examples=200, deadline=None)
@given(scenario=TEXT, question=TEXT, documents=st.lists(TEXT, max_size=4), max_doc_chars=st.integers(1, 60))
def test_reason_distill_prompt_reads_back_as_built(scenario, question, documents, max_doc_chars):
    shown = [doc2query.truncate(doc, max_doc_chars) for doc in documents]
    assume(closed_once(scenario, "\n</scenario>\n\n<question>\n"))
    assume(closed_once(question, "\n</question>\n\n<documents>\n"))
    assume(all(closed_once(doc, f"\n\n[Document {i + 1}]\n") for i, doc in enumerate(shown, start=1)))
    messages = reason_distill.build_messages(scenario, question, documents, max_doc_chars)
    view = read_prompt(messages)
    assert isinstance(view, DistillView) and view.kind == "distill"
    assert view.scenario == (scenario if scenario.strip() else "")
    assert (view.question, view.documents) == (question, tuple(shown))
    assert view.text == messages[-1]["content"]
    assert read_prompt(messages + REASK) == view


@settings(max_examples=200, deadline=None)
@given(question=TEXT, reference=TEXT, candidate=TEXT)
def test_judge_prompt_reads_back_as_built(question, reference, candidate):
    assume(closed_once(question, "\n</question>\n\n<reference_answer>\n"))
    assume(closed_once(reference, "\n</reference_answer>\n\n<candidate_answer>\n"))
    messages = judge_messages(question, reference, candidate)
    view = read_prompt(messages)
    assert isinstance(view, JudgeView) and view.kind == "judge"
    assert (view.question, view.reference, view.candidate) == (question, reference, candidate)
    assert view.text == messages[-1]["content"]


def test_only_the_builders_own_prompts_are_read(client):
    built = [doc2query.build_messages(DOC_A, 2), reason_distill.build_messages("A case.", "Why?", [DOC_A]),
             judge_messages("Why?", "yes", "no")]
    for messages in built:
        reworded = [*messages[:-1], {"role": "user", "content": messages[-1]["content"].replace("the", "a", 1)}]
        assert read_prompt(messages) is not None and read_prompt(reworded) is None
        assert ask(client, reworded).choices[0].message.content.startswith("[simulated] echo: ")
    assert read_prompt(hello()) is None and read_prompt([]) is None


def test_the_simulator_never_matches_the_prompts_wording():
    """rare_sim holds none of the delimiters the prompts put around their fields: it reads
    prompts through rare_core.prompts.view only."""
    fixed = [part for layout in (doc2query.USER, reason_distill.USER_WITH_SCENARIO, JUDGE_USER)
             for part in layout.parts if isinstance(part, str)]
    markers = {tag for part in fixed for tag in re.findall(r"</?[a-z_]+>", part)}
    markers -= {"<think>", "</think>", "<answer>", "</answer>"}  # the answer format, which the simulator writes
    markers |= {"Number of questions", reason_distill.DOCUMENT_HEADER.split("{")[0]}
    assert {"<document>", "<question>", "<reference_answer>", "[Document "} <= markers
    for path in Path(rare_sim.__file__).parent.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert [m for m in markers if m in source] == [], path.name
