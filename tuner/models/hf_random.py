"""Write a random-weight Hugging Face Llama model directory for ``transformers serve``.

No weights can be downloaded on the machines here, so the model is built by transformers itself
(``LlamaConfig`` -> ``LlamaForCausalLM``, in bf16 on CUDA when there is a GPU) and saved with an
offline tokenizer: a ``tokenizers`` WordLevel vocabulary whose first words are the load generator's
prompt words (``tuner.loadgen.prompts.WORDS``), so a synthetic prompt of N words is exactly N tokens.
``generation_config.eos_token_id`` is None, so every request produces exactly ``max_tokens`` tokens.

    python -m tuner.models.hf_random /tmp/llama-1b --preset 1b          # on the GPU machine
    python -m tuner.models.hf_random /tmp/llama-tiny --preset tiny --device cpu --dtype float32

Needs torch, transformers (5.x) and tokenizers; none of them is imported until :func:`write`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tuner.core.cli import run_cli
from tuner.core.errors import ConfigError
from tuner.loadgen.prompts import WORDS

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>")
UNK, BOS, EOS, PAD = 0, 1, 2, 3
ROLES = ("system", "user", "assistant")
# ChatML with spaces around markers: the WhitespaceSplit pre-tokenizer then sees whole words.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


@dataclass(frozen=True)
class HfLlamaParams:
    """Shape of the model; ``n_params`` tells the size before torch is imported."""

    hidden_size: int = 2048
    intermediate_size: int = 5504
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    vocab_size: int = 32000
    max_position_embeddings: int = 4096
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.vocab_size < self.min_vocab_size:
            raise ConfigError(f"vocab_size must be at least {self.min_vocab_size} ({self.vocabulary_holds})")

    def shape(self) -> dict[str, int]:
        """The ``LlamaConfig`` arguments that give the model its shape."""
        names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        more = ("num_key_value_heads", "vocab_size", "max_position_embeddings")
        return {n: getattr(self, n) for n in (*names, *more)}

    @property
    def min_vocab_size(self) -> int:
        return len(SPECIALS) + len(ROLES) + len(set(WORDS))

    @property
    def vocabulary_holds(self) -> str:
        return "specials + roles + prompt words"

    @property
    def n_params(self) -> int:
        """Parameters with untied input and output embeddings."""
        h, kv = self.hidden_size, self.num_key_value_heads * (self.hidden_size // self.num_attention_heads)
        layer = 2 * h + 2 * h * h + 2 * h * kv + 3 * h * self.intermediate_size
        return 2 * self.vocab_size * h + h + self.num_hidden_layers * layer


PRESETS: dict[str, HfLlamaParams] = {
    # CPU-sized, for tests of the serving path (loads in about a second)
    "tiny": HfLlamaParams(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=2048,
        max_position_embeddings=2048,
    ),
    # ~0.13 B: quick GPU trials
    "small": HfLlamaParams(
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
    ),
    # ~0.94 B: the size measured in shared/facts/real-engines-here.md
    "1b": HfLlamaParams(),
}


def vocabulary(size: int) -> dict[str, int]:
    """Specials, chat roles, the prompt words, then filler words ``w00000`` … up to ``size``."""
    words = list(dict.fromkeys([*SPECIALS, *ROLES, *WORDS]))
    words += [f"w{i:05d}" for i in range(size - len(words))]
    return {w: i for i, w in enumerate(words)}


def write(out: Path, p: HfLlamaParams, *, device: str | None = None) -> Path:
    """Write config, random weights (safetensors), tokenizer and generation config to ``out``.

    ``device``: where the weights are initialised (default: ``cuda`` when available, else ``cpu``).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, p.dtype)
    torch.manual_seed(p.seed)
    config = LlamaConfig(
        **p.shape(),
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    config.dtype = dtype  # recorded in config.json so `--dtype auto` loads it as written (transformers 5)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS, eos_token_id=None, pad_token_id=PAD, do_sample=False
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)

    tok = Tokenizer(models.WordLevel(vocabulary(p.vocab_size), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # WordPiece's decoder with an unused prefix joins word tokens with single spaces.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=p.max_position_embeddings,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    (out / "tuner-model.json").write_text(json.dumps({**asdict(p), "n_params": p.n_params}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: write the model directory and print its path and size."""
    ap = argparse.ArgumentParser(prog="python -m tuner.models.hf_random", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="directory to write")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    ap.add_argument("--device", default=None, help="cuda, cpu, … (default: cuda when available)")
    for name, value in asdict(HfLlamaParams()).items():
        if name == "dtype":
            ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
        else:
            ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = ap.parse_args(argv)
    overrides = {
        k: v for k, v in vars(args).items() if k not in ("out", "preset", "device") and v is not None
    }

    def build() -> int:
        params = HfLlamaParams(**{**asdict(PRESETS[args.preset]), **overrides})
        write(args.out, params, device=args.device)
        size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
        print(f"{args.out}\t{params.n_params / 1e6:.1f}M params\t{size / 1e6:.1f} MB")
        return 0

    return run_cli("tuner.models.hf_random", build)


if __name__ == "__main__":
    sys.exit(main())
