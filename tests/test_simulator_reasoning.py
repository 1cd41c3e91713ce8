"""The simulator's real-server behaviours, through the official ``openai`` client over HTTP:
where reasoning models put their thinking, long thinking under ``max_tokens``, a cap on
requests in flight, servers without structured output, and the Batch API."""

from __future__ import annotations

import asyncio
import json
import re
import time

import openai
import pytest
from openai.types.chat import ChatCompletion
from waiting import wait_until

from rare_core.prompts import doc2query, reason_distill
from rare_sim import FaultSpec, SimulatorConfig, SimulatorProcess, estimate_tokens, format_reset, prompt_parity

DOC = (
    "Metformin lowers hepatic glucose production. In patients with type 2 diabetes, metformin improves insulin "
    "sensitivity. Lactic acidosis is a rare complication of metformin when renal clearance fails."
)
INLINE = re.compile(r"^<think>(\[simulated reasoning\] .+)</think>\n<answer>(\[simulated\] .+)</answer>$", re.S)
RESET_FORMAT = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "item", "schema": {
    "type": "object", "properties": {"scenario": {"type": "string"}, "question": {"type": "string"}},
    "required": ["scenario", "question"]}}}


@pytest.fixture
def configured(sim):
    """The session simulator; its settings go back to the defaults after the test."""
    yield sim
    sim.configure()


@pytest.fixture
def client(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0, timeout=10)


def distill(question="Why is metformin risky when renal clearance fails?"):
    docs = ["Aspirin inhibits platelet aggregation.", DOC, "Renal failure slows drug clearance."]
    return reason_distill.build_messages("A patient on metformin develops renal failure.", question, docs)


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model="sim-model", messages=messages, **kwargs)


def seconds(reset):
    """Seconds of an ``x-ratelimit-reset-*`` value (the formats :func:`format_reset` writes)."""
    match = RESET_FORMAT.match(reset)
    assert match, reset
    hours, minutes, last = (match[1] or "0h")[:-1], (match[2] or "0m")[:-1], match[3]
    tail = float(last[:-2]) / 1000 if last.endswith("ms") else float(last[:-1])
    return int(hours) * 3600 + int(minutes) * 60 + tail


def words(text):
    return len((text or "").split())


def line(custom_id, messages, model="sim-model", **extra):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": messages, **extra}}


def jsonl(lines):
    return "".join(json.dumps(item) + "\n" for item in lines).encode("utf-8")


def run_batch(client, lines, wait=True, **create):
    uploaded = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", **create)
    if not wait:
        return batch
    return wait_until(lambda: ended(client.batches.retrieve(batch.id)), 10, f"batch {batch.id} to end")


def ended(batch):
    """``batch`` if it has ended (completed, failed, cancelled, expired), else None."""
    return batch if batch.status in ("completed", "failed", "cancelled", "expired") else None


def file_lines(client, file_id):
    return [json.loads(raw) for raw in client.files.content(file_id).text.splitlines()]


def same_answer(batch_body, online):
    """A batch line's body and an online completion agree on all but id and timestamp."""
    batch = ChatCompletion.model_validate(batch_body).model_dump(exclude={"id", "created"})
    return batch == online.model_dump(exclude={"id", "created"})


# ---------------------------------------------------------------------------- a) reasoning


def test_inline_is_the_default_and_has_no_reasoning_field(configured, client):
    assert configured.config() == SimulatorConfig()
    message = ask(client, distill()).choices[0].message
    assert INLINE.match(message.content)
    assert getattr(message, "reasoning_content", None) is None and getattr(message, "reasoning", None) is None


