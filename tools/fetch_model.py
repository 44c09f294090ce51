"""Fetch the default model into the cache and print its path: `python -m tools.fetch_model`."""

from __future__ import annotations

from jaxengine.models.default_model import default_model_path


def main() -> None:
    print(default_model_path())


if __name__ == "__main__":
    main()
