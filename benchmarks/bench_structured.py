"""Structured output: JSON-schema decoding throughput, with and without jump-forward.

On the default model, 32 chat prompts that ask for a JobCandidate JSON object (the pydantic
schema of tests/structured), greedy, in one run:

* unconstrained: the same prompts, no grammar (the model writes what it likes, up to EOS);
* constrained: `json_schema` with `jump_forward=False` (one model step per token);
* constrained + jump-forward: the tokens the grammar forces are appended in one step.

Each mode runs once untimed (JIT compilation), then `--rounds` timed rounds with the modes
interleaved; the fastest round of each counts (the 2-core dev box is shared and noisy).
Reported per mode: output tokens/s and characters/s (wall time of the batch), model steps per
response, and the share of responses that parse and validate against the schema.

Run:  python -m benchmarks.bench_structured [--num-prompts 32] [--max-new-tokens 160]
          [--rounds 3] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pydantic import BaseModel, ValidationError

import jaxengine as je


class UserProfile(BaseModel):
    name: str
    age: int
    skills: list[str]
    experience_years: int


class JobCandidate(BaseModel):
    candidate: UserProfile
    suitable_for_position: bool
    reason: str


SYSTEM = ("You assess job candidates. Reply in JSON like "
          '{"candidate": {"name": "Ann", "age": 30, "skills": ["Excel", "SQL"], '
          '"experience_years": 3}, "suitable_for_position": true, '
          '"reason": "She knows the tools the job needs."}')
PEOPLE = [("Alice", 29, "a data engineer who knows Python and SQL", 5),
          ("Bob", 41, "a carpenter who also knows some Excel", 20),
          ("Chen", 23, "a computer science graduate who knows Java and C++", 1),
          ("Dana", 35, "a nurse", 12), ("Evan", 52, "a restaurant manager", 25),
          ("Fatima", 30, "a Rust and Go developer", 8),
          ("Gus", 19, "a freelance designer who knows Figma", 1),
          ("Hana", 45, "an accountant who knows tax law", 20)]
JOBS = ["backend developer", "data scientist", "ICU nurse", "hotel manager"]


def prompts(n: int) -> list[str]:
    out = []
    for k in range(n):
        name, age, what, years = PEOPLE[k % len(PEOPLE)]
        job = JOBS[(k // len(PEOPLE)) % len(JOBS)]
        out.append(f"{name} is {age}, {what}, with {years} years of experience. "
                   f"Is {name} suitable for a {job} position?")
    return out


def valid(text: str) -> bool:
    try:
        JobCandidate.model_validate_json(text)
    except ValidationError:
        return False
    return True


def timed(llm: je.Engine, ids: list[list[int]], params: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    outs = llm.generate(input_ids=ids, sampling_params=params)
    seconds = time.perf_counter() - t0
    tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
    chars = sum(len(o["text"]) for o in outs)
    return {"seconds": seconds, "tokens": tokens, "chars": chars,
            "tokens_per_s": tokens / seconds, "chars_per_s": chars / seconds,
            "steps_per_response": sum(o["meta_info"]["model_steps"] for o in outs) / len(outs),
            "tokens_per_response": tokens / len(outs),
            "valid_rate": sum(valid(o["text"]) for o in outs) / len(outs),
            "sample": outs[0]["text"]}


def run_modes(llm: je.Engine, ids: list[list[int]], modes: dict[str, dict], rounds: int
              ) -> dict[str, dict[str, Any]]:
    """Each mode once untimed (compilation), then `rounds` timed rounds with the modes
    interleaved, so that load from other processes hits them alike; the fastest round counts."""
    for params in modes.values():
        llm.generate(input_ids=ids, sampling_params=params)
    best: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name, params in modes.items():
            r = timed(llm, ids, params)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds; the fastest counts")
    ap.add_argument("--output", help="write the results as JSON here")
    args = ap.parse_args()

    schema = json.dumps(JobCandidate.model_json_schema())
    base = {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}
    modes = {"unconstrained": base,
             "constrained": base | {"json_schema": schema, "jump_forward": False},
             "constrained + jump-forward": base | {"json_schema": schema}}
    with je.Engine(dtype="float32") as llm:
        ids = [llm.apply_chat_template([{"role": "system", "content": SYSTEM},
                                        {"role": "user", "content": p}])
               for p in prompts(args.num_prompts)]
        results = run_modes(llm, ids, modes, args.rounds)

    ref = results["unconstrained"]
    print(f"{'mode':<28}{'tok/s':>8}{'chars/s':>9}{'x chars/s':>10}{'steps/resp':>11}"
          f"{'tok/resp':>9}{'valid':>7}")
    for name, r in results.items():
        print(f"{name:<28}{r['tokens_per_s']:>8.1f}{r['chars_per_s']:>9.1f}"
              f"{r['chars_per_s'] / ref['chars_per_s']:>9.2f}x{r['steps_per_response']:>11.1f}"
              f"{r['tokens_per_response']:>9.1f}{r['valid_rate']:>7.0%}")
    off, on = results["constrained"], results["constrained + jump-forward"]
    saved = 1 - on["steps_per_response"] / off["steps_per_response"]
    print(f"jump-forward saves {saved:.0%} of model steps; "
          f"constrained + jump-forward = {on['chars_per_s'] / ref['chars_per_s']:.2f}x "
          "unconstrained chars/s")
    for name, r in results.items():
        print(f"  {name}: {r['sample'][:160]!r}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
