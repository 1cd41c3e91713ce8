"""rare_core.report_html and rare_core.report_summary: the self-contained HTML report (summary facts, steps,
charts of the final rows) and the typed run summary it shares with report.md and summary.json."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from rare_core.config import Prices
from rare_core.operators.base import LLMCounters, StepSummary, merge_summaries
from rare_core.prices import price_for
from rare_core.report import StepRecord, build_report
from rare_core import report_html
from rare_core.report_html import chart_columns, render_html
from rare_core.report_summary import CACHED_NOTE, KIND_ADVICE, RunSummary

PNG = "data:image/png;base64,"
N_ROWS = 30


class Page(HTMLParser):
    """The parts of the page the tests look at; fails on tags left open."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.imgs: list[dict] = []
        self.urls: list[str] = []
        self.captions: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.banner = ""
        self.text: list[str] = []
        self._figure: str | None = None
        self._capture: tuple[str, str] | None = None
        self._buf: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "action", "data"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "img":
            self.imgs.append(a)
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "figure":
            self._figure = a.get("id")
        if tag == "figcaption":
            self._capture, self._buf = ("caption", self._figure), []
        if tag == "p" and "skipped" in (a.get("class") or "") and a.get("id"):
            self._capture, self._buf = ("skip", a["id"]), []
        if tag == "div" and "banner" in (a.get("class") or ""):
            self._capture, self._buf = ("banner", ""), []

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if self._capture and tag in ("figcaption", "p", "div"):
            kind, key = self._capture
            text = "".join(self._buf)
            if kind == "caption":
                self.captions[key] = text
            elif kind == "skip":
                self.skipped[key] = text
            else:
                self.banner = text
            self._capture = None

    def handle_data(self, data):
        self.text.append(data)
        if self._capture:
            self._buf.append(data)


def n_in(caption: str) -> int:
    match = re.search(r"n = ([\d,]+)", caption)
    assert match, caption
    return int(match.group(1).replace(",", ""))


def realistic_frame(n: int = N_ROWS, seed: int = 7) -> pd.DataFrame:
    """A final step file as the pipeline writes it: ok rows, a doc2query failure (no question,
    BM25 skipped), a verify rejection, a dedup drop, positives outside the BM25 depth."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        positive = float(rng.uniform(6, 14))
        k = 3
        row = {
            "id": 1000 + i,
            "text": f"Document {i} about cells and mitochondria. " * 5,
            "rare_status": "ok", "rare_error": "", "rare_error_kind": "",
            "question": f"How would a change in pathway {i} alter cells and what would it imply for treatment {i}?",
            "scenario": "A clinician is assessing a case.",
            "rare_doc2query_status": "ok", "rare_doc2query_simulated": True,
            "hard_negatives": [f"negative {j}" for j in range(k)],
            "hard_negatives_ids": [str(2000 + j) for j in range(k)],
            "hard_negatives_scores": sorted((round(positive * float(r), 4) for r in rng.uniform(0.2, 0.94, k)), reverse=True),
            "positive_score": positive,
            "positive_rank": int(rng.choice([1, 1, 1, 1, 2, 3, 5, 14, 250])),
            "rare_hardneg_status": "ok",
            "reasoning": " ".join(["the", "document", "shares", "words", "with", "the", "question"] * int(rng.integers(8, 30))),
            "answer": "Document 2 says so.",
            "rare_distill_attempts": int(rng.choice([1, 1, 1, 2, 3])),
            "rare_distill_status": "ok",
            "rare_distill_simulated": True,
            "rare_verify_samples": int(rng.choice([1, 1, 1, 2, 4, 8])),
            "rare_verify_verdict": "correct",
            "rare_verify_status": "ok",
            "rare_question_dedup_status": "ok",
        }
        rows.append(row)
    # 2 rows failed at Doc2Query: no question, BM25 skipped (rank -1, no lists), no reasoning.
    for i in (3, 17):
        rows[i].update(rare_status="failed", rare_error="doc2query: unparseable reply after 3 attempts",
                       rare_error_kind="content", question=None, scenario=None, rare_doc2query_status="failed",
                       hard_negatives=[], hard_negatives_ids=[], hard_negatives_scores=[], positive_score=np.nan,
                       positive_rank=-1, rare_hardneg_status="skipped", reasoning=None, answer=None,
                       rare_distill_attempts=np.nan, rare_verify_samples=np.nan, rare_verify_verdict=None,
                       rare_distill_status="skipped", rare_verify_status=None, rare_question_dedup_status="skipped")
    # 2 rows whose positive BM25 did not find within its depth.
    for i in (5, 9):
        rows[i].update(positive_rank=-1)
    # 3 rows the verifier rejected after every sample.
    for i in (11, 20, 26):
        rows[i].update(rare_status="failed", rare_error="verify: no sample matched the reference after 8 samples",
                       rare_error_kind="rejected", rare_verify_samples=8, rare_verify_verdict="incorrect",
                       rare_distill_status=None, rare_verify_status="failed")
    # 1 row dropped as a near-duplicate question.
    rows[28].update(rare_status="failed", rare_error="question_dedup: near-duplicate of row 1004",
                    rare_error_kind="filtered", rare_question_dedup_status="filtered")
    return pd.DataFrame(rows)


def make_summary(simulated: bool = True) -> RunSummary:
    def rec(step, failed=0, **extra):
        llm = LLMCounters(requests=30, prompt_tokens=15_000, completion_tokens=2_000) if step != "hardneg" else None
        return StepRecord(summary=StepSummary(step=step, rows_in=N_ROWS, rows_out=N_ROWS, failed=failed,
                                              failures_by_reason={"unparseable reply": failed} if failed else {},
                                              failures_by_kind={"content": failed} if failed else {},
                                              simulated=simulated and step != "hardneg", llm=llm, extra=extra),
                          wall_seconds=1.5)
    records = [rec("doc2query", failed=2), rec("hardneg", short_rows=0), rec("distill")]
    header = {"Input": "data/docs.jsonl (30 documents)", "LLM (teacher)": "built-in simulator (model name `rare-sim-1`)",
              "Note": "<script>alert('x')</script> & co"}
    return build_report(records, simulated=simulated, dataset_rows=24, header=header).run_summary


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return realistic_frame()


@pytest.fixture(scope="module")
def default_page(frame) -> tuple[str, Page]:
    """The page of the realistic frame with a simulated run's summary, rendered once."""
    text = render_html(make_summary(), frame)
    return text, Page(text)


