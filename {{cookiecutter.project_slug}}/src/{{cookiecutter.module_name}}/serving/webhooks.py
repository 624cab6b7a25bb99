"""MLflow's registry webhooks, verified: an alias moved, so the follower checks it now.

MLflow (3.3+, on a tracking server with a SQL store) POSTs a JSON event to each
webhook registered for it, signed with the webhook's secret as its
`mlflow/webhooks/delivery.py` writes it: `X-MLflow-Signature: v1,<base64 HMAC-SHA256>`
over `<X-MLflow-Delivery-Id>.<X-MLflow-Timestamp>.<body>`. An event is trusted only
if that signature matches and its timestamp is recent (a replayed event is refused);
even then it only makes the server ask the registry, which it trusts alone.
https://mlflow.org/docs/latest/ml/webhooks/
"""

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ProjectError
from ..store.canary import CANARY, SHARE_TAG

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
# An event older (or further ahead) than this is refused: a replay, or a wrong clock.
MAX_AGE_S = 300


class WebhookError(ProjectError):
    """An event that is not MLflow's, as signed with our secret; refused with 401."""

    http_status = 401
    error_code = "UNAUTHENTICATED"


@dataclass(frozen=True)
class Event:
    """What an event is about: an entity (`model_version_alias`), an action, its data."""

    entity: str
    action: str
    data: dict[str, Any]

    def moves(self, name: str | None, alias: str) -> bool:
        """Whether the event says `alias` of model `name` was set or removed."""
        return (
            self.entity == "model_version_alias"
            and self.data.get("name") == name
            and self.data.get("alias") == alias
        )

    def concerns_rollout(self, name: str | None) -> bool:
        """Whether the event moves the canary alias of model `name`, or its share."""
        if self.entity == "model_version_tag":
            return self.data.get("name") == name and self.data.get("key") == SHARE_TAG
        return self.moves(name, CANARY)


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's signature of an event."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verified(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> Event:
    """The event, if MLflow signed it with `secret` recently; else WebhookError."""
    delivery_id = headers.get(DELIVERY_ID_HEADER.lower(), "")
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    given = headers.get(SIGNATURE_HEADER.lower(), "")
    if not (delivery_id and timestamp.isdigit() and given):
        raise WebhookError(
            f"Not an MLflow webhook: {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and "
            f"{DELIVERY_ID_HEADER} are required (register the webhook with a secret)."
        )
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE_S:
        raise WebhookError(f"The event's timestamp is more than {MAX_AGE_S} s away from now.")
    if not hmac.compare_digest(signature(secret, delivery_id, timestamp, body), given):
        raise WebhookError("The signature does not match: check MLFLOW_WEBHOOK_SECRET.")
    try:
        payload = json.loads(body)
        return Event(str(payload["entity"]), str(payload["action"]), dict(payload["data"]))
    except (ValueError, KeyError, TypeError):
        raise WebhookError("A signed event without entity, action and data.") from None
