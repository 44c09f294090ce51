"""Tool calls with and without the grammar, in one run: how many answers call a tool, how many
of the calls are valid (an offered function, arguments that validate against its schema), and
the latency, on the same questions.

Two servers with the same model: the default (calls grammar-constrained: `required` and
`auto`), and one with `--grammar-backend none` (`auto` only: parsed, not constrained), which is
what an engine without constrained tool calls gives.

    python -m benchmarks.bench_tools                       # the default model
    python -m benchmarks.bench_tools --model-path qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jsonschema_rs
import openai

from benchmarks._server import serving

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"},
            "source": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "target": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "required": ["amount", "source", "target"]}}},
    {"type": "function", "function": {
        "name": "search_flights", "description": "Find flights between two airports on a day",
        "parameters": {"type": "object", "properties": {
            "origin": {"type": "string", "maxLength": 40},
            "destination": {"type": "string", "maxLength": 40},
            "date": {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"}},
            "required": ["origin", "destination", "date"]}}},
]
QUESTIONS = [
    "What is the weather in Paris?", "Is it raining in Tokyo right now?",
    "How warm is it in Cairo, in fahrenheit?", "Weather in Oslo please.",
    "Convert 100 US dollars to euros.", "How many yen is 50 GBP?",
    "Change 12.5 EUR into CHF.", "What are 1000 INR in USD?",
    "Find me a flight from Boston to Denver on 2026-12-24.",
    "Any flights from Rome to Madrid on 2027-01-03?",
    "I need to fly London to Dublin on 2026-12-20.", "Flights Paris to Lyon, 2027-02-14?",
]
SCHEMAS = {t["function"]["name"]: jsonschema_rs.validator_for(t["function"]["parameters"])
           for t in TOOLS}


def valid(call) -> bool:
    try:
        args = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        return False
    check = SCHEMAS.get(call.function.name)
    return check is not None and check.is_valid(args)


def run(url: str, choice: str, max_tokens: int) -> dict:
    client = openai.OpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0, timeout=600)
    with_call = broken = calls = good = 0
    latencies = []
    for question in QUESTIONS:
        t0 = time.perf_counter()
        out = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": question}], tools=TOOLS,
            tool_choice=choice, parallel_tool_calls=False, temperature=0.0,
            max_tokens=max_tokens)
        latencies.append(time.perf_counter() - t0)
        made = out.choices[0].message.tool_calls or []
        text = out.choices[0].message.content or ""
        with_call += bool(made)
        broken += not made and ("<tool_call>" in text or '"arguments"' in text)  # a failed try
        calls += len(made)
        good += sum(valid(c) for c in made)
    return {"with_call": with_call, "broken": broken, "calls": calls, "valid": good,
            "median_s": statistics.median(latencies)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=None)
    p.add_argument("--max-tokens", type=int, default=80)
    args = p.parse_args()
    base = ["--skip-server-warmup", "--context-length", "2048"]
    if args.model_path:
        base += ["--model-path", args.model_path]
    rows = {}
    with serving(base) as server:
        rows["grammar, required"] = run(server.url, "required", args.max_tokens)
        rows["grammar, auto"] = run(server.url, "auto", args.max_tokens)
    with serving([*base, "--grammar-backend", "none"]) as server:
        rows["no grammar, auto"] = run(server.url, "auto", args.max_tokens)
    print(f"\n==== tool calls, {len(QUESTIONS)} questions x 3 tools, greedy (same run) ====")
    print(f"{'':<20}{'answers w/ call':>16}{'failed tries':>14}{'calls':>7}{'valid':>7}"
          f"{'median s':>10}")
    for name, r in rows.items():
        print(f"{name:<20}{r['with_call']:>16}{r['broken']:>14}{r['calls']:>7}{r['valid']:>7}"
              f"{r['median_s']:>10.2f}")
    print("(failed tries: answers with no call whose text holds a call's markup or JSON)")


if __name__ == "__main__":
    main()
