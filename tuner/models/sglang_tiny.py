"""Write a tiny random-weight Llama that the REAL SGLang server loads on the CPU (docs/sglang-cpu.md).

No weights or tokenizers can be downloaded here, so everything is made locally and deterministically:

* a byte-level BPE tokenizer TRAINED with ``tokenizers`` on local text: many seeded sentences of the load
  generator's prompt words (``tuner.loadgen.prompts.WORDS``), ChatML-formatted samples and seeded
  pseudo-words that fill the vocabulary to exactly ``vocab_size`` tokens. Every prompt word is one token
  both at the start of a text and after a space (checked when writing), so a synthetic prompt of N words
  (``make_prompts``) is exactly N tokens: :func:`prompt_token_counts` gives the exact counts;
* a ChatML chat template (``<|im_start|>role\\n...<|im_end|>\\n``);
* a ``LlamaForCausalLM`` with random weights (default: 4 layers, hidden 256, 4 heads / 2 KV heads,
  vocab 8192, float32, ~7 M parameters), saved with ``save_pretrained``.

No token is an end-of-sequence token (config, generation config and tokenizer all have none), so every
request produces exactly ``max_new_tokens`` tokens even without ``ignore_eos``.

    python -m tuner.models.sglang_tiny OUT_DIR         # with the SGLang CPU venv's python
    scripts/setup-sglang-cpu-model.sh                  # the same, cached under $TUNER_CACHE/models

Needs torch, transformers (5.x) and tokenizers (the venv of scripts/setup-sglang-cpu.sh has them); none
is imported until used, so this module imports anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuner.core.cli import run_cli
from tuner.core.errors import ConfigError
from tuner.loadgen.prompts import WORDS, Prompt
from tuner.models.hf_random import HfLlamaParams

if TYPE_CHECKING:
    from tokenizers import Tokenizer

PAD = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIALS = (PAD, IM_START, IM_END)
ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
FORMAT = "sglang-tiny-1"  # bump when the written files change, so cached copies are rewritten


@dataclass(frozen=True)
class SglangTinyParams(HfLlamaParams):
    """Shape of the model (the checks and ``n_params`` are :class:`HfLlamaParams`'s)."""

    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 8192
    dtype: Literal["bfloat16", "float16", "float32"] = "float32"

    @property
    def min_vocab_size(self) -> int:
        return 2048

    @property
    def vocabulary_holds(self) -> str:
        return "bytes, specials and the prompt words"


def training_text(seed: int = 0) -> Iterator[str]:
    """The tokenizer's training corpus, generated locally and deterministically (one string a line).

    Prompt-word sentences come first and often, so every prompt word becomes one token; pseudo-words
    built from syllables give BPE enough distinct pairs to fill the vocabulary.
    """
    rng = random.Random(seed)
    words = list(WORDS)
    # every word both first in a line and after a space, many times
    for _ in range(40):
        rng.shuffle(words)
        for w in words:
            yield w + " " + " ".join(rng.choices(WORDS, k=rng.randint(4, 24)))
    for _ in range(4000):
        text = " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))
        yield text[0].upper() + text[1:] + rng.choice((".", "?", "!", ",", ":"))
    # ChatML-formatted samples, so role names and the layout are single tokens too
    for _ in range(500):
        role = rng.choice(ROLES)
        yield f"{IM_START}{role}\n{' '.join(rng.choices(WORDS, k=rng.randint(3, 20)))}{IM_END}\n"
    onsets = [*"bcdfghjklmnprstvwz", "br", "ch", "cl", "dr", "fl", "gr", "pl", "qu", "sh", "st", "th", "tr"]
    nuclei = [*"aeiou", "ai", "au", "ea", "ee", "ie", "oa", "oo", "ou", "y"]
    codas = ["", "", "", *"lmnrstxk", "nd", "ng", "nt", "rt", "st", "ck"]
    lexicon = sorted(
        {
            "".join(
                rng.choice(onsets) + rng.choice(nuclei) + rng.choice(codas) for _ in range(rng.randint(1, 4))
            )
            for _ in range(30000)
        }
    )
    rng.shuffle(lexicon)
    weights = [1.0 / (rank + 10) for rank in range(len(lexicon))]  # Zipf-like
    for _ in range(12000):
        parts = rng.choices(lexicon, weights=weights, k=rng.randint(6, 30))
        if rng.random() < 0.3:
            parts.insert(rng.randrange(len(parts)), str(rng.randint(0, 99999)))
        yield " ".join(parts) + rng.choice((".", ",", ";", "\n", ""))


def train_tokenizer(vocab_size: int, seed: int = 0) -> Tokenizer:
    """Train the byte-level BPE tokenizer on :func:`training_text`; exactly ``vocab_size`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(seed), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ConfigError(
            f"the tokenizer trained to {tok.get_vocab_size()} tokens, not {vocab_size}: the local corpus "
            "is too small for this vocab_size"
        )
    check_single_token_words(tok)
    return tok


def check_single_token_words(tok: Tokenizer) -> None:
    """Raise unless every prompt word is one token, first in a text and after a space (and each role name
    one token, as ChatML writes it)."""
    texts = [*ROLES, *(t for w in sorted(set(WORDS)) for t in (w, " " + w))]
    bad = [repr(t) for t in texts if len(tok.encode(t, add_special_tokens=False).ids) != 1]
    if bad:
        raise ConfigError(f"these prompt words are not single tokens: {', '.join(bad[:10])}")


def write(out: Path, p: SglangTinyParams) -> Path:
    """Write config, random weights (safetensors), tokenizer and generation config to ``out``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = train_tokenizer(p.vocab_size, p.seed)
    pad_id = tok.token_to_id(PAD)
    torch.manual_seed(p.seed)
    config = LlamaConfig(
        **p.shape(),
        bos_token_id=None,
        eos_token_id=None,  # nothing stops generation early: exactly max_new_tokens
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )
    config.dtype = getattr(torch, p.dtype)  # recorded in config.json, so `--dtype auto` loads it as written
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(config.dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=None, pad_token_id=pad_id, do_sample=False
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=p.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    meta = {"format": FORMAT, **asdict(p), "n_params": p.n_params, "prompt_words_single_token": True}
    (out / "tuner-model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    """The model's tokenizer (``tokenizer.json``) with the ``tokenizers`` library alone (fast to load)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))


def _tokenizer(tok: Tokenizer | str | Path) -> Tokenizer:
    return load_tokenizer(tok) if isinstance(tok, str | Path) else tok


def token_count(tok: Tokenizer | str | Path, text: str) -> int:
    """Tokens SGLang counts for ``text`` sent as a prompt (``/generate``, ``/v1/completions``).

    The tokenizer adds no BOS/EOS, so this is the plain encoding's length.
    """
    return len(_tokenizer(tok).encode(text, add_special_tokens=False).ids)


def chat_text(messages: Iterable[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The ChatML text the chat template renders (the same string, built without jinja)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def chat_token_count(tok: Tokenizer | str | Path, messages: Iterable[dict[str, str]]) -> int:
    """Prompt tokens of a ``/v1/chat/completions`` request: one user message of N prompt words is N + 8."""
    return token_count(tok, chat_text(messages))


def prompt_token_counts(tok: Tokenizer | str | Path, prompts: Iterable[Prompt]) -> list[int]:
    """Exact prompt token counts of the load generator's prompts (``tuner.loadgen.make_prompts``).

    Text prompts are encoded with the model's tokenizer; a synthetic prompt of N prompt words is exactly
    N tokens on this tokenizer. Token-id prompts count their ids.
    """
    t = _tokenizer(tok)
    return [len(p.input_ids) if p.input_ids is not None else token_count(t, p.text or "") for p in prompts]


def _files_digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(out.iterdir()):
        if f.is_file() and f.name != "tuner-model.json":
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    """CLI: write the model directory; print its path, size and content digest."""
    ap = argparse.ArgumentParser(
        prog="python -m tuner.models.sglang_tiny", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("out", type=Path, help="directory to write")
    defaults: dict[str, Any] = asdict(SglangTinyParams())
    for name, value in defaults.items():
        if name == "dtype":
            ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
        else:
            ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "out" and v is not None}

    def build() -> int:
        params = SglangTinyParams(**{**defaults, **overrides})
        write(args.out, params)
        size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
        print(
            f"{args.out}\t{params.n_params / 1e6:.1f}M params\t{size / 1e6:.1f} MB\tdigest {_files_digest(args.out)}"
        )
        return 0

    return run_cli("tuner.models.sglang_tiny", build)


if __name__ == "__main__":
    sys.exit(main())
