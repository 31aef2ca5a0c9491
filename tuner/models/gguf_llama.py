"""Write a small random-weight Llama model as a GGUF file for llama.cpp's ``llama-server``.

The weights are noise, so the text is gibberish, but every byte of the serving path is real: the
tokenizer (SentencePiece-style "llama" vocabulary with control tokens and 256 byte-fallback tokens),
attention, the KV cache and sampling. Requests sent with ``"ignore_eos": true`` produce exactly
``n_predict`` tokens, which is what a throughput benchmark needs.

    python -m tuner.models.gguf_llama /tmp/tiny.gguf --preset small
    python -m tuner.models.gguf_llama /tmp/x.gguf --n-embd 768 --n-layer 12 --n-head 12 --vocab-size 32000

Needs the ``gguf`` package (PyPI, maintained with llama.cpp) and numpy.
"""

from __future__ import annotations

import argparse
import itertools
import string
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tuner.core.cli import run_cli
from tuner.core.errors import ConfigError

SPACE = "\u2581"  # SentencePiece's word-boundary mark
N_SPECIAL = 3  # <unk>, <s>, </s>
N_BYTES = 256


@dataclass(frozen=True)
class GgufLlamaParams:
    """Shape of the model. ``n_params`` tells the size before anything is written."""

    n_embd: int = 512
    n_layer: int = 8
    n_head: int = 8
    n_head_kv: int = 8
    n_ff: int = 1408
    vocab_size: int = 32000
    n_ctx: int = 4096
    dtype: Literal["f16", "f32"] = "f16"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_head % self.n_head_kv:
            raise ConfigError(f"n_head ({self.n_head}) must be a multiple of n_head_kv ({self.n_head_kv})")
        if self.vocab_size < N_SPECIAL + N_BYTES + 1:
            raise ConfigError(f"vocab_size must be at least {N_SPECIAL + N_BYTES + 1} (specials + bytes)")
        if (self.n_embd // self.n_head) % 2:
            raise ConfigError("head size (n_embd / n_head) must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_params(self) -> int:
        """Parameter count (embeddings and output head counted separately: they are not tied)."""
        kv = self.n_head_kv * self.head_dim
        per_layer = (
            2 * self.n_embd
            + 2 * self.n_embd * self.n_embd
            + 2 * self.n_embd * kv
            + 3 * self.n_embd * self.n_ff
        )
        return 2 * self.vocab_size * self.n_embd + self.n_embd + self.n_layer * per_layer

    @property
    def file_bytes(self) -> int:
        """Approximate file size (weights only)."""
        return self.n_params * (2 if self.dtype == "f16" else 4)


PRESETS: dict[str, GgufLlamaParams] = {
    # ~4 M parameters: starts in well under a second, for tests of flags and failure paths
    "tiny": GgufLlamaParams(n_embd=128, n_layer=2, n_head=4, n_head_kv=4, n_ff=352, vocab_size=8000),
    # ~58 M parameters (116 MB in F16): tens to hundreds of tokens/s on 2 CPU cores
    "small": GgufLlamaParams(),
    # ~150 M parameters, like the model in shared/facts/real-engines-here.md
    "medium": GgufLlamaParams(n_embd=768, n_layer=12, n_head=12, n_head_kv=12, n_ff=2048),
}


def vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    """A llama-style vocabulary: <unk>, <s>, </s>, 256 byte tokens, then ordinary pieces.

    Ordinary pieces are letters, digits and punctuation, then word-start pieces (``▁a``, ``▁ab`` …) and
    word-inner pieces (``ab``, ``abc`` …) until ``size`` is reached, so English-ish prompts tokenise into
    a realistic mix of short pieces instead of all bytes. Scores favour earlier (shorter) pieces, as
    SentencePiece's log-probabilities do.
    """
    import gguf

    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(N_BYTES)]
    types += [gguf.TokenType.BYTE] * N_BYTES
    seen = set(tokens)
    for piece in itertools.islice(_pieces(), size - len(tokens)):
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    if len(tokens) < size:
        raise ConfigError(f"cannot make {size} distinct pieces; use a vocab_size below {len(tokens)}")
    scores = [0.0] * (N_SPECIAL + N_BYTES) + [-float(i) for i in range(size - N_SPECIAL - N_BYTES)]
    return tokens, scores, [int(t) for t in types]


def _pieces() -> Iterator[str]:
    letters = string.ascii_lowercase
    yield SPACE
    yield from string.ascii_letters + string.digits + string.punctuation
    for n in (1, 2, 3, 4):
        for combo in itertools.product(letters, repeat=n):
            word = "".join(combo)
            yield SPACE + word
            if n > 1:
                yield word


def write(path: Path, p: GgufLlamaParams) -> Path:
    """Write the model to ``path`` and return it. Weights ~ N(0, 0.02²), norms 1."""
    import gguf

    rng = np.random.default_rng(p.seed)
    dt = np.float16 if p.dtype == "f16" else np.float32

    def mat(rows: int, cols: int) -> np.ndarray:
        # numpy shape (rows, cols) is ggml's ne = [cols, rows]: rows = output features.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(dt)

    def norm() -> np.ndarray:
        return np.ones(p.n_embd, dtype=np.float32)  # llama.cpp keeps norm weights in F32

    kv = p.n_head_kv * p.head_dim
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("sglang-tuner random llama")
    w.add_context_length(p.n_ctx)
    w.add_embedding_length(p.n_embd)
    w.add_block_count(p.n_layer)
    w.add_feed_forward_length(p.n_ff)
    w.add_head_count(p.n_head)
    w.add_head_count_kv(p.n_head_kv)
    w.add_rope_dimension_count(p.head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(p.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if p.dtype == "f16" else gguf.LlamaFileType.ALL_F32)

    tokens, scores, types = vocabulary(p.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    # ChatML, so /v1/chat/completions renders without llama.cpp guessing a template.
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    w.add_tensor("token_embd.weight", mat(p.vocab_size, p.n_embd))
    for i in range(p.n_layer):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", norm())
        w.add_tensor(f"{b}.attn_q.weight", mat(p.n_embd, p.n_embd))
        w.add_tensor(f"{b}.attn_k.weight", mat(kv, p.n_embd))
        w.add_tensor(f"{b}.attn_v.weight", mat(kv, p.n_embd))
        w.add_tensor(f"{b}.attn_output.weight", mat(p.n_embd, p.n_embd))
        w.add_tensor(f"{b}.ffn_norm.weight", norm())
        w.add_tensor(f"{b}.ffn_gate.weight", mat(p.n_ff, p.n_embd))
        w.add_tensor(f"{b}.ffn_up.weight", mat(p.n_ff, p.n_embd))
        w.add_tensor(f"{b}.ffn_down.weight", mat(p.n_embd, p.n_ff))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", mat(p.vocab_size, p.n_embd))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: write a GGUF and print its path, parameter count and size."""
    ap = argparse.ArgumentParser(prog="python -m tuner.models.gguf_llama", description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="GGUF file to write")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small", help="shape to start from")
    for name, value in asdict(GgufLlamaParams()).items():
        if name == "dtype":
            ap.add_argument("--dtype", choices=("f16", "f32"), default=None)
        else:
            ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("out", "preset") and v is not None}

    def build() -> int:
        params = GgufLlamaParams(**{**asdict(PRESETS[args.preset]), **overrides})
        write(args.out, params)
        print(f"{args.out}\t{params.n_params / 1e6:.1f}M params\t{args.out.stat().st_size / 1e6:.1f} MB")
        return 0

    return run_cli("tuner.models.gguf_llama", build)


if __name__ == "__main__":
    sys.exit(main())
