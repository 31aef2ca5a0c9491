"""GPU telemetry: NVML when present (device machine), clean degradation without, /server_info polling."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuner.loadgen import telemetry
from tuner.loadgen.telemetry import (
    GpuMonitor,
    ServerMemoryMonitor,
    current_memory_mib,
    fetch_server_memory,
    parse_visible_devices,
    wait_memory_baseline,
)


def nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


HAVE_NVML = nvml_works()


def test_parse_visible_devices() -> None:
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("1, 0") == [1, 0]
    assert parse_visible_devices("GPU-abc,2") == ["GPU-abc", 2]
    assert parse_visible_devices("0,-1,2") == [0]  # CUDA stops at the first invalid entry


@pytest.mark.skipif(HAVE_NVML, reason="checks the no-GPU path; this machine has NVML")
def test_without_nvml_degrades_and_warns_once(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(telemetry, "_nvml_warned", False)
    caplog.set_level(logging.WARNING, logger="tuner.loadgen.telemetry")
    with GpuMonitor(interval_s=0.01) as gpu:
        pass
    with GpuMonitor() as again:
        pass
    assert not gpu.available and not again.available and gpu.reason
    assert gpu.samples == [] and gpu.peak_memory_mib() is None and gpu.mean_utilization() is None
    assert current_memory_mib() is None
    assert wait_memory_baseline(None, 0.0, timeout_s=0.1) is True
    warnings = [r for r in caplog.records if "GPU telemetry off" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_NVML, reason="needs an NVIDIA GPU and driver (NVML)")
def test_nvml_sampling_on_a_gpu() -> None:
    import time

    with GpuMonitor(interval_s=0.05) as gpu:
        time.sleep(0.3)
    assert gpu.available
    indices = {s.gpu_index for s in gpu.samples}
    assert len(gpu.samples) >= 4 * len(indices)
    s = gpu.samples[0]
    assert s.source == "nvml" and s.memory_total_mib > 1000 and 0 <= s.memory_used_mib <= s.memory_total_mib
    assert gpu.peak_memory_mib() is not None and gpu.mean_utilization() is not None
    used = current_memory_mib()
    assert used is not None and set(used) == indices
    # Already at (or under) its own current figure plus a generous tolerance.
    assert wait_memory_baseline(None, used, tolerance_mib=1024, timeout_s=5)
    assert not wait_memory_baseline(None, -1e9, tolerance_mib=0, timeout_s=0.3, interval_s=0.1)


class _InfoHandler(BaseHTTPRequestHandler):
    used = 1000.0

    def do_GET(self) -> None:
        if self.path != "/server_info":
            self.send_error(404)
            return
        type(self).used += 10
        body = json.dumps(
            {
                "version": "sim",
                "gpu_memory": {"used_mib": self.used, "total_mib": 32768, "source": "simulator"},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def info_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _InfoHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_server_memory_from_server_info(info_server: str) -> None:
    s = fetch_server_memory(info_server)
    assert s is not None and s.source == "simulator" and s.memory_total_mib == 32768
    import time

    with ServerMemoryMonitor(info_server, interval_s=0.05) as mon:
        time.sleep(0.3)
    assert mon.available and len(mon.samples) >= 4
    assert mon.peak_memory_mib() == max(x.memory_used_mib for x in mon.samples)
    assert mon.mean_utilization() is None
    assert fetch_server_memory("http://127.0.0.1:9") is None


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_NVML, reason="needs an NVIDIA GPU and driver (NVML)")
def test_a_gpu_id_the_machine_lacks_is_a_clear_error(tmp_path) -> None:
    import subprocess

    from tuner.loadgen.telemetry import gpu_count
    from tuner.testing.study_cli import ROOT, small_space, study_cmd

    count = gpu_count()
    assert count is not None and count >= 1
    proc = subprocess.run(study_cmd(small_space(tmp_path), tmp_path, "--gpus", str(count), trials=1),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tuner.study: error: --gpus: GPU {count} does not exist: NVML sees {count} (0..{count - 1})"
    )
