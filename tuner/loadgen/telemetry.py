"""GPU telemetry: NVML sampling in a background thread, the simulator's memory figure, GPU hygiene.

- :class:`GpuMonitor` samples memory and utilisation of the GPUs a server uses (by default the
  ones ``CUDA_VISIBLE_DEVICES`` exposes) every ``interval_s`` while a benchmark runs.
- :class:`ServerMemoryMonitor` does the same from a server's ``/server_info`` ``gpu_memory``
  figure (the simulator reports one; ``source="simulator"``).
- :func:`wait_memory_baseline` waits, between trials, until the previous server's memory is free.

Without NVML (no driver, no GPU) everything degrades: ``available`` is False, no samples, and
one warning says why (once per process, not once per trial).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from tuner.core.records import GpuSample

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_nvml_lock = threading.Lock()
_nvml_warned = False


def parse_visible_devices(value: str | None) -> list[int | str] | None:
    """Parse a ``CUDA_VISIBLE_DEVICES`` value: None when unset (every GPU), else indices/UUIDs.

    As CUDA does, the list ends at the first entry that is neither an index nor a UUID, and
    an empty value hides every GPU.

    >>> parse_visible_devices("2,0"), parse_visible_devices("GPU-8f2a,1"), parse_visible_devices("0,x,1")
    ([2, 0], ['GPU-8f2a', 1], [0])
    """
    if value is None:
        return None
    out: list[int | str] = []
    for raw in value.split(","):
        item = raw.strip()
        if item.isdigit():
            out.append(int(item))
        elif item.startswith(("GPU-", "MIG-")):
            out.append(item)
        else:
            break
    return out


def _warn_once(reason: str) -> None:
    global _nvml_warned
    if not _nvml_warned:
        _nvml_warned = True
        log.warning("GPU telemetry off: %s (GPU memory and utilisation will not be recorded)", reason)


def _nvml_start() -> Any | None:
    """Initialise NVML; return the pynvml module, or None (after warning once) when absent."""
    try:
        import pynvml
    except ImportError:
        _warn_once("the nvidia-ml-py package is not installed")
        return None
    try:
        with _nvml_lock:
            pynvml.nvmlInit()  # reference-counted by NVML: every init has its shutdown
    except pynvml.NVMLError as e:
        _warn_once(f"NVML did not initialise ({e}); no NVIDIA driver or GPU here")
        return None
    return pynvml


def _resolve(nvml: Any, gpu_indices: Sequence[int] | None) -> list[tuple[int, Any]]:
    """NVML (index, handle) pairs: the given physical indices, else the CUDA-visible GPUs."""
    count = nvml.nvmlDeviceGetCount()
    handles = {i: nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)}
    if gpu_indices is not None:
        missing = [i for i in gpu_indices if i not in handles]
        if missing:
            log.warning("GPU index %s not present (NVML sees %d GPUs); not sampled", missing, count)
        return [(i, handles[i]) for i in gpu_indices if i in handles]
    visible = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is None:
        return sorted(handles.items())
    uuids = {i: _as_str(nvml.nvmlDeviceGetUUID(h)) for i, h in handles.items()}
    chosen: list[tuple[int, Any]] = []
    for entry in visible:
        if isinstance(entry, int):
            index = entry if entry in handles else None
        else:  # CUDA accepts a unique UUID prefix
            found = [i for i, u in uuids.items() if u.startswith(entry)]
            index = found[0] if len(found) == 1 else None
        if index is None:
            log.warning("CUDA_VISIBLE_DEVICES entry %r matches no whole GPU; not sampled", entry)
        elif index not in dict(chosen):
            chosen.append((index, handles[index]))
    return chosen


def _as_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _read(nvml: Any, index: int, handle: Any) -> GpuSample:
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        util: float | None = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError:
        util = None  # not supported on some devices (MIG slices)
    return GpuSample(
        t_s=time.perf_counter(),
        gpu_index=index,
        memory_used_mib=mem.used / _MIB,
        memory_total_mib=mem.total / _MIB,
        utilization_pct=util,
    )


class _SamplerBase(ABC):
    """A background thread calling ``_sample()`` every ``interval_s``; a context manager."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: list[GpuSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _sample(self) -> list[GpuSample]:
        """Take one reading of every watched GPU."""

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.extend(self._sample())

    def _start_thread(self) -> None:
        self.samples.extend(self._sample())  # one reading at once, however short the run
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.samples.extend(self._sample())

    def peak_memory_by_gpu(self) -> dict[int, float]:
        """Highest memory used (MiB) seen on each GPU."""
        peaks: dict[int, float] = {}
        for s in self.samples:
            peaks[s.gpu_index] = max(peaks.get(s.gpu_index, 0.0), s.memory_used_mib)
        return peaks

    def peak_memory_mib(self) -> float | None:
        """Highest memory used (MiB) on any one GPU, or None without samples."""
        peaks = self.peak_memory_by_gpu()
        return max(peaks.values()) if peaks else None

    def mean_utilization(self) -> float | None:
        """Mean GPU utilisation (%) over every sample of every GPU, or None when unknown."""
        values = [s.utilization_pct for s in self.samples if s.utilization_pct is not None]
        return sum(values) / len(values) if values else None


