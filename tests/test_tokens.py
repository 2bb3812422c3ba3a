import pytest

from filters.tokens import TokenAccounting
from keye.chat import count_tokens, render_chat
from keye.tokenizer import KEYE_SPECIAL_TOKENS, load_tokenizer, save_hf_tokenizer
from schemas.config import load_config
from schemas.input import normalize_row
from schemas.reasons import Reason
from schemas.rejected import Rejected
from tests.conftest import row_context as ctx

TEXTS = [
    "Hello world",
    "中文测试，混合 English 与数字 1234567890",
    "emoji 😀🎉, tabs\t\tand   runs of spaces\n\n\n",
    "def f(x):\n    return x ** 2  # code keeps its indentation",
    "e\u0301 (decomposed) vs é",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What's this?<|im_end|>\n<think>\nhmm\n</think>",
]


def test_known_ids():
    tok = load_tokenizer()
    assert tok.encode("Hello world") == [9707, 1879]  # as Qwen's tokenizer encodes it
    for text, tid in KEYE_SPECIAL_TOKENS.items():
        assert tok.encode(text) == [tid]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    return load_tokenizer(save_hf_tokenizer(str(tmp_path_factory.mktemp("hf_keye"))))


@pytest.mark.parametrize("text", TEXTS)
def test_builtin_matches_independent_hf_bpe(hf_tokenizer, text):
    assert load_tokenizer().encode(text) == hf_tokenizer.encode(text)


def test_render_matches_keye_layout():
    s = normalize_row({"image": "a.png", "question": "What colour?", "answer": "Red.",
                       "reasoning": "The circle is red."}, ctx())
    text = render_chat(s.messages, s.media, "You are a helpful assistant.")
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\nThe circle is red.\n</think>\n\nRed.<|im_end|>\n")


def test_count_tokens_excludes_pads_and_adds_visual():
    tok = load_tokenizer()
    s = normalize_row({"images": ["a.png", "b.png"], "question": "Same?", "answer": "No."}, ctx())
    s.media[0].visual_tokens, s.media[1].visual_tokens = 64, 100
    text_tokens, visual = count_tokens(s.messages, s.media, tok, None)
    rendered = render_chat(s.messages, s.media, None)
    assert visual == 164
    assert text_tokens == len(tok.encode(rendered)) - 2
    # by hand: im_start user \n vs ip ve vs ip ve Same ? im_end \n im_start assistant \n No . im_end \n
    assert text_tokens == len(tok.encode("<|im_start|>user\n")) + 4 + len(tok.encode("Same?<|im_end|>\n")) \
        + len(tok.encode("<|im_start|>assistant\nNo.<|im_end|>\n"))


def test_token_step_bounds_sequence_length():
    cfg = load_config(None, ["tokens.max_total_tokens=20"])
    step = TokenAccounting(cfg)
    short = normalize_row({"text": "short"}, ctx())
    long = normalize_row({"text": "word " * 50}, ctx())
    assert step(short).text_tokens > 0
    out = step(long)
    assert isinstance(out, Rejected) and out.reason == Reason.TOO_MANY_TOKENS.value


def test_keye_1_5_video_layout_counts_frame_text():
    from schemas.sample import MediaItem

    tok = load_tokenizer()
    s = normalize_row({"video": "v.mp4", "question": "What moves?", "answer": "A ball."}, ctx())
    s.media[0] = MediaItem(kind="video", uri="v.mp4", frame_timestamps=[0.0, 0.5, 12.25],
                           frame_types=[0, 1, 0], visual_tokens=300)
    rendered = render_chat(s.messages, s.media, None, "keye_1_5")
    assert ("<|vision_start|><|frame|>0.0<|video_pad|><|frame|>0.5<|fast_start|><|video_pad|><|fast_end|>"
            "<|frame|>12.2<|video_pad|><|vision_end|>") in rendered      # format(ts, ".1f"), as the processor
    text_15, visual = count_tokens(s.messages, s.media, tok, None, "keye_1_5")
    text_preview, _ = count_tokens(s.messages, s.media, tok, None, "keye_preview")
    assert visual == 300
    assert text_15 == len(tok.encode(rendered)) - 3           # one pad per frame
    # per frame: <|frame|> + digits; fast frames add two markers; the preview has none of it
    frame_text = sum(1 + len(tok.encode(f"{t:.1f}")) for t in (0.0, 0.5, 12.25)) + 2
    assert text_15 - text_preview == frame_text
    assert tok.encode("<|frame|>") == [151675]
