"""Resident memory of the running process, shared by the benchmark scripts (Linux)."""

from __future__ import annotations


def rss_kib() -> tuple[int, int]:
    """(current, peak) resident set size of this process in KiB, from /proc."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]
