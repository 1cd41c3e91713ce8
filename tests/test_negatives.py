"""The hard-negative guards on hand-made rankings (pure Python, no JVM)."""

from __future__ import annotations

import unicodedata

import pytest

from rare_core.retrieval.negatives import normalize_text, select_negatives, text_key

TEXTS = {
    "pos": "The cat sat on the mat.",
    "copy": "  the CAT sat\u00a0on the   mat. ",
    "n1": "A dog sat on a log.",
    "n1dup": "a dog sat on a LOG.",
    "n2": "Birds sit on wires.",
    "n3": "Fish swim in the sea.",
    "n4": "Cows graze in fields.",
}


def pick(ranking, num_neg=3, positive_score=None, **kw):
    ids = [doc for doc, _ in ranking]
    scores = [score for _, score in ranking]
    return select_negatives(ids, scores, num_neg=num_neg, positive_ids={"pos"},
                            positive_key=text_key(TEXTS["pos"]), key_of=lambda d: text_key(TEXTS[d]),
                            positive_score=positive_score, **kw)


def test_normalize_text_casefolds_and_collapses_unicode_whitespace():
    assert normalize_text("  Straße\u00a0 IST\tgroß \n") == "strasse ist gross"
    assert text_key("Straße ist groß") == text_key("STRASSE  ist GROSS")
    assert text_key("a b") != text_key("a  c")


def test_excludes_positive_by_id_and_every_copy_of_its_text():
    sel = pick([("copy", 9.0), ("pos", 8.0), ("n1", 5.0), ("n2", 4.0), ("n3", 3.0)], max_score_ratio=None)
    assert sel.ids == ["n1", "n2", "n3"]
    assert sel.positive_rank == 1  # the copy stands for the positive
    assert not sel.exhausted


def test_no_two_negatives_share_a_normalized_text():
    sel = pick([("n1", 5.0), ("n1dup", 4.9), ("n2", 4.0)], max_score_ratio=None)
    assert sel.ids == ["n1", "n2"]
    assert sel.exhausted


def test_zero_scores_are_dropped():
    sel = pick([("n1", 2.0), ("n2", 0.0), ("n3", -1.0)], max_score_ratio=None)
    assert sel.ids == ["n1"]
    assert sel.scores == [2.0]


def test_skip_top_counts_raw_ranks_including_the_positive():
    ranking = [("pos", 9.0), ("n1", 8.0), ("n2", 7.0), ("n3", 6.0), ("n4", 5.0)]
    assert pick(ranking, skip_top=2, max_score_ratio=None).ids == ["n2", "n3", "n4"]
    assert pick(ranking, skip_top=0, max_score_ratio=None).ids == ["n1", "n2", "n3"]


def test_max_score_ratio_drops_candidates_close_to_the_positive():
    ranking = [("n1", 10.0), ("pos", 8.0), ("n2", 7.61), ("n3", 7.59), ("n4", 1.0)]
    sel = pick(ranking, positive_score=8.0, max_score_ratio=0.95)  # ceiling 7.6
    assert sel.ids == ["n3", "n4"]
    assert sel.positive_rank == 2
    assert sel.exhausted
    assert pick(ranking, positive_score=8.0, max_score_ratio=None).ids == ["n1", "n2", "n3"]
    assert pick(ranking, positive_score=None, max_score_ratio=0.95).ids == ["n1", "n2", "n3"]


def test_a_positive_scoring_zero_leaves_no_safe_negative():
    sel = pick([("n1", 3.0), ("n2", 2.0)], positive_score=0.0, max_score_ratio=0.95)
    assert sel.ids == []
    assert sel.positive_rank == -1


def test_returns_exactly_num_neg_and_keeps_looking_for_the_positive_rank():
    sel = pick([("n1", 5.0), ("n2", 4.0), ("n3", 3.0), ("pos", 2.0)], num_neg=2, max_score_ratio=None)
    assert (sel.ids, sel.scores, sel.positive_rank, sel.exhausted) == (["n1", "n2"], [5.0, 4.0], 4, False)


@pytest.mark.parametrize("num_neg", [1, 2, 5])
def test_exhausted_when_the_ranking_is_too_short(num_neg):
    sel = pick([("n1", 5.0)], num_neg=num_neg, max_score_ratio=None)
    assert sel.ids == ["n1"]
    assert sel.exhausted is (num_neg > 1)


NFC = "Crème brûlée at the Café Zürich costs 12 euros."


@pytest.mark.parametrize("copy", [
    unicodedata.normalize("NFD", NFC),                                  # decomposed accents
    "Ｃｒèｍｅ ｂｒûｌéｅ at the Café Zürich costs １２ euros．",         # full-width forms
    "Crème brû\u200blée at the Ca\u200cfé Zü\u200drich costs 12\u2060 euros.\ufeff",  # zero-width characters
    "Crè\u00adme brûlée at the Café Zürich costs 12 eu\u00adros.",      # soft hyphens
    "\u200eCrème brûlée at the Café Zürich costs 12 euros.\u200f",      # direction marks
    "CRÈME BRÛLÉE  at the CAFÉ ZÜRICH costs 12 EUROS.",
])
def test_normalize_text_folds_unicode_forms_and_invisible_characters(copy):
    assert copy != NFC
    assert normalize_text(copy) == normalize_text(NFC) == "crème brûlée at the café zürich costs 12 euros."
    assert text_key(copy) == text_key(NFC)


def test_normalize_text_meets_after_casefolding():
    assert normalize_text("\u0390") == normalize_text("\u03aa\u0301")  # ΐ and Ϊ́: NFKC again after casefold
    assert normalize_text("ﬁle") == normalize_text("FILE")  # the ligature
    assert normalize_text("a\u200b b") == "a b" and normalize_text("co\u00adop") == "coop"
    assert normalize_text("Straße") != normalize_text("Strafe")


def test_unicode_variants_of_the_positive_are_never_negatives():
    texts = {"pos": NFC, "nfd": unicodedata.normalize("NFD", NFC), "wide": NFC.replace("12", "１２"),
             "zw": NFC.replace("brûlée", "brû\u200blée"), "shy": NFC.replace("Crème", "Crè\u00adme"),
             "n1": "A dog sat on a log.", "n2": "Birds sit on wires.", "n3": "Fish swim in the sea."}
    ranking = [("nfd", 9.0), ("wide", 8.5), ("pos", 8.0), ("zw", 7.5), ("shy", 7.0), ("n1", 5.0), ("n2", 4.0),
               ("n3", 3.0)]
    sel = select_negatives([d for d, _ in ranking], [s for _, s in ranking], num_neg=3, positive_ids={"pos"},
                           positive_key=text_key(NFC), key_of=lambda d: text_key(texts[d]), max_score_ratio=None)
    assert sel.ids == ["n1", "n2", "n3"]
    assert sel.positive_rank == 1  # the NFD copy stands for the positive
