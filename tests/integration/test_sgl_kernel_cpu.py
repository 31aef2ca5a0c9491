"""sglang-tuner's CPU stand-in for ``sgl_kernel`` (scripts/sgl_kernel_cpu), checked in the SGLang CPU venv.

The main venv has no torch, so every check runs in a subprocess of the venv's python from
``scripts/setup-sglang-cpu.sh``: ``TUNER_SGLANG_CPU_PYTHON``, else the default cache location. Skipped
without it unless ``TUNER_REQUIRE_ALL=1``, where a missing venv fails.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from tuner.testing.require import missing

CACHE = Path(os.environ.get("TUNER_CACHE", Path.home() / ".cache" / "sglang-tuner"))
PYTHON = Path(
    os.environ.get("TUNER_SGLANG_CPU_PYTHON") or CACHE / "sglang-cpu-0.5.23-venv" / "bin" / "python"
)

if not PYTHON.is_file():
    missing(f"SGLang CPU venv missing ({PYTHON}): run scripts/setup-sglang-cpu.sh", allow_module_level=True)


def run_in_venv(code: str) -> str:
    """Run ``code`` with the venv's python; fail with its output unless it exits 0. Returns stdout."""
    proc = subprocess.run(
        [str(PYTHON), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_assign_req_to_token_pool_cpu_matches_a_loop_reference() -> None:
    out = run_in_venv(
        """
        import torch
        from sgl_kernel import assign_req_to_token_pool_cpu

        def reference(req_pool_indices, req_to_token, start_offset, end_offset, out_cache_loc):
            offset = 0
            for i in range(len(req_pool_indices)):
                row = int(req_pool_indices[i])
                for j in range(int(start_offset[i]), int(end_offset[i])):
                    req_to_token[row, j] = out_cache_loc[offset + j - int(start_offset[i])]
                offset += int(end_offset[i]) - int(start_offset[i])

        g = torch.Generator().manual_seed(0)
        cases = 0
        for bs in (1, 2, 3, 7, 16, 33):
            for _ in range(20):
                pool_size, pool_len = 40, 64
                rows = torch.randperm(pool_size, generator=g)[:bs]
                start = torch.randint(0, pool_len, (bs,), generator=g)
                length = torch.randint(0, 12, (bs,), generator=g)  # zero-length requests too
                end = torch.minimum(start + length, torch.tensor(pool_len))
                n = int((end - start).sum())
                out_cache_loc = torch.randint(1, 10_000, (n,), generator=g, dtype=torch.int64)
                table = torch.randint(-5, 0, (pool_size, pool_len), generator=g, dtype=torch.int32)
                expected = table.clone()
                reference(rows, expected, start, end, out_cache_loc)
                # exactly as SGLang 0.5.23 calls it (sglang/srt/mem_cache/allocation.py)
                assign_req_to_token_pool_cpu(rows, table, start, end, out_cache_loc, table.shape[1])
                assert torch.equal(table, expected), (bs, rows, start, end)
                assert table.dtype == torch.int32
                cases += 1
        # decode shape: one new token per request
        table = torch.zeros(4, 8, dtype=torch.int32)
        assign_req_to_token_pool_cpu(
            torch.tensor([2, 0]), table, torch.tensor([3, 5]), torch.tensor([4, 6]), torch.tensor([11, 12]), 8
        )
        assert table[2, 3] == 11 and table[0, 5] == 12 and int(table.sum()) == 23
        try:
            assign_req_to_token_pool_cpu(
                torch.tensor([0]), table, torch.tensor([6]), torch.tensor([9]), torch.tensor([1, 2, 3]), 8
            )
        except IndexError as e:
            assert "out of range" in str(e)
        else:
            raise AssertionError("a write past the row did not raise")
        print(cases)
        """
    )
    assert out.split() == ["120"]


def test_sglang_calls_it_with_the_signature_provided() -> None:
    # Read (not import) SGLang's allocation.py: the CPU branch must pass the six arguments we implement.
    out = run_in_venv(
        """
        import importlib.util, inspect, re
        import sgl_kernel
        src = open(importlib.util.find_spec("sglang.srt.mem_cache.allocation").origin).read()
        assert "from sgl_kernel import assign_req_to_token_pool_cpu" in src
        call = re.search(r"assign_req_to_token_pool_cpu\\((.*?)\\)\\n", src, re.S).group(1)
        args = [a.strip() for a in call.split(",") if a.strip()]
        assert args == [
            "req_pool_indices", "req_to_token", "start_offset", "end_offset", "out_cache_loc",
            "req_to_token.shape[1]",
        ], args
        params = list(inspect.signature(sgl_kernel.assign_req_to_token_pool_cpu).parameters)
        assert params == [
            "req_pool_indices", "req_to_token", "start_offset", "end_offset", "out_cache_loc", "pool_len"
        ], params
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_other_names_import_but_raise_clearly_when_called() -> None:
    out = run_in_venv(
        """
        import sgl_kernel
        from sgl_kernel import (
            assign_draft_cache_locs_contiguous_cpu, assign_extend_cache_locs_cpu,
            build_tree_kernel_efficient_cpu, copy_all_layer_kv_cache_cpu, fill_accept_out_cache_loc_cpu,
            fill_bonus_tokens_cpu, verify_tree_greedy_cpu,
        )
        import sgl_kernel.allreduce as ar
        from sgl_kernel.scalar_type import ScalarType, scalar_types  # the real wheel's file
        assert scalar_types.uint4b8.size_bits == 4

        funcs = [
            assign_draft_cache_locs_contiguous_cpu, assign_extend_cache_locs_cpu,
            build_tree_kernel_efficient_cpu, copy_all_layer_kv_cache_cpu, fill_accept_out_cache_loc_cpu,
            fill_bonus_tokens_cpu, verify_tree_greedy_cpu, ar.init_custom_ar, ar.all_reduce, ar.dispose,
        ]
        for f in funcs:
            try:
                f(1, 2, x=3)
            except NotImplementedError as e:
                msg = str(e)
                assert f.__name__.split(".")[-1] in msg and "stand-in" in msg and "sglang-tuner" in msg, msg
            else:
                raise AssertionError(f"{f.__name__} returned instead of raising")

        assert not hasattr(sgl_kernel, "rmsnorm")
        assert getattr(sgl_kernel, "silu_and_mul", None) is None
        try:
            sgl_kernel.rmsnorm
        except AttributeError as e:
            assert "rmsnorm" in str(e) and "stand-in" in str(e), e
        try:
            from sgl_kernel import fused_add_rmsnorm  # noqa: F401
        except ImportError as e:
            assert "fused_add_rmsnorm" in str(e) and "stand-in" in str(e), e
        else:
            raise AssertionError("from-import of a missing kernel succeeded")
        try:
            ar.qr_unknown
        except AttributeError as e:
            assert "stand-in" in str(e), e
        assert "stand-in" in sgl_kernel.__doc__ and "NOT the real" in sgl_kernel.__doc__
        print(len(funcs))
        """
    )
    assert out.split() == ["10"]
