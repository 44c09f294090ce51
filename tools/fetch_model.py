"""Fetch models into the cache and print their paths.

    python -m tools.fetch_model                 # the default model (SmolLM2-135M-Instruct)
    python -m tools.fetch_model gemma3-270m     # real models by name (--list shows them)

A fetched name also works as `--model-path NAME`.
"""

from __future__ import annotations

import argparse

from jaxengine.models.default_model import default_model_path
from jaxengine.models.known_models import ALIASES, KNOWN_MODELS, known_model_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.fetch_model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="known model names (none: the default model)")
    parser.add_argument("--list", action="store_true", help="list the known models")
    args = parser.parse_args(argv)
    if args.list:
        for name, model in KNOWN_MODELS.items():
            print(f"{name:22} {model.about}")
        return
    unknown = [n for n in args.names if n not in KNOWN_MODELS and n not in ALIASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(KNOWN_MODELS)}")
    for name in args.names:
        print(known_model_path(name))
    if not args.names:
        print(default_model_path())


if __name__ == "__main__":
    main()
