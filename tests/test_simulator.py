"""The LLM simulator, exercised through the real ``openai`` client over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import time

import openai
import pytest

from rare_core.llm.simulator import SIMULATED_MODEL_MARKER, FaultSpec, SimulatorProcess
from rare_core.prompts import doc2query, reason_distill

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
    assert response.system_fingerprint == SIMULATED_MODEL_MARKER
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
    assert ids == [SIMULATED_MODEL_MARKER, "model-x"]


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
    assert raw.http_response.status_code == 200 and raw.parse().system_fingerprint == SIMULATED_MODEL_MARKER


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
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(client, hello(), timeout=0.3)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 3
    while sim.stats().in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats().in_flight == 0  # the server noticed the disconnect and let go
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
    assert 0.3 <= elapsed < 2.0  # serial would take 6 s
    stats = sim.stats()
    assert stats.max_in_flight >= 10
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
        assert ask(good, hello()).system_fingerprint == SIMULATED_MODEL_MARKER
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