class GpuMonitor(_SamplerBase):
    """Sample NVML memory and utilisation of some GPUs in a background thread.

    ``gpu_indices`` are NVML (physical) indices; None means the GPUs ``CUDA_VISIBLE_DEVICES``
    exposes (all when unset). ``GpuSample.t_s`` is ``time.perf_counter()``, the clock of the
    request records. Without NVML, ``available`` is False, ``reason`` says why, no samples.

    >>> with GpuMonitor(interval_s=0.2) as gpu:
    ...     pass  # run the benchmark here
    >>> gpu.peak_memory_mib() if gpu.available else None
    """

    def __init__(self, gpu_indices: Sequence[int] | None = None, interval_s: float = 0.2) -> None:
        super().__init__(interval_s)
        self.gpu_indices = gpu_indices
        self.available = False
        self.reason: str | None = None
        self._nvml: Any | None = None
        self._handles: list[tuple[int, Any]] = []

    def _sample(self) -> list[GpuSample]:
        nvml = self._nvml
        out = []
        for index, handle in self._handles:
            try:
                out.append(_read(nvml, index, handle))
            except Exception as e:  # a GPU fallen off the bus must not kill the benchmark
                log.warning("NVML reading of GPU %d failed: %s", index, e)
        return out

    def __enter__(self) -> GpuMonitor:
        self._nvml = _nvml_start()
        if self._nvml is None:
            self.reason = "NVML unavailable"
            return self
        self._handles = _resolve(self._nvml, self.gpu_indices)
        if not self._handles:
            self.reason = "no GPU selected (CUDA_VISIBLE_DEVICES or gpu_indices)"
            self._nvml.nvmlShutdown()
            self._nvml = None
            return self
        self.available = True
        self._start_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._nvml is not None:
            self._stop_thread()
            self._nvml.nvmlShutdown()
            self._nvml = None


def describe_gpus(gpu_indices: Sequence[int] | None = None) -> dict[str, Any] | None:
    """Name, driver version, memory and count of the selected GPUs (for provenance), or None without NVML."""
    nvml = _nvml_start()
    if nvml is None:
        return None
    try:
        chosen = _resolve(nvml, gpu_indices)
        if not chosen:
            return None
        names = sorted({_as_str(nvml.nvmlDeviceGetName(h)) for _, h in chosen})
        return {
            "gpu_name": ", ".join(names),
            "gpu_driver": _as_str(nvml.nvmlSystemGetDriverVersion()),
            "gpu_memory_mib": nvml.nvmlDeviceGetMemoryInfo(chosen[0][1]).total / _MIB,
            "gpu_count": len(chosen),
            "gpu_indices": [i for i, _ in chosen],
        }
    finally:
        nvml.nvmlShutdown()


