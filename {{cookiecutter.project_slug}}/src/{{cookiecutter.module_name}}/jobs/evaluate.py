"""`evaluate`: a registered version's metrics on the held-out part of today's data."""

from ..config import Config, registered_model_uri
from ..core import data
from ..store import gate, tracking


def evaluate(
    config: Config, version: str | None = None, alias: str = "champion"
) -> dict[str, float]:
    """Score a version (by number, else by alias) on the held-out split the config makes."""
    uri = registered_model_uri(version) if version else registered_model_uri(alias=alias)
    tracking.setup()
    parts = data.split(data.load(config.data), config.data, config.task)
    return gate.score_version(uri, parts.x_test, parts.y_test, config.task)
