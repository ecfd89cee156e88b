"""Splitting long text into events that fit the server's limits (no server needed for the measuring)."""

from __future__ import annotations

import json
import random

from jobwire.worker.outbox import fit_text


def json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def test_fit_text_takes_the_longest_prefix_whose_json_fits_the_budget() -> None:
    rng = random.Random(18)
    alphabet = ['a', 'é', '"', '\\', '\n', '\x01', '€', '🎉', ' ']
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        budget = rng.randint(0, 120)
        end, size = fit_text(text, budget)
        assert size == json_size(text[:end]) and size <= budget
        # One more character would not fit.
        assert end == len(text) or json_size(text[: end + 1]) > budget
