"""Trains the reference model server's model: a small logistic regression, pure Python.

The data is synthetic and seeded, so every build trains the same model: card
transactions described by three features, fraud more likely for large amounts at
night far from home. Writes the model as JSON, with a self-check the server
answers before it reports ready. Usage: python -m testbed.modelserver.train OUT.json
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

FEATURES = ("amount_z", "night", "distance_z")
TRUE_WEIGHTS = (1.6, 1.1, 1.3)
TRUE_BIAS = -2.0


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def dataset(size: int, seed: int = 7) -> list[tuple[list[float], int]]:
    rng = random.Random(seed)  # noqa: S311 - seeded data, not secrets
    rows = []
    for _ in range(size):
        x = [rng.gauss(0, 1), float(rng.random() < 0.3), rng.gauss(0, 1)]
        p = sigmoid(sum(w * v for w, v in zip(TRUE_WEIGHTS, x, strict=True)) + TRUE_BIAS)
        rows.append((x, int(rng.random() < p)))
    return rows


Model = dict[str, Any]


def train(rows: list[tuple[list[float], int]], epochs: int = 200, rate: float = 0.5) -> Model:
    weights, bias = [0.0] * len(FEATURES), 0.0
    for _ in range(epochs):  # full-batch gradient descent: small data, exact and repeatable
        grad_w, grad_b = [0.0] * len(FEATURES), 0.0
        for x, y in rows:
            error = sigmoid(sum(w * v for w, v in zip(weights, x, strict=True)) + bias) - y
            grad_w = [g + error * v for g, v in zip(grad_w, x, strict=True)]
            grad_b += error
        weights = [w - rate * g / len(rows) for w, g in zip(weights, grad_w, strict=True)]
        bias -= rate * grad_b / len(rows)
    return {"features": list(FEATURES), "weights": weights, "bias": bias}


def accuracy(model: Model, rows: list[tuple[list[float], int]]) -> float:
    def predict(x: list[float]) -> int:
        z = sum(w * v for w, v in zip(model["weights"], x, strict=True)) + model["bias"]
        return int(sigmoid(z) >= 0.5)

    return sum(predict(x) == y for x, y in rows) / len(rows)


def trained_model() -> Model:
    """The model file's content: weights, held-out accuracy and the self-check."""
    model = train(dataset(2000))
    model["accuracy"] = round(accuracy(model, dataset(1000, seed=11)), 4)
    probe = [3.0, 1.0, 2.5]  # a large night-time purchase far from home
    model["self_check"] = {"inputs": probe, "expect_fraud": True}
    return model


def main() -> None:
    out = Path(sys.argv[1])
    model = trained_model()
    out.write_text(json.dumps(model, indent=2) + "\n")
    print(f"trained: held-out accuracy {model['accuracy']}, written to {out}")


if __name__ == "__main__":
    main()
