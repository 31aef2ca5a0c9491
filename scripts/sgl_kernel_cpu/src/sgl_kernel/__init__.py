"""sglang-tuner's CPU stand-in for ``sgl_kernel`` -- NOT the real sgl-kernel / sglang-kernel.

SGLang 0.5.23 run with its CPU engine (``SGLANG_USE_CPU_ENGINE=1 ... --device cpu``) imports a handful of
names from ``sgl_kernel`` at start-up. No CPU build of sgl-kernel exists on the package registry (the
wheel is CUDA code only), so the sglang-tuner project provides this small package instead
(source: ``scripts/sgl_kernel_cpu`` of sglang-tuner, installed by ``scripts/setup-sglang-cpu.sh``):

* ``assign_req_to_token_pool_cpu`` -- real code, a plain-torch version of SGLang's own Triton kernel
  ``assign_req_to_token_pool``. It is the only helper the text path calls (every request).
* ``assign_extend_cache_locs_cpu``, ``assign_draft_cache_locs_contiguous_cpu``,
  ``build_tree_kernel_efficient_cpu``, ``copy_all_layer_kv_cache_cpu``, ``fill_accept_out_cache_loc_cpu``,
  ``fill_bonus_tokens_cpu``, ``verify_tree_greedy_cpu`` (speculative decoding / KV-copy helpers) and
  everything in ``sgl_kernel.allreduce`` -- importable, but raise ``NotImplementedError`` when called.
* ``sgl_kernel.scalar_type`` -- the real wheel's own pure-Python file, copied in unchanged at install time.
* Any other name: ``AttributeError`` (``ImportError`` for ``from sgl_kernel import name``) saying so.

Everything else the server does (scheduler, attention, sampling, HTTP) is stock SGLang.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, NoReturn

import torch

__version__ = "0.5.23+sglang-tuner-cpu-stand-in"
STAND_IN = "sglang-tuner's CPU stand-in for sgl_kernel"


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Write each request's new KV-cache slots into its row of the request-to-token table, in place.

    For request ``i`` (row ``r = req_pool_indices[i]``, slots ``s = start_offset[i]`` to
    ``e = end_offset[i]``): ``req_to_token[r, s:e] = out_cache_loc[o : o + (e - s)]`` where ``o`` is the sum
    of ``end_offset[j] - start_offset[j]`` over the requests before ``i``. The semantics of SGLang's Triton
    kernel ``assign_req_to_token_pool`` (sglang/srt/mem_cache/allocation.py), called as
    ``assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset,
    out_cache_loc, req_to_token.shape[1])``.
    """
    if req_to_token.dim() != 2 or req_to_token.shape[1] != pool_len:
        raise ValueError(
            f"assign_req_to_token_pool_cpu: req_to_token must be 2-D with {pool_len} columns, "
            f"got shape {tuple(req_to_token.shape)}"
        )
    rows = req_pool_indices.tolist()
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    if not len(rows) == len(starts) == len(ends):
        raise ValueError(
            f"assign_req_to_token_pool_cpu: {len(rows)} req_pool_indices, {len(starts)} start_offset, "
            f"{len(ends)} end_offset; they must match"
        )
    offset = 0
    for row, start, end in zip(rows, starts, ends, strict=True):
        n = end - start
        if n > 0:
            if start < 0 or end > pool_len or offset + n > out_cache_loc.numel():
                raise IndexError(
                    f"assign_req_to_token_pool_cpu: slots {start}:{end} of a {pool_len}-slot row, "
                    f"out_cache_loc[{offset}:{offset + n}] of {out_cache_loc.numel()}: out of range"
                )
            req_to_token[row, start:end] = out_cache_loc[offset : offset + n]
        offset += n  # as the Triton kernel: the running sum of (end - start)


def _not_provided(name: str, used_for: str) -> Any:
    def stand_in(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            f"sgl_kernel.{name} is not implemented: this sgl_kernel is {STAND_IN} (scripts/sgl_kernel_cpu "
            f"of sglang-tuner), which implements only assign_req_to_token_pool_cpu. {name} is used for "
            f"{used_for}; run without that feature, or install a real sgl-kernel CPU build."
        )

    stand_in.__name__ = stand_in.__qualname__ = name
    stand_in.__doc__ = f"Not implemented in {STAND_IN}: raises NotImplementedError when called."
    return stand_in


_SPEC = "speculative decoding"
assign_extend_cache_locs_cpu = _not_provided("assign_extend_cache_locs_cpu", _SPEC)
assign_draft_cache_locs_contiguous_cpu = _not_provided("assign_draft_cache_locs_contiguous_cpu", _SPEC)
build_tree_kernel_efficient_cpu = _not_provided("build_tree_kernel_efficient_cpu", _SPEC)
copy_all_layer_kv_cache_cpu = _not_provided("copy_all_layer_kv_cache_cpu", "copying KV cache between slots")
fill_accept_out_cache_loc_cpu = _not_provided("fill_accept_out_cache_loc_cpu", _SPEC)
fill_bonus_tokens_cpu = _not_provided("fill_bonus_tokens_cpu", _SPEC)
verify_tree_greedy_cpu = _not_provided("verify_tree_greedy_cpu", _SPEC)

NOT_PROVIDED = (
    "assign_extend_cache_locs_cpu",
    "assign_draft_cache_locs_contiguous_cpu",
    "build_tree_kernel_efficient_cpu",
    "copy_all_layer_kv_cache_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
    "verify_tree_greedy_cpu",
)
__all__ = ["assign_req_to_token_pool_cpu", *NOT_PROVIDED]


def __getattr__(name: str) -> Any:
    # Submodules (allreduce, scalar_type) load on first access, like a normal package.
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    msg = (
        f"sgl_kernel has no {name!r}: this sgl_kernel is {STAND_IN} (scripts/sgl_kernel_cpu of sglang-tuner); "
        f"it provides only {', '.join(__all__)}, allreduce and scalar_type. SGLang asked for a kernel the "
        f"CPU stand-in does not have (a newer SGLang, or a GPU-only feature)."
    )
    # `from sgl_kernel import name` probes with hasattr() inside importlib's _handle_fromlist, and an
    # AttributeError there is turned into a bare "cannot import name". Raise the ImportError ourselves in
    # that one case so the message above reaches the log; plain attribute access gets AttributeError, so
    # hasattr()/getattr(..., default) keep working.
    if sys._getframe(1).f_code.co_name == "_handle_fromlist":
        raise ImportError(msg, name=__name__)
    raise AttributeError(msg)
