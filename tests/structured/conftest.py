"""The JobCandidate schema (the example users copy) and a grammar backend on the default
model's tokenizer."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_structured import JobCandidate

JOB_SCHEMA = JobCandidate.model_json_schema()

JOB_PROMPTS = [
    "Alice is a 29 year old data engineer who knows Python and SQL, with 5 years of experience. "
    "Is she suitable for a backend developer job?",
    "Bob is 41, a carpenter for 20 years, who also knows some Excel. Can he be a data scientist?",
    "Chen, 23, just graduated in computer science and knows Java and C++. Junior developer job?",
    "Dana is a 35 year old nurse with 12 years of experience. Is she suitable for an ICU role?",
    "Evan, 52, has managed restaurants for 25 years. Is he a fit for a hotel manager position?",
    "Fatima is 30 and has 8 years of experience as a Rust and Go developer. Senior engineer?",
    "Gus is 19, knows Photoshop and Figma, 1 year of freelance work. Is he a fit for UX design?",
    "Hana, 45, is an accountant with 20 years of experience in tax law. CFO position?",
    "Ivan is 27, a high school math teacher for 4 years. Is he suitable as a quant analyst?",
    "Julia, 33, is a pilot with 10 years of flying. Is she suitable as an air traffic controller?",
]


def job_messages(prompt: str) -> list[dict]:
    return [{"role": "system", "content": "You assess job candidates. Reply in JSON like "
             '{"candidate": {"name": "Ann", "age": 30, "skills": ["Excel", "SQL"], '
             '"experience_years": 3}, "suitable_for_position": true, '
             '"reason": "She knows the tools the job needs."}'},
            {"role": "user", "content": prompt}]


@pytest.fixture(scope="session")
def grammar_backend(default_checkpoint):
    from jaxengine.structured import GrammarBackend

    return GrammarBackend(default_checkpoint.tokenizer, 49152, [2])


def job_schema_json() -> str:
    return json.dumps(JOB_SCHEMA)
