"""``sgl_kernel.allreduce`` of sglang-tuner's CPU stand-in: custom all-reduce is CUDA/ROCm-only.

SGLang imports this module (sglang/srt/distributed/device_communicators/custom_all_reduce_ops.py) but
uses it only with several GPUs; every function here raises NotImplementedError when called.
"""

from __future__ import annotations

from typing import Any

from sgl_kernel import _not_provided

_USE = "custom all-reduce across GPUs"
_NAMES = (
    "all_reduce",
    "all_reduce_reg",
    "all_reduce_unreg",
    "allocate_meta_buffer",
    "deterministic_all_reduce_reg",
    "deterministic_all_reduce_unreg",
    "dispose",
    "get_graph_buffer_ipc_meta",
    "get_meta_buffer_ipc_handle",
    "init_custom_ar",
    "init_custom_qr",
    "meta_size",
    "qr_all_reduce",
    "qr_destroy",
    "qr_get_handle",
    "qr_max_size",
    "qr_open_handles",
    "register_buffer",
    "register_graph_buffers",
)
globals().update({n: _not_provided(f"allreduce.{n}", _USE) for n in _NAMES})
__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    raise AttributeError(
        f"sgl_kernel.allreduce has no {name!r}: this is sglang-tuner's CPU stand-in for sgl_kernel "
        f"(scripts/sgl_kernel_cpu), which has no custom all-reduce"
    )
