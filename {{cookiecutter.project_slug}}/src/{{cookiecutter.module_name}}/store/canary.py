"""A rollout's state in the registry: the `canary` alias, and the share of requests it answers.

Every server following the registry reads this state by itself (`serving/canary.py`),
so all replicas agree without a mesh or a coordinator; `rollout` (`jobs/rollout/`)
writes it. The share is a tag of the canary version, so that MLflow's webhook
(`model_version_tag.set`) can tell the servers at once that it changed.
"""

from dataclasses import dataclass

from mlflow import MlflowClient

from ..config import PROJECT_SLUG
from .registry import version_by_alias

CANARY = "canary"
# The canary version's tag: the share of requests it answers, from 0 to 1.
SHARE_TAG = "rollout_share"
# The tag a finished rollout leaves on its version: how it ended, why, and its run.
ROLLOUT_TAG = "rollout"
# The roles of the models a request meets during a rollout, as the servers' metrics
# label them (`model_requests_total{role=...}`) and `rollout` reads them.
CHAMPION_ROLE, CANARY_ROLE = "champion", "canary"
# The words ROLLOUT_TAG starts with: a server counts each end by them.
PROMOTED, ROLLED_BACK = "promoted", "rolled back"


@dataclass(frozen=True)
class CanaryState:
    """The version under rollout and the share of requests it answers."""

    version: str
    share: float


def canary_state(client: MlflowClient, name: str = PROJECT_SLUG) -> CanaryState | None:
    """The canary of model `name`, or None when no rollout is under way."""
    version = version_by_alias(client, CANARY, name)
    if version is None:
        return None
    try:
        share = float(version.tags.get(SHARE_TAG, 0))
    except ValueError:  # a tag set by hand to something else: no traffic, rather than a guess
        share = 0.0
    return CanaryState(str(version.version), min(max(share, 0.0), 1.0))


def start_canary(client: MlflowClient, version: str, share: float) -> None:
    """Make `version` the canary, answering `share` of the requests."""
    set_share(client, version, share)
    client.set_registered_model_alias(PROJECT_SLUG, CANARY, version)


def set_share(client: MlflowClient, version: str, share: float) -> None:
    """Give the canary `share` of the requests."""
    client.set_model_version_tag(PROJECT_SLUG, version, SHARE_TAG, f"{share:g}")


def end_canary(client: MlflowClient, version: str, outcome: str) -> None:
    """No more traffic to the canary: its share first, then its alias; say how it ended."""
    set_share(client, version, 0.0)
    client.set_model_version_tag(PROJECT_SLUG, version, ROLLOUT_TAG, outcome)
    client.delete_registered_model_alias(PROJECT_SLUG, CANARY)
    client.delete_model_version_tag(PROJECT_SLUG, version, SHARE_TAG)


def rollout_outcome(client: MlflowClient, name: str, version: str) -> str:
    """How the rollout of `version` ended, as its tag says: promoted, rolled back, or ended."""
    tag = client.get_model_version(name, version).tags.get(ROLLOUT_TAG, "")
    return next((word for word in (PROMOTED, ROLLED_BACK) if tag.startswith(word)), "ended")