def gpu_count() -> int | None:
    """How many GPUs NVML sees, or None without NVML (no driver, no GPU)."""
    nvml = _nvml_start()
    if nvml is None:
        return None
    try:
        return int(nvml.nvmlDeviceGetCount())
    finally:
        nvml.nvmlShutdown()


def current_memory_mib(gpu_indices: Sequence[int] | None = None) -> dict[int, float] | None:
    """Memory used (MiB) now on each selected GPU, or None without NVML."""
    nvml = _nvml_start()
    if nvml is None:
        return None
    try:
        return {i: _read(nvml, i, h).memory_used_mib for i, h in _resolve(nvml, gpu_indices)}
    finally:
        nvml.nvmlShutdown()


def wait_memory_baseline(
    gpu_indices: Sequence[int] | None,
    baseline_mib: float | Mapping[int, float],
    tolerance_mib: float = 512.0,
    timeout_s: float = 60.0,
    interval_s: float = 0.5,
) -> bool:
    """Wait until every selected GPU uses at most baseline + tolerance MiB (memory freed).

    ``baseline_mib`` is one figure for all GPUs or one per GPU index (e.g. what
    :func:`current_memory_mib` gave before the first trial). Returns True once reached, False
    on timeout (the caller decides: wait longer, or record that the next trial shares a GPU).
    Without NVML there is nothing to check: returns True (the warning was logged once).
    """
    nvml = _nvml_start()
    if nvml is None:
        return True
    try:
        handles = _resolve(nvml, gpu_indices)
        deadline = time.monotonic() + timeout_s
        while True:
            over = {}
            for index, handle in handles:
                base = baseline_mib.get(index, 0.0) if isinstance(baseline_mib, Mapping) else baseline_mib
                used = _read(nvml, index, handle).memory_used_mib
                if used > base + tolerance_mib:
                    over[index] = used
            if not over:
                return True
            if time.monotonic() >= deadline:
                log.warning("GPU memory still above baseline after %.0f s: %s MiB", timeout_s, over)
                return False
            time.sleep(interval_s)
    finally:
        nvml.nvmlShutdown()


def fetch_server_memory(base_url: str, timeout_s: float = 2.0) -> GpuSample | None:
    """Read ``/server_info``'s ``gpu_memory`` figure (the simulator's) as a GpuSample, or None.

    None when the server is unreachable or reports no such figure (a real SGLang server).
    """
    url = base_url.rstrip("/") + "/server_info"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            info = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    mem = info.get("gpu_memory") if isinstance(info, dict) else None
    if not isinstance(mem, dict) or "used_mib" not in mem:
        return None
    try:
        return GpuSample(
            t_s=time.perf_counter(),
            gpu_index=int(mem.get("gpu_index", 0)),
            memory_used_mib=float(mem["used_mib"]),
            memory_total_mib=float(mem.get("total_mib", 0.0)),
            utilization_pct=None if mem.get("utilization_pct") is None else float(mem["utilization_pct"]),
            source=str(mem.get("source", "simulator")),
        )
    except (TypeError, ValueError):
        return None


class ServerMemoryMonitor(_SamplerBase):
    """Poll a server's ``/server_info`` memory figure in a background thread (GpuMonitor's API).

    ``available`` is True once the server has reported a figure.
    """

    def __init__(self, base_url: str, interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.base_url = base_url

    @property
    def available(self) -> bool:
        return bool(self.samples)

    def _sample(self) -> list[GpuSample]:
        sample = fetch_server_memory(self.base_url, timeout_s=max(self.interval_s, 1.0))
        return [sample] if sample is not None else []

    def __enter__(self) -> ServerMemoryMonitor:
        self._start_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_thread()
