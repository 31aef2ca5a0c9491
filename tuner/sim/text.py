"""Deterministic stand-in tokenizer and detokenizer: one token per whitespace-separated word.

Good enough for a server whose outputs nobody reads: prompt lengths are predictable
(``len(text.split())``), ``input_ids`` may be sent directly as SGLang allows, and output
text is made of real words so clients that split or count words behave.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have "
    "an had they you were their one all we can her has there been if more when will would who so no "
    "time other into only new some could these two may first then do any like my now over such our man "
    "me even most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see men "
    "work long get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three model server token batch cache "
    "memory graph kernel latency throughput request stream prefill decode"
)
_WORDS = tuple(_WORD_TEXT.split())

EOS_TOKEN = 151645  # <|im_end|> of the Qwen tokenizer, reported as the matched stop token


def tokenize(text: str, vocab: int) -> list[int]:
    """One id per word: ``crc32(word) % vocab`` (never the EOS id)."""
    return [(zlib.crc32(w.encode()) % (vocab - 1)) for w in text.split()]


def detokenize(ids: Sequence[int]) -> str:
    """Text for output ids: a word each, space-separated (cumulative text grows monotonically)."""
    return "".join(" " + _WORDS[i % len(_WORDS)] for i in ids)


NEWLINE = "<nl>"  # the template's newlines, one token each as in a BPE vocabulary ("Ċ")


def chat_prompt(messages: object) -> str:
    """A ChatML rendering of OpenAI ``messages`` (Qwen's template, one word per marker and newline).

    ``<|im_start|>role\n{content}<|im_end|>\n`` per message and ``<|im_start|>assistant\n`` to
    generate: a single user message of N words is N + 8 tokens, as with the real tokenizers.
    """
    parts: list[str] = []
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content", "")
            if isinstance(content, list):  # [{"type": "text", "text": ...}]
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            parts.append(f"<|im_start|> {m.get('role', 'user')} {NEWLINE} {content} <|im_end|> {NEWLINE}")
    parts.append(f"<|im_start|> assistant {NEWLINE}")
    return " ".join(parts)