def test_page_parses_with_five_inline_png_charts(default_page):
    text, page = default_page
    assert text.startswith("<!DOCTYPE html>")
    srcs = [img["src"] for img in page.imgs]
    assert len(srcs) == 5 and all(s.startswith(PNG) for s in srcs)
    for src in srcs:  # real PNGs, not placeholders
        assert base64.b64decode(src[len(PNG):], validate=True)[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(page.captions) == {"chart-rank", "chart-ratio", "chart-lengths", "chart-samples", "chart-outcomes"}
    assert not page.skipped
    # Each chart has a table of its figures.
    assert text.count("<details><summary>The figures behind the chart</summary>") == 5


def test_simulated_banner_only_when_simulated(frame, default_page):
    page = default_page[1]
    assert "SIMULATED ANSWERS" in page.banner and "never to train a model" in page.banner
    real = frame.drop(columns=["rare_doc2query_simulated", "rare_distill_simulated"])
    assert Page(render_html(make_summary(simulated=False), real)).banner == ""
    # The rows' own flags raise the banner even when the summary does not.
    assert "SIMULATED" in Page(render_html(make_summary(simulated=False), frame)).banner


def test_captions_give_the_right_n(frame, default_page):
    c = default_page[1].captions
    searched = frame["rare_hardneg_status"] != "skipped"
    assert n_in(c["chart-rank"]) == int(searched.sum()) == 28
    outside = int((frame.loc[searched, "positive_rank"] == -1).sum())
    assert f"{outside:,} (" in c["chart-rank"] and "2 rows not searched" in c["chart-rank"]
    negatives = sum(len(x) for x in frame["hard_negatives_scores"])
    assert n_in(c["chart-ratio"]) == negatives == 84
    ratios = np.concatenate([np.array(s) / p for s, p in zip(frame["hard_negatives_scores"], frame["positive_score"]) if s])
    assert f"median {round(float(np.median(ratios)), 3):g}" in c["chart-ratio"]
    assert "question n = 28" in c["chart-lengths"] and "reasoning n = 28" in c["chart-lengths"]
    assert "whitespace-separated words" in c["chart-lengths"]
    words = frame["reasoning"].dropna().str.split().str.len()
    assert f"reasoning n = 28, median {np.median(words):g}" in c["chart-lengths"]
    assert "rare_verify_samples" in c["chart-samples"] and n_in(c["chart-samples"]) == 28
    assert n_in(c["chart-outcomes"]) == N_ROWS
    assert "doc2query (content) 2" in c["chart-outcomes"] and "verify (rejected) 3" in c["chart-outcomes"]
    assert "question_dedup (filtered) 1" in c["chart-outcomes"]
    assert "correct 25" in c["chart-outcomes"] and "incorrect 3" in c["chart-outcomes"]


def test_token_counter_is_used_and_named(frame):
    def tokens(text: str) -> int:
        return 2 * len(text.split())

    c = Page(render_html(make_summary(), frame, token_counter=tokens)).captions["chart-lengths"]
    words = frame["question"].dropna().str.split().str.len()
    assert "tokens counted by tokens" in c and f"question n = 28, median {np.median(words) * 2:g}" in c
    from rare_core.tokens import token_counter_for  # the offline tiktoken counter (count_many)

    counter, _ = token_counter_for("gpt-4o-mini")
    c = Page(render_html(make_summary(), frame, token_counter=counter)).captions["chart-lengths"]
    assert f"tokens counted by {counter.name}" in c and "question n = 28" in c


def test_frame_without_bm25_columns_skips_those_charts_with_a_note(frame):
    bare = frame.drop(columns=["positive_rank", "positive_score", "hard_negatives_scores", "rare_verify_samples"])
    page = Page(render_html(make_summary(), bare))
    assert len(page.imgs) == 3
    assert set(page.skipped) == {"skip-rank", "skip-ratio"}
    assert "positive_rank" in page.skipped["skip-rank"]
    assert "positive_score" in page.skipped["skip-ratio"] and "hard_negatives_scores" in page.skipped["skip-ratio"]
    # Samples fall back to the teacher's attempts when the verifier's column is absent.
    assert "rare_distill_attempts" in page.captions["chart-samples"]
    # A frame with none of the chart columns: five notes, no image, still a valid page.
    empty = Page(render_html(make_summary(), frame[["id", "text"]]))
    assert not empty.imgs and len(empty.skipped) == 5


def test_no_external_urls_and_text_is_escaped(frame):
    nasty = frame.copy()
    nasty.loc[28, "rare_error_kind"] = "<img src=x onerror=alert(1)>"  # its outcome's label is the markup
    summary = make_summary()
    summary.header["LLM (question_writer)"] = "https://api.example.com/v1 model `gpt-4o-mini`"
    text = render_html(summary, nasty, title="Report <b>&</b>")
    page = Page(text)
    assert page.urls and all(not re.search(r"https?://", u) for u in page.urls)
    assert all(u.startswith("data:") for u in page.urls)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "https://api.example.com/v1" in " ".join(page.text)  # an endpoint is shown as text, never linked
    assert "<title>Report &lt;b&gt;&amp;&lt;/b&gt;" in text
    assert "Content-Security-Policy" in text


def test_steps_table_and_header_facts(default_page):
    summary = make_summary()
    page = default_page[1]
    body = " ".join(page.text)
    for key in summary.header:
        assert key in body
    for line in summary.steps:
        assert line.step in body
    assert "15,000" in body and "30,000" in body  # prompt tokens of a step and the total
    assert "unparseable reply" in body and "Rows in the final dataset" in body


def test_without_matplotlib_the_page_keeps_captions_and_tables(frame, monkeypatch):
    monkeypatch.setattr(report_html, "matplotlib_classes", lambda: None)
    text = render_html(make_summary(), frame)
    page = Page(text)
    assert not page.imgs and len(page.captions) == 5
    assert "matplotlib is not installed" in text
    assert text.count("<details><summary>The figures behind the chart</summary>") == 5


def test_100k_rows_count_in_full_and_the_length_chart_samples_them():  # its time: bench/targets.py
    small = realistic_frame(1000, seed=1)
    big = pd.concat([small] * 100, ignore_index=True)
    page = Page(render_html(make_summary(), big))
    assert len(page.imgs) == 5 and n_in(page.captions["chart-outcomes"]) == 100_000
    assert "random sample of 20,000" in page.captions["chart-lengths"]


def test_import_rare_core_does_not_load_matplotlib():
    import subprocess
    import sys

    code = "import sys, rare_core, rare_core.report_html; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_outcomes_count_failed_rows_by_their_status_and_kind_columns_not_their_message(frame):
    # A message that names another step, and one with no "step:" prefix at all: the chart reads
    # the step whose rare_<step>_status says failed, and rare_error_kind.
    odd = frame.copy()
    odd.loc[4, ["rare_status", "rare_error", "rare_error_kind", "rare_distill_status"]] = [
        "failed", "doc2query: wording that names another step", "request", "failed"]
    odd.loc[6, ["rare_status", "rare_error", "rare_error_kind", "rare_distill_status"]] = [
        "failed", "no colon here", "content", "failed"]
    caption = Page(render_html(make_summary(), odd)).captions["chart-outcomes"]
    assert "distill (request) 1" in caption and "distill (content) 1" in caption
    assert "doc2query (content) 2" in caption  # the two rows Doc2Query failed, and no more
    # The page is drawn from the columns chart_columns names: the kind and every step's status.
    wanted = set(chart_columns())
    assert {"rare_status", "rare_error_kind", "rare_doc2query_status", "rare_distill_status", "rare_verify_status",
            "rare_question_dedup_status", "rare_hardneg_status"} <= wanted
    assert "rare_error" not in wanted  # the message is not read


def _mixed_report(prices=None):
    filtered = StepSummary(step="doc_filter", rows_in=5, rows_out=5, failed=1, failures_by_reason={"too_short": 1},
                           failures_by_kind={"filtered": 1})
    asked = StepSummary(step="distill", rows_in=5, rows_out=5, failed=2, failures_by_reason={"HTTP 503": 2},
                        failures_by_kind={"request": 2}, extra={"deduplicated": 1, "judge_requests": 3},
                        llm=LLMCounters(requests=9, prompt_tokens=1_000_000, completion_tokens=10, batch_requests=4,
                                        refused_429=2))
    return build_report([StepRecord(summary=filtered, cached=True), StepRecord(summary=asked, wall_seconds=2.0)],
                        prices, dataset_rows=3, header={"Input": "x.jsonl"})


def test_markdown_and_html_show_the_same_words_in_the_same_order():
    report = _mixed_report()
    page = render_html(report.run_summary, None)
    advice = [KIND_ADVICE["request"], KIND_ADVICE["filtered"]]  # request first, as report.md lists them
    for text in (report.markdown, page):
        assert text.index(advice[0]) < text.index(advice[1])
        assert "distill: 4 through the Batch API, 2 refused with 429 (and retried)" in text
        assert CACHED_NOTE in text and "Rows in the final dataset" in text
    assert "- distill: deduplicated = 1" in report.markdown and "<td>deduplicated</td>" in page


def test_summary_json_is_the_typed_summary_and_an_earlier_file_still_reads():
    report = _mixed_report({"distill": price_for("gpt-4o-mini")})
    summary = report.run_summary
    assert report.summary == json.loads(summary.model_dump_json())  # what summary.json holds
    assert RunSummary.model_validate_json(summary.model_dump_json()) == summary
    cached, ran = summary.steps
    assert (cached.status, cached.requests) == ("cached", 0) and (ran.requests, ran.batch_requests) == (9, 4)
    assert ran.extra == {"deduplicated": 1, "judge_requests": 3}  # the step's own counters only
    assert summary.totals.failures_by_kind["request"] == 2 and summary.totals.failures_by_kind["filtered"] == 1
    assert summary.currency == "USD" and ran.price.model == "gpt-4o-mini" and summary.totals.cost == ran.cost > 0
    assert _mixed_report(Prices(input_per_million=1.0, currency="EUR")).run_summary.currency == "EUR"
    assert _mixed_report().run_summary.currency is None
    # A summary.json written before the typed summary (no price, currency or kinds totals): `rare export` reads it.
    earlier = {"simulated": False, "builtin_simulator": False, "dataset_rows": 3, "header": {"Input": "x"},
               "steps": [{"step": "distill", "status": "ran", "rows_in": 5, "rows_out": 5, "failed": 0,
                          "skipped_upstream_failed": 0, "failures_by_reason": {}, "failures_by_kind": {},
                          "requests": 9, "retries": 0, "cache_hits": 0, "prompt_tokens": 10, "completion_tokens": 5,
                          "batch_requests": 0, "batch_prompt_tokens": 0, "batch_completion_tokens": 0,
                          "refused_429": 0, "wall_seconds": 1.0, "cost": None, "simulated": False, "extra": {}}],
               "totals": {"requests": 9, "wall_seconds": 1.0, "cost": None}}
    assert RunSummary.model_validate(earlier).steps[0].requests == 9


def test_a_sharded_llm_steps_counters_add_up():
    shard = StepSummary(step="distill", rows_in=2, rows_out=2, llm=LLMCounters(requests=2, prompt_tokens=100,
                                                                               refused_429=1))
    merged = merge_summaries([shard, shard.model_copy(), StepSummary(step="distill", rows_in=1, rows_out=1)])
    assert merged.llm == LLMCounters(requests=4, prompt_tokens=200, refused_429=2)
    assert merge_summaries([StepSummary(step="hardneg"), StepSummary(step="hardneg")]).llm is None
    line = build_report([StepRecord(summary=merged)]).run_summary.steps[0]
    assert (line.requests, line.prompt_tokens, line.refused_429, line.rows_in) == (4, 200, 2, 5)
