"""What every benchmark script shares: device and thread options, and one line describing the machine."""

from __future__ import annotations

import argparse
import os
import platform

import torch

from lgeom.device import resolve_device


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` (auto: CUDA when available) and ``--threads`` (torch intra-op threads, 0: torch's default)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")


def setup_device(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads``, resolve ``--device`` and print the machine line; returns the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = (
            f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} intra-op threads"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {device} ({where}); torch {torch.__version__}; load average {load:.2f}")
    return device
