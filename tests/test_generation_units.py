"""The mixture's Beam-free checks: formats and their validator, the answer verifier, path selection,
the repetition gate, and exact token accounting of every mode's rows."""
import pytest

from keye.chat import count_tokens, render_chat
from keye.tokenizer import load_tokenizer
from mixture.formats import (analysis_block, chosen_mode, closed_form, format_error, mode_sentence, thinking,
                             think_with_image_parts, with_suffix)
from mixture.paths import select_path, split_steps
from mixture.repetition import check_text, repetition_stats
from mixture.verify import AnswerVerifier, extract_answer, parse_number
from schemas.config import RepetitionConfig, VerifyConfig
from schemas.sample import ContentPart, MediaItem, Message, Sample

VERIFY = VerifyConfig(numeric_rel_tol=0.01, numeric_abs_tol=1e-6, judge=False, judge_prompt="judge_v1")
REPETITION = RepetitionConfig(ngram=4, max_dup_ngram_ratio=0.35, max_compression_ratio=4.0, min_words=40)


def row(mode, answer_parts, question="How many shapes are in the image?", media=None, suffix_mode=None):
    media = media if media is not None else [MediaItem("image", "/x.png", width=56, height=56, visual_tokens=4)]
    q = with_suffix(question, suffix_mode or mode, None)
    parts = answer_parts if isinstance(answer_parts, list) else [ContentPart("text", text=answer_parts)]
    return Sample("r@x", "s", "s:1", "cold_start", mode=mode, media=media, messages=[
        Message("user", [ContentPart("image", media_index=0), ContentPart("text", text=q)]),
        Message("assistant", parts)])


def agentic_row():
    media = [MediaItem("image", "/x.png", width=56, height=56, visual_tokens=4),
             MediaItem("image", "sandbox://r/1.png", width=112, height=56, visual_tokens=8)]
    parts = think_with_image_parts("I will crop the shapes.", "from PIL import Image\nImage.open('/input/image.png')",
                                   1, "The crop shows three shapes.", "3.", "3")
    return row("agentic_think", parts, media=media)


