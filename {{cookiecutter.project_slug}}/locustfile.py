"""Load-test a running server (yours, or a deployment) with Locust.

Each simulated user posts rows of the configured CSV to /invocations, one to
five at a time, and fails the request unless every row gets a prediction:

    uv run --group load locust --host http://127.0.0.1:8080            # web UI on :8089
    uv run --group load locust --host http://127.0.0.1:8080 --headless --users 16 --run-time 1m

Locust is in the `load` dependency group, installed only by `--group load`.
https://docs.locust.io/en/stable/
"""

import json
import random

import pandas as pd
from locust import FastHttpUser, between, task

from {{ cookiecutter.module_name }}.config import load_config

CONFIG = load_config()
# JSON has no NaN: a missing value travels as null.
ROWS = (
    pd.read_csv(CONFIG.data.path)
    .drop(columns=CONFIG.data.target)
    .astype(object)
    .pipe(lambda frame: frame.where(frame.notna(), None))
    .to_dict(orient="records")
)


class Caller(FastHttpUser):
    """A client of the model: a request, then up to 50 ms of thought."""

    wait_time = between(0, 0.05)

    @task
    def predict(self) -> None:
        """Score a few random rows and check that each got a prediction."""
        rows = random.sample(ROWS, k=random.randint(1, 5))
        with self.client.post(
            "/invocations",
            data=json.dumps({"dataframe_records": rows}),
            headers={"Content-Type": "application/json"},
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text}")
            elif len(response.json()["predictions"]) != len(rows):
                response.failure("not one prediction a row")