def test_reasoning_content_mode_moves_the_thinking_out_of_the_content(configured, client):
    inline = INLINE.match(ask(client, distill()).choices[0].message.content)
    configured.configure(reasoning="reasoning_content")
    response = ask(client, distill())
    message = response.choices[0].message
    assert message.reasoning_content == inline[1]
    assert message.content == f"<answer>{inline[2]}</answer>"
    assert response.usage.completion_tokens == estimate_tokens(message.content) + estimate_tokens(inline[1])
    # Doc2Query: the JSON stays in the content, a short thinking appears in the field.
    d2q = ask(client, doc2query.build_messages(DOC, 1)).choices[0].message
    assert set(json.loads(d2q.content)) == {"scenario", "question", "reference_answer"}
    assert d2q.reasoning_content.startswith("[simulated reasoning] ") and "metformin" in d2q.reasoning_content


def test_reasoning_mode_alternates_tagged_and_plain_answers_by_prompt_hash(configured, client):
    configured.configure(reasoning="reasoning")
    seen = set()
    for i in range(12):
        messages = distill(f"Why is metformin risky when renal clearance fails, case {i}?")
        message = ask(client, messages).choices[0].message
        assert message.reasoning.startswith("[simulated reasoning] ")
        assert getattr(message, "reasoning_content", None) is None
        tagged = prompt_parity(m["content"] for m in messages) == 0
        if tagged:
            assert re.fullmatch(r"<answer>\[simulated\] .+</answer>", message.content, re.S)
        else:
            assert message.content.startswith("[simulated] According to Document 2:") and "<" not in message.content
        assert ask(client, messages).choices[0].message.content == message.content  # deterministic
        seen.add(tagged)
    assert seen == {True, False}
    assert json.loads(ask(client, doc2query.build_messages(DOC, 1)).choices[0].message.content)


def test_swallowed_mode_drops_only_the_opening_think_tag(configured, client):
    inline = ask(client, distill()).choices[0].message.content
    d2q = ask(client, doc2query.build_messages(DOC, 1)).choices[0].message.content
    configured.configure(reasoning="swallowed")
    content = ask(client, distill()).choices[0].message.content
    assert not content.startswith("<think>") and "<think>" + content == inline
    assert "</think>\n<answer>" in content
    assert ask(client, doc2query.build_messages(DOC, 1)).choices[0].message.content == d2q  # unaffected


# ---------------------------------------------------------------------------- b) long thinking


def test_long_thinking_is_that_many_tokens_and_usage_counts_words(configured, client):
    configured.configure(reasoning="reasoning_content", thinking_tokens=500)
    response = ask(client, distill(), max_tokens=4000)
    message = response.choices[0].message
    assert words(message.reasoning_content) == 500
    assert response.choices[0].finish_reason == "stop" and message.content.startswith("<answer>")
    assert response.usage.completion_tokens == 500 + words(message.content)


def test_a_budget_within_the_thinking_leaves_no_answer(configured, client):
    configured.configure(reasoning="reasoning_content", thinking_tokens=500)
    cut = ask(client, distill(), max_tokens=200)
    assert cut.choices[0].finish_reason == "length"
    assert words(cut.choices[0].message.reasoning_content) == 200 and cut.choices[0].message.content == ""
    assert cut.usage.completion_tokens == 200
    configured.configure(thinking_tokens=500)  # inline: the content stops inside the <think>
    inline = ask(client, distill(), max_completion_tokens=200).choices[0]
    assert inline.finish_reason == "length" and inline.message.content.startswith("<think>[simulated reasoning]")
    assert "</think>" not in inline.message.content and words(inline.message.content) == 200


def test_a_budget_past_the_thinking_cuts_the_answer(configured, client):
    configured.configure(reasoning="reasoning_content", thinking_tokens=300)
    full = ask(client, distill(), max_tokens=5000).choices[0].message
    cut = ask(client, distill(), max_tokens=303)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 303
    assert cut.choices[0].message.reasoning_content == full.reasoning_content
    assert cut.choices[0].message.content == " ".join(full.content.split()[:3])
    # Prompts without thinking honour the budget too (inline Doc2Query: JSON cut short).
    configured.configure(thinking_tokens=300)
    d2q = ask(client, doc2query.build_messages(DOC, 1), max_tokens=5).choices[0]
    assert d2q.finish_reason == "length" and words(d2q.message.content) == 5


