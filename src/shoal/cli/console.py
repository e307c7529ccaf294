"""Where the CLI prints: results on stdout, diagnostics and progress on stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def human_bytes(n: float) -> str:
    """Decimal units, as the progress bars show them: 586.1 KB, 1.2 GB."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"
