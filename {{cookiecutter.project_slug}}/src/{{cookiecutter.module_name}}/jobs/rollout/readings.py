"""What the servers counted: their /metrics (SERVING_URLS) or a Prometheus that scrapes them.

Either way a reading is the same: each counter `rollout` needs, summed over every
server (and every worker: a server's /metrics sums its own), and the canary share
each server applies now. `rollout` takes one reading at the start of a step and one
at its end, and judges the difference (`guardrails.py`).
"""

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from ...errors import RolloutError
from ...settings import locations

# Each metric `rollout` reads, and the labels it keeps (the others are summed away).
WANTED = {
    "model_requests_total": ("role", "outcome"),
    "model_batch_duration_seconds_bucket": ("role", "le"),
    "canary_compared_rows_total": (),
    "canary_agreeing_rows_total": (),
    "canary_abs_delta_total": (),
    "canary_abs_champion_total": (),
    "canary_predictions_total": ("role", "bin"),
}
TIMEOUT_S = 10
# A sample: the metric's name and its kept labels, in WANTED's order.
Key = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Reading:
    """Counters summed over the servers, and the share each server gives each canary version."""

    totals: dict[Key, float]
    shares: dict[str, dict[str, float]]

    def since(self, earlier: "Reading") -> dict[Key, float]:
        """How much each counter grew since `earlier` (a server restarted counts from 0)."""
        return {
            key: max(value - earlier.totals.get(key, 0.0), 0.0)
            for key, value in self.totals.items()
        }


class Source(Protocol):
    """Where the readings come from."""

    def read(self) -> Reading:
        """The servers' counters and shares, now."""
        ...


def get(url: str) -> str:
    """The body of a GET, or RolloutError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return str(response.read().decode())
    except (OSError, ValueError) as error:
        raise RolloutError(f"Cannot read {url}: {error}.") from None


class Servers:
    """Each server's own /metrics."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = [url.rstrip("/") for url in urls]

    def read(self) -> Reading:
        """Scrape every server; sum what they counted."""
        totals: dict[Key, float] = {}
        shares: dict[str, dict[str, float]] = {}
        for url in self.urls:
            shares[url] = {}
            for family in text_string_to_metric_families(get(f"{url}/metrics")):
                for sample in family.samples:
                    if sample.name == "canary_share":
                        shares[url][sample.labels.get("version", "")] = sample.value
                    elif sample.name in WANTED:
                        key = (
                            sample.name,
                            tuple(sample.labels.get(k, "") for k in WANTED[sample.name]),
                        )
                        totals[key] = totals.get(key, 0.0) + sample.value
        return Reading(totals, shares)


class Prometheus:
    """A Prometheus scraping every server: `sum by` its labels of each metric."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def query(self, expression: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: their labels and values."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        answer = json.loads(get(url))
        if answer.get("status") != "success":
            raise RolloutError(f"Prometheus refused {expression!r}: {answer.get('error')}.")
        return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]

    def read(self) -> Reading:
        """Query each metric summed over the servers, and each server's canary share."""
        totals: dict[Key, float] = {}
        for name, labels in WANTED.items():
            for metric, value in self.query(f"sum by ({', '.join(labels)}) ({name})"):
                totals[(name, tuple(metric.get(k, "") for k in labels))] = value
        # Every server that is up, with the shares it reports (none: no canary there).
        shares: dict[str, dict[str, float]] = {
            metric.get("instance", ""): {} for metric, _ in self.query("serving_ready")
        }
        for metric, value in self.query("canary_share"):
            shares.setdefault(metric.get("instance", ""), {})[metric.get("version", "")] = value
        return Reading(totals, shares)


def configured_source() -> Source:
    """SERVING_URLS if set, else PROMETHEUS_URL; RolloutError saying to set one if neither is."""
    where = locations()
    urls = [url.strip() for url in where.serving_urls.split(",") if url.strip()]
    if urls:
        return Servers(urls)
    if where.prometheus_url:
        return Prometheus(where.prometheus_url)
    raise RolloutError(
        "rollout reads the servers' metrics: set SERVING_URLS (their base URLs, "
        "comma-separated, e.g. http://127.0.0.1:8080) or PROMETHEUS_URL."
    )
