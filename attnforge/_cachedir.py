"""Where attnforge keeps what it builds once: generated kernels, parser tables, tuned configs."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("ATTNFORGE_CACHE_DIR", Path.home() / ".cache" / "attnforge"))