GOOD = {
    "no_think": lambda: row("no_think", "3."),
    "think": lambda: row("think", thinking("I count a circle.\nThen a square.", "3.", "3")),
    "auto_think/think": lambda: row("auto_think", analysis_block("It needs counting. " + mode_sentence("think"))
                                    + thinking("I count.", "3.", "3")),
    "auto_think/no_think": lambda: row("auto_think", analysis_block("One fact. " + mode_sentence("no_think")) + "3."),
    "agentic_think": agentic_row,
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_mode_has_a_valid_example(name):
    assert format_error(GOOD[name](), None) is None


BAD = [
    ("no_think", lambda: row("no_think", "<think>x</think>3."), "plain answer holds"),
    ("no_think suffix", lambda: row("no_think", "3.", suffix_mode="think"), "does not end in /no_think"),
    ("think no answer", lambda: row("think", "<think>\nI count.\n</think>\n3."), "expected <think>"),
    ("think twice", lambda: row("think", thinking("a <think> b", "3.", "3")), "<think> appears 2"),
    ("think analysis", lambda: row("think", thinking("x <analysis>y</analysis>", "3.", "3")), "<analysis>"),
    ("boxed open", lambda: row("think", "<think>\nx\n</think>\n<answer>\n\\boxed{3\n</answer>"), "unbalanced"),
    ("auto no choice", lambda: row("auto_think", analysis_block("It is hard.") + "3."), "chooses neither"),
    ("auto wrong branch", lambda: row("auto_think", analysis_block(mode_sentence("think")) + "3."), "expected <think>"),
    ("auto suffix", lambda: row("auto_think", analysis_block(mode_sentence("no_think")) + "3.", suffix_mode="think"),
     "ends in /think"),
    ("agentic no code", lambda: row("agentic_think", thinking("no code here", "3.", "3")),
     "<sandbox_output> appears 0"),
]


@pytest.mark.parametrize("name,make,why", BAD, ids=[b[0] for b in BAD])
def test_validator_names_what_is_wrong(name, make, why):
    err = format_error(make(), None)
    assert err is not None and why in err


def test_agentic_image_must_be_produced_not_shown():
    s = agentic_row()
    s.messages[-1].content[1].media_index = 0           # the user's own image inside <sandbox_output>
    assert "also shown" in format_error(s, None)


def test_auto_think_suffix_is_configurable():
    s = row("auto_think", analysis_block(mode_sentence("no_think")) + "3.")
    s.messages[0].content[1].text = with_suffix("How many?", "auto_think", "/auto_think")
    assert s.messages[0].content[1].text.endswith(" /auto_think")
    assert format_error(s, "/auto_think") is None
    assert "does not end in /auto_think" in format_error(row("auto_think", analysis_block(
        mode_sentence("no_think")) + "3."), "/auto_think")


def test_mode_choice_reads_the_last_sentence_only():
    assert chosen_mode("Simple, no /think needed at all. Therefore /no_think mode is more appropriate.") == "no_think"
    assert chosen_mode("Therefore /think mode is more appropriate.") == "think"
    assert chosen_mode("Use /think or /no_think.") is None


def test_closed_form_answers_are_boxed():
    assert closed_form("3.", 4) == "3" and closed_form("(b)", 4) == "B"
    assert closed_form("To the left.", 4) == "To the left"
    assert closed_form("The red circle moves across the frame from left to right quickly.", 4) is None
    assert thinking("r", "3.", "3").endswith("3. The final answer is \\boxed{3}.\n</answer>")


def test_token_count_is_exact_for_every_mode():
    """text_tokens + visual_tokens == the tokens of the stream with each pad expanded to its item's
    visual tokens (what the processor feeds the model), for every mode, the agentic image included."""
    tok = load_tokenizer("builtin:qwen3")
    for name, make in GOOD.items():
        s = make()
        text, visual = count_tokens(s.messages, s.media, tok, "You are a helpful assistant.")
        rendered = render_chat(s.messages, s.media, "You are a helpful assistant.")
        chunks = rendered.split("<|image_pad|>")
        assert len(chunks) - 1 == len(s.media), name
        expanded = chunks[0] + "".join("<|image_pad|>" * m.visual_tokens + c for m, c in zip(s.media, chunks[1:]))
        assert tok.count(expanded) == text + visual, name
    agentic = render_chat(agentic_row().messages, agentic_row().media, None)
    assert "<sandbox_output><|vision_start|><|image_pad|><|vision_end|></sandbox_output>" in agentic


# --- verifier ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("generated,reference,ok,method", [
    ("<think>x</think><answer>3</answer>", "3.", True, "numeric"),
    ("The final answer is \\boxed{three}", "3.", True, "numeric"),
    ("\\boxed{3.004}", "3", True, "numeric"),
    ("\\boxed{3.1}", "3", False, "numeric"),
    ("75%", "0.75", True, "numeric"),
    ("3/4", "0.75", True, "numeric"),
    ("(B) the square", "B", True, "choice"),
    ("Answer: C", "(B)", False, "choice"),
    ("<answer>to the LEFT</answer>", "To the left.", True, "exact"),
    ("Grey.", "Gray", True, "exact"),
    ("Red.", "Green.", False, "exact"),
    ("", "Green.", False, "none"),
])
def test_verifier_rules(generated, reference, ok, method):
    v = AnswerVerifier(VERIFY).verify(generated, reference)
    assert (v.correct, v.method) == (ok, method)


def test_judge_only_for_what_no_rule_settles():
    calls = []
    judge = lambda q, r, c: calls.append((r, c)) or True
    cfg = VerifyConfig(**{**VERIFY.__dict__, "judge": True})
    v = AnswerVerifier(cfg, judge)
    assert v.verify("a crimson disc", "A red circle.", "What is it?").method == "judge" and calls
    assert v.verify("4", "3").correct is False and len(calls) == 1, "numbers never go to the judge"
    assert not AnswerVerifier(VERIFY, judge).verify("a crimson disc", "A red circle.").correct, "judge off"


def test_answer_extraction_follows_keye_eval():
    assert extract_answer("<analysis>a</analysis><think>\\boxed{1}</think><answer>so \\boxed{2}</answer>") == "2"
    assert extract_answer("blah\nAnswer: Blue") == "Blue"
    assert parse_number("3 and 4") is None and parse_number("1,200") == 1200.0


