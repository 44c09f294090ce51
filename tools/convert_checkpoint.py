"""Convert a checkpoint (HF directory, .gguf, cached hub id, or the default model) into an
orbax checkpoint of jaxengine's parameter tree, which --model-path then loads straight into
each device's shards:

    python -m tools.convert_checkpoint SRC OUT [--dtype float32|bfloat16]
    python -m tools.convert_checkpoint default ~/models/smollm2-orbax
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.convert_checkpoint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="HF directory, .gguf file, cached hub id, or 'default'")
    parser.add_argument("out", help="directory to write (replaced if it holds a checkpoint)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype stored (loading casts to --dtype of the server)")
    parser.add_argument("--tokenizer-path", default=None, help="tokenizer to store instead")
    args = parser.parse_args(argv)

    from jaxengine.models.checkpoint import load_checkpoint
    from jaxengine.models.orbax_checkpoint import save
    from jaxengine.models.registry import table_for_config

    t0 = time.perf_counter()
    try:
        checkpoint = load_checkpoint(None if args.src == "default" else args.src,
                                     args.tokenizer_path)
        out = save(checkpoint, table_for_config(checkpoint.hf_config), args.out, args.dtype)
    except ValueError as e:
        parser.error(str(e))
    print(f"wrote {out} ({args.dtype}) in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
