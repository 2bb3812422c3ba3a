from filters.text import TextFilter, empty_turn, normalize_text, text_stats, text_verdict
from schemas.config import load_config
from schemas.input import normalize_row
from schemas.reasons import Reason
from schemas.rejected import Rejected
from schemas.sample import Sample
from tests.conftest import row_context as ctx


def test_normalize_text():
    cfg = load_config().text
    assert normalize_text("  e\u0301 \r\nline\rtwo\x00\x07\ufeff ", cfg) == "é \nline\ntwo"
    assert normalize_text("a    b", cfg) == "a    b"      # layout kept by default
    assert normalize_text("a    b", load_config(None, ["text.collapse_spaces=true"]).text) == "a b"
    assert normalize_text("\ufb01", load_config(None, ["text.unicode_form=NFKC"]).text) == "fi"
    assert normalize_text("\u200b\u3000 a\u2060\x85", cfg) == "a"   # invisible and Unicode spaces at the edges


def test_normalize_text_long_inner_whitespace():
    """A million-character run of spaces inside a field (validation allows it) stays one linear pass."""
    cfg = load_config().text
    text = "a" + " \n" * 500_000 + "b"
    assert normalize_text(" " + text + "\u200b", cfg) == text


def test_stats_and_repetition():
    st = text_stats(["one two three four five six"], 5)
    assert st["text_words"] == 6 and st["text_dup_ngram_ratio"] == 0.0
    rep = text_stats(["the cat sat on the mat. " * 20], 5)
    assert rep["text_dup_ngram_ratio"] > 0.8
    lines = text_stats(["same line\nsame line\nsame line\nother"], 5)
    assert lines["text_dup_line_ratio"] == 0.5


def test_verdicts():
    cfg = load_config(None, ["text.min_chars=5", "text.max_chars=50"]).text
    ok = text_stats(["hello there"], 5)
    assert text_verdict(ok, cfg) is None
    assert text_verdict(text_stats(["hey"], 5), cfg)[0] == Reason.TEXT_TOO_SHORT
    assert text_verdict(text_stats(["x" * 51], 5), cfg)[0] == Reason.TEXT_TOO_LONG
    assert text_verdict(text_stats([""], 5), cfg)[0] == Reason.EMPTY_TEXT
    assert text_verdict(ok, cfg, empty="messages[1] (assistant) has no text")[0] == Reason.EMPTY_TEXT
    rep_cfg = load_config(None, ["text.min_words_for_repetition=10"]).text
    assert text_verdict(text_stats(["spam spam spam. " * 30], 5), rep_cfg)[0] == Reason.REPETITIVE_TEXT


def test_step_stores_scores_even_when_rejecting():
    step = TextFilter(load_config())
    kept = step(normalize_row({"image": "a.png", "caption": "  a red\x00 circle \r\n"}, ctx()))
    assert isinstance(kept, Sample)
    assert kept.messages[1].content[0].text == "a red circle"
    assert kept.scores["text_chars"] == len("a red circle") and kept.scores["text_changed_by_normalisation"] == 1.0
    rejected = step(normalize_row({"image": "a.png", "caption": "   "}, ctx()))
    assert isinstance(rejected, Rejected) and rejected.reason == "empty_text"
    assert b'"text_chars":0.0' in rejected.payload   # the stats travel with the rejected row


def test_empty_turn_rules():
    s = normalize_row({"image": "a.png", "caption": "x"}, ctx())
    assert empty_turn(s) is None            # a user turn holding only media is fine
    s.messages[1].content = []
    assert "assistant" in empty_turn(s)
