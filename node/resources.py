"""What this machine offers and how busy it is: psutil for CPU/memory/disk, pynvml for
NVIDIA GPUs. No driver or no GPU is normal and means zero GPUs, not an error."""

from __future__ import annotations

import os
import shutil

import msgspec
import psutil

from events.base import Resources
from events.node import GpuInfo, GpuUsage

GB = 1024**3


class Fingerprint(msgspec.Struct, frozen=True, kw_only=True):
    cpu: float
    memory_gb: float
    disk_free_gb: float
    gpus: list[GpuInfo]


def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # any failure to load the driver means "no NVIDIA GPUs here"
        return None


def detect_gpus() -> list[GpuInfo]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total / GB
            gpus.append(
                GpuInfo(index=index, name=name if isinstance(name, str) else name.decode(), memory_gb=round(memory, 2))
            )
        return gpus
    finally:
        nvml.nvmlShutdown()


def gpu_usage() -> list[GpuUsage]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        out = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            used = nvml.nvmlDeviceGetMemoryInfo(handle).used / GB
            out.append(GpuUsage(index=index, utilization=float(util), memory_used_gb=round(used, 3)))
        return out
    finally:
        nvml.nvmlShutdown()


def fingerprint(workdir: str = ".") -> Fingerprint:
    return Fingerprint(
        cpu=float(psutil.cpu_count(logical=True) or os.cpu_count() or 1),
        memory_gb=round(psutil.virtual_memory().total / GB, 2),
        disk_free_gb=round(shutil.disk_usage(workdir).free / GB, 2),
        gpus=detect_gpus(),
    )


def offered(
    found: Fingerprint,
    max_cpu: float | None = None,
    max_memory_gb: float | None = None,
    gpu_indices: list[int] | None = None,
) -> tuple[Resources, list[GpuInfo]]:
    """What the node advertises: the fingerprint, capped by the operator."""
    gpus = [g for g in found.gpus if gpu_indices is None or g.index in gpu_indices]
    capacity = Resources(
        cpu=min(found.cpu, max_cpu) if max_cpu is not None else found.cpu,
        memory_gb=min(found.memory_gb, max_memory_gb) if max_memory_gb is not None else found.memory_gb,
        gpu=len(gpus),
        gpu_memory_gb=round(sum(g.memory_gb for g in gpus), 2),
    )
    return capacity, gpus


def utilisation() -> tuple[float, float]:
    """(CPU percent since the last call, memory used in GB)."""
    return psutil.cpu_percent(interval=None), round(psutil.virtual_memory().used / GB, 3)