# --- paths -------------------------------------------------------------------------------------------
def test_the_most_common_path_wins():
    a = "I list the shapes from left to right.\nThere is a red circle.\nThere is a blue square.\nThat makes two."
    b = "I list the shapes from left to right.\nThere is a red circle.\nThere is a blue square.\nThat makes two."
    odd = "Hmm, maybe I should count the corners of everything.\nThere is a red circle.\nSo two shapes are there."
    detour = a.replace("\nThere is a red", "\nLet me look over the whole picture once more.\nThere is a red")
    choice = select_path([odd, detour, a, b])
    assert choice.index == 2 and choice.score == pytest.approx((3 + 4 + 3 + 3) / 16)
    assert choice.scores[0] < choice.scores[1] < choice.score
    assert split_steps("One. Two!\nThree?") == ["One.", "Two!", "Three?"]


def test_embedding_grouping_merges_paraphrases():
    import numpy as np

    vocab = {"circle": 0, "square": 1, "count": 2}
    embed = lambda steps: np.array([[s.lower().count(w) for w in vocab] for s in steps], dtype=float) + 1e-3
    paths = ["I see a circle here.\nI count them all now.", "A circle is drawn there.\nNow I count the shapes.",
             "A square is drawn here.\nThen I count again."]
    exact = select_path(paths)
    merged = select_path(paths, embed=embed, similarity=0.95)
    assert exact.scores == (1 / 3,) * 3, "no two steps are equal as text"
    assert merged.scores == pytest.approx((5 / 6, 5 / 6, 4 / 6)) and merged.index == 0, "ties: the shorter path"


# --- repetition -----------------------------------------------------------------------------------
def test_repetition_stats_then_verdict():
    prose = ("I go through the picture from left to right and list each shape that I can see clearly. There is a "
             "red circle near the top edge, then a blue square in the middle, and finally a green triangle close "
             "to the right border of the frame. Nothing else is drawn on the pale background, so three in total.")
    stats, verdict = check_text(prose, REPETITION)
    assert verdict is None and stats["gen_dup_ngram_ratio"] < 0.1
    loop = "<think>\n" + " ".join(["There is a red circle near the top edge of the picture."] * 30)
    stats, verdict = check_text(loop, REPETITION)
    assert verdict is not None and stats["gen_unclosed_tags"] == 1
    stats, verdict = check_text(loop + "\n</think>", REPETITION)
    assert verdict is not None and "repeated 4-gram" in verdict[1] and stats["gen_compression_ratio"] > 4
    assert repetition_stats("```python\nx = 1\n", 4)["gen_unclosed_tags"] == 1
    assert check_text("short \\boxed{3", REPETITION)[1] is not None


def test_generations_are_parsed_leniently():
    from mixture.generate import parse_code, parse_reasoning

    p = parse_reasoning("<think>\nstep one.\nstep two.\n</think>\n<answer>Red.</answer>")
    assert (p.reasoning, p.answer) == ("step one.\nstep two.", "Red.")
    p = parse_reasoning("<think>\nstep one.\n</think>\nThe answer is \\boxed{3}.")
    assert (p.reasoning, p.answer) == ("step one.", "3")
    p = parse_reasoning("<think>\nstep one, and then the model ran out of tokens")
    assert p.answer == ""
    assert parse_code("<think>I crop.\n```python\nx = 1\n```</think>") == ("I crop.", "x = 1")
    assert parse_code("No code today.") is None and parse_code("```python\n\n```") is None


def test_generation_prompts_are_pinned_and_the_reasoner_reads_each():
    import os

    from captioners.prompts import released
    from mixture.generate import PROMPT_DIR, prompt
    from mixture.reasoner import prompt_templates, recognise

    pinned = released(PROMPT_DIR)
    files = sorted(f for f in os.listdir(PROMPT_DIR) if f.endswith(".txt"))
    assert files == sorted(pinned)
    values = {"question": "How many shapes are in the image?", "num_frames": 8, "mode": "think",
              "image_name": "image.png", "code": "from PIL import Image\nprint(1)", "reference": "3.",
              "candidate": "three"}
    templates = prompt_templates()
    for f in files:
        p = prompt(f[:-4])
        assert p.sha256 == pinned[f], f"{f} changed; give the new text a new id"
        text = p.render(**values)
        pid, got = recognise(text, templates)
        assert pid == f[:-4] and all(got[k] == str(values[k]) for k in got), f
