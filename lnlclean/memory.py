"""Host memory: what is available, sizes as people write them, and the ``--max-ram`` guard.

A run holds in host memory, besides the networks and a few batches, two things that grow
with N·K (samples × classes): the final probabilities of every sample (float32, 4·N·K bytes)
and any per-sample state kept in CPU memory (see the memory formula in docs/scale.md). The image
cache streams from disk and is not counted. :func:`check_host_memory` refuses a run whose
estimate exceeds the limit before training starts, instead of letting the system kill it
hours later.
"""

from __future__ import annotations

import re

from .errors import UserError

UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str, option: str = "--max-ram") -> int:
    """Returns the bytes in a size such as ``64G``, ``512MiB``, ``1.5 GB`` or ``1000000`` (units are powers of 1024).

    Raises UserError naming `option` for anything else.
    """
    match = SIZE_PATTERN.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{option} {text}: not a size; write it like 64G, 512M or 1.5G")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    """Returns `size` bytes in the largest unit that keeps a number ≥ 1, e.g. ``3.7 GiB``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = UNITS[unit[0].lower()]
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def available_ram() -> int | None:
    """Returns the memory the system can give new allocations now (``MemAvailable``), or None where it cannot tell."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_host_memory(
    needs: dict[str, int], max_ram: str | None, processes: int = 1, remedies: tuple[str, ...] = ()
) -> None:
    """Raises UserError when the host memory `needs` (what → bytes, per
    process) of `processes` processes exceed the limit. Returns None.

    The limit is `max_ram` (``--max-ram``) when given, else the memory available now; without
    either nothing is checked. The message suggests the options in `remedies` (e.g.
    ``--state-dtype float16``) before raising the limit.
    """
    limit = parse_size(max_ram) if max_ram is not None else available_ram()
    total = sum(needs.values()) * processes
    if limit is None or total <= limit:
        return
    parts = ", ".join(f"{what} {format_size(size)}" for what, size in needs.items() if size)
    per_process = f" for each of {processes} processes" if processes > 1 else ""
    need = f"this run needs about {format_size(total)} ({parts}{per_process})"
    advice = f"try {' or '.join(remedies)}, or " if remedies else ""
    if max_ram is not None:
        raise UserError(f"--max-ram {max_ram}: {need}; {advice}raise --max-ram")
    raise UserError(f"--max-ram: {need} but only {format_size(limit)} of memory is available; {advice}free memory")