def test_short_thinking_ignores_max_tokens_as_before(configured, client):
    response = ask(client, distill(), max_tokens=5)
    assert response.choices[0].finish_reason == "stop" and INLINE.match(response.choices[0].message.content)


# ---------------------------------------------------------------------------- c) in-flight cap


def test_requests_over_the_cap_get_429_with_rate_limit_headers(configured):
    configured.configure(max_in_flight=4, latency=0.8, cap_retry_after=2)

    async def burst():
        async with openai.AsyncOpenAI(base_url=configured.base_url, api_key="t", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response
            return await asyncio.gather(
                *(raw.create(model="m", messages=[{"role": "user", "content": f"r{i}"}]) for i in range(10)),
                return_exceptions=True)

    results = asyncio.run(burst())
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(ok), len(refused)) == (4, 6), results
    for err in refused:
        headers = err.response.headers
        assert err.type == "rate_limit_exceeded" and err.code == "rate_limit_exceeded"
        assert headers["retry-after"] == "2"  # whole seconds, as servers and proxies send it
        assert headers["x-ratelimit-limit-requests"] == "4" and headers["x-ratelimit-remaining-requests"] == "0"
        assert 0 <= seconds(headers["x-ratelimit-reset-requests"]) <= 0.8  # the rest of the first wave's latency
    for raw in ok:
        assert raw.headers["x-ratelimit-limit-requests"] == "4"
        assert 1 <= int(raw.headers["x-ratelimit-remaining-requests"]) <= 4
        assert raw.parse().choices[0].message.content.startswith("[simulated] echo: r")
    stats = configured.stats()
    assert stats.refused_over_cap == 6 and stats.completions_served == 4
    assert stats.max_in_flight == 4 and stats.in_flight == 0
    lone = openai.OpenAI(base_url=configured.base_url, api_key="t", max_retries=0).chat.completions
    alone = lone.with_raw_response.create(model="m", messages=[{"role": "user", "content": "alone"}])
    assert alone.headers["x-ratelimit-remaining-requests"] == "4" and alone.headers["x-ratelimit-reset-requests"] == "0s"


def test_no_cap_no_rate_limit_headers(configured, client):
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert "x-ratelimit-limit-requests" not in raw.headers
    configured.configure(max_in_flight=1)  # a cap without cap_retry_after: no Retry-After
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-ratelimit-limit-requests"] == "1" and "retry-after" not in raw.headers


def test_reset_durations_use_openais_format():
    values = (0, 0.12, 0.0004, 1, 17.5, 360, 3723.5)
    assert [format_reset(s) for s in values] == ["0s", "120ms", "1ms", "1s", "17.5s", "6m0s", "1h2m3.5s"]
    assert [seconds(format_reset(s)) for s in values] == [0, 0.12, 0.001, 1, 17.5, 360, 3723.5]


# ---------------------------------------------------------------------------- d) structured output


def test_structured_output_unsupported_is_a_400_like_vllm(configured, client):
    assert set(json.loads(ask(client, doc2query.build_messages(DOC, 1), response_format=SCHEMA_FORMAT)
                          .choices[0].message.content)) == {"scenario", "question", "reference_answer"}
    configured.configure(structured_output="unsupported")
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, doc2query.build_messages(DOC, 1), response_format=SCHEMA_FORMAT)
    assert "response_format json_schema is not supported by this model" in err.value.message
    assert err.value.param == "response_format"
    # json_object mode and no response_format are still answered.
    assert json.loads(ask(client, doc2query.build_messages(DOC, 1), response_format={"type": "json_object"})
                      .choices[0].message.content)
    assert json.loads(ask(client, doc2query.build_messages(DOC, 1)).choices[0].message.content)
    assert configured.stats().completions_served == 3


# ---------------------------------------------------------------------------- e) Batch API


