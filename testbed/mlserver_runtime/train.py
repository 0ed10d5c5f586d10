"""Trains the MLServer images' model at build time, inside the image's root filesystem.

`python3 -m mlserver_runtime.train FOLDER` reads FOLDER/dataset.json (the reference
model server's seeded fraud data: three features, rows and labels, and a held-out set;
testbed/modelserver/train.py makes it) and writes, with the image's own scikit-learn
and joblib, so that the server unpickles what the same versions pickled:

- model.joblib: a logistic regression fitted to it (lbfgs, deterministic);
- wronganswers.joblib: the same with its coefficients and intercept negated, so every
  probability p becomes 1 - p and every predicted class flips;
- summary.json: versions, coefficients, held-out accuracy and both models' answers
  to the probe row.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

PROBE = [3.0, 1.0, 2.5]  # a large night-time purchase far from home


def answers(model: Any) -> dict[str, Any]:
    return {
        "predict": model.predict([PROBE]).tolist(),
        "predict_proba": model.predict_proba([PROBE]).tolist(),
    }


def main() -> None:
    folder = Path(sys.argv[1])
    data = json.loads((folder / "dataset.json").read_text())
    rows, labels = np.array(data["rows"]), np.array(data["labels"])
    model = LogisticRegression(random_state=0).fit(rows, labels)
    wrong = copy.deepcopy(model)
    wrong.coef_, wrong.intercept_ = -model.coef_, -model.intercept_
    joblib.dump(model, folder / "model.joblib")
    joblib.dump(wrong, folder / "wronganswers.joblib")
    held_out = np.array(data["held_out_rows"]), np.array(data["held_out_labels"])
    summary = {
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "numpy": np.__version__,
        "features": data["features"],
        "coef": model.coef_.tolist(),
        "intercept": model.intercept_.tolist(),
        "held_out_accuracy": round(float(model.score(*held_out)), 4),
        "probe": PROBE,
        "good": answers(model),
        "wronganswers": answers(wrong),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