def test_batch_answers_are_the_online_answers(configured, client):
    bodies = [doc2query.build_messages(DOC, 1), distill(), [{"role": "user", "content": "hello"}]]
    data = jsonl([line(f"row-{i}", m) for i, m in enumerate(bodies)])
    uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(data)
    assert (uploaded.purpose, uploaded.filename, uploaded.status) == ("batch", "requests.jsonl", "processed")
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data

    created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h", metadata={"run": "test"})
    assert created.id.startswith("batch_") and created.status == "validating"
    assert created.request_counts.total == 3 and created.metadata == {"run": "test"}
    batch = client.batches.retrieve(created.id)  # batch_delay 0: done at the first look
    assert batch.status == "completed" and batch.error_file_id is None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 0)
    assert batch.completed_at >= batch.created_at and batch.model == "sim-model"
    out = file_lines(client, batch.output_file_id)
    assert [item["custom_id"] for item in out] == ["row-0", "row-1", "row-2"]
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    for item, messages in zip(out, bodies):
        assert item["id"].startswith("batch_req_") and item["error"] is None
        assert item["response"]["status_code"] == 200 and item["response"]["request_id"]
        assert same_answer(item["response"]["body"], ask(client, messages))
    stats = configured.stats()
    assert (stats.files_uploaded, stats.batches_created) == (1, 1)
    assert (stats.batch_completions_served, stats.completions_served) == (3, 3)  # 3 in batch, 3 online


def test_batch_lines_follow_the_settings_online_requests_follow(configured, client):
    configured.configure(reasoning="reasoning_content", thinking_tokens=100, structured_output="unsupported")
    batch = run_batch(client, [line("think", distill(), max_tokens=50),
                               line("schema", doc2query.build_messages(DOC, 1), response_format=SCHEMA_FORMAT)])
    (ok,), (refused,) = file_lines(client, batch.output_file_id), file_lines(client, batch.error_file_id)
    choice = ok["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "length" and words(choice["message"]["reasoning_content"]) == 50
    assert refused["custom_id"] == "schema" and refused["response"]["status_code"] == 400
    assert "json_schema is not supported" in refused["response"]["body"]["error"]["message"]


def test_batch_completes_after_its_delay_with_counts_growing(configured, client):
    configured.configure(batch_delay=0.6)
    started = time.monotonic()
    batch = run_batch(client, [line(f"r{i}", [{"role": "user", "content": f"q{i}"}]) for i in range(6)], wait=False)
    seen = []

    def completed():
        seen.append(client.batches.retrieve(batch.id))
        assert seen[-1].status in ("in_progress", "completed")
        return seen[-1].status == "completed"

    wait_until(completed, 10, "the batch to complete")
    batch, counts = seen[-1], [b.request_counts.completed for b in seen]
    assert time.monotonic() - started >= 0.6  # its delay, from before its creation
    assert counts == sorted(counts) and 0 < len(set(counts)) and counts[-1] == 6
    assert any(0 < c < 6 for c in counts)  # seen halfway
    assert batch.in_progress_at is not None


def test_fault_lines_go_to_the_error_file(configured, client):
    configured.inject([FaultSpec(kind="server_error", match="SERVER"), FaultSpec(kind="rate_limit", match="LIMIT"),
                       FaultSpec(kind="hang", match="HANG"), FaultSpec(kind="length", match="LENGTH")])
    prompts = ["fine-a", "SERVER down", "LIMIT hit", "HANG here", "LENGTH cut short at some point", "fine-b"]
    batch = run_batch(client, [line(p.split()[0], [{"role": "user", "content": p}]) for p in prompts])
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed, batch.request_counts.total) == (3, 3, 6)
    ok = {item["custom_id"]: item for item in file_lines(client, batch.output_file_id)}
    failed = {item["custom_id"]: item for item in file_lines(client, batch.error_file_id)}
    assert set(ok) == {"fine-a", "LENGTH", "fine-b"} and set(failed) == {"SERVER", "LIMIT", "HANG"}
    assert ok["LENGTH"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    assert failed["SERVER"]["response"]["status_code"] == 500 and failed["SERVER"]["error"] is None
    assert failed["SERVER"]["response"]["body"]["error"]["type"] == "server_error"
    assert failed["LIMIT"]["response"]["status_code"] == 429
    assert failed["HANG"]["response"] is None and failed["HANG"]["error"]["code"] == "request_timeout"
    stats = configured.stats()
    assert stats.faults_served == {"server_error": 1, "rate_limit": 1, "hang": 1, "length": 1}
    assert (stats.batch_completions_served, stats.batch_requests_failed, stats.completions_served) == (2, 3, 0)


def test_a_malformed_input_file_fails_the_batch_with_errors(configured, client):
    good = line("a", [{"role": "user", "content": "x"}])
    rows = [json.dumps(good), "{not json", json.dumps(good),  # line 3: duplicate custom_id
            json.dumps({**good, "custom_id": "b", "method": "GET"}),
            json.dumps({**good, "custom_id": "c", "url": "/v1/embeddings"}),
            json.dumps({"custom_id": "d", "method": "POST", "url": "/v1/chat/completions"}),
            json.dumps(line("e", [{"content": "no role"}])),
            json.dumps(line("f", [{"role": "user", "content": "x"}], model="another-model")),
            json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": good["body"]})]
    uploaded = client.files.create(file=("bad.jsonl", ("\n".join(rows) + "\n").encode()), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.output_file_id is None and batch.error_file_id is None
    found = [(e.line, e.code) for e in batch.errors.data]
    assert found == [(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_method"), (5, "invalid_url"),
                     (6, "missing_required_parameter"), (7, "invalid_request"), (8, "mismatched_model"),
                     (9, "missing_required_parameter")]
    assert all(e.message for e in batch.errors.data)
    empty = client.files.create(file=("empty.jsonl", b"\n"), purpose="batch")
    batch = client.batches.create(input_file_id=empty.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert [e.code for e in client.batches.retrieve(batch.id).errors.data] == ["empty_file"]
    assert configured.stats().batch_completions_served == 0


def test_batch_requests_the_api_refuses(configured, client):
    with pytest.raises(openai.BadRequestError, match="no such file"):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    uploaded = client.files.create(file=("r.jsonl", jsonl([line("a", [{"role": "user", "content": "x"}])])),
                                   purpose="batch")
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("r.jsonl", b"{}"), purpose="nonsense")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    assert configured.stats().batches_created == 0


def test_cancel_a_batch(configured, client):
    configured.configure(batch_delay=30)
    batch = run_batch(client, [line(f"r{i}", [{"role": "user", "content": f"q{i}"}]) for i in range(5)], wait=False)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.request_counts.completed < 5
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    listed = client.batches.list()
    assert [b.id for b in listed.data] == [batch.id]


def test_reset_drops_files_and_batches(configured, client):
    batch = run_batch(client, [line("a", [{"role": "user", "content": "x"}])])
    configured.reset()
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.output_file_id)


def test_process_settings_key_and_configure():
    with SimulatorProcess(api_key="batch-secret", reasoning="reasoning_content", max_in_flight=3,
                          batch_delay=0.05) as keyed:
        assert keyed.config() == SimulatorConfig(reasoning="reasoning_content", max_in_flight=3, batch_delay=0.05)
        assert "batch-secret" not in " ".join(keyed._proc.args)
        keyed.set_latency(0.01)  # the constructor's other settings stay
        assert keyed.config().reasoning == "reasoning_content" and keyed.config().latency == 0.01
        assert keyed.configure(reasoning="swallowed").max_in_flight == 3
        assert keyed.configure() == keyed.settings
        wrong = openai.OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.files.create(file=("r.jsonl", b"{}"), purpose="batch")
        with pytest.raises(openai.AuthenticationError):
            wrong.batches.retrieve("batch_x")
        good = openai.OpenAI(base_url=keyed.base_url, api_key="batch-secret", max_retries=0)
        batch = run_batch(good, [line("a", distill())])
        (item,) = file_lines(good, batch.output_file_id)
        assert item["response"]["body"]["choices"][0]["message"]["reasoning_content"].startswith("[simulated")
    with pytest.raises(ValueError):
        SimulatorProcess(reasoning="telepathy")
