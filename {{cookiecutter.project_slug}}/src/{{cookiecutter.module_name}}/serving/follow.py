"""Following the registry: a server on `models:/<name>@<alias>` serves the alias' version.

Every MODEL_REFRESH_S seconds, and at once when MLflow's webhook says an alias moved
(`webhooks.py`), the follower asks the registry which version the alias names. A new
version is loaded in a process of its own and warmed with its input example, then
swapped in (`Service.swap`); until then the old one answers every request. A version
that cannot load or score its example is never served: the server keeps the old one,
logs why and counts it, and tries that version again only once the alias moves on.
Each worker and each replica follows by itself: there is nothing to coordinate.
"""

import asyncio
import contextlib
import logging
from typing import Protocol

from ..runtime.model import REGISTERED, ServedModel, alias_version, describe_model
from ..settings import ServingConfig
from .loaded import Loaded, discard, warm

log = logging.getLogger(__name__)


def follows(uri: str, settings: ServingConfig) -> bool:
    """Whether a server on `uri` follows the registry: an alias, and MODEL_REFRESH_S above 0.

    A version number (`models:/<name>/3`) or a directory (an image's baked model) is
    pinned: it names one model, whatever the registry says.
    """
    return settings.model_refresh_s > 0 and uri.startswith(REGISTERED) and "@" in uri


class Swappable(Protocol):
    """What the follower needs of the service (`Service`): its model, and how to swap it."""

    uri: str

    def current_version(self) -> str | None:
        """The version serving now (None: none yet)."""
        ...

    def counted(self, outcome: str) -> None:
        """Count a new version of the alias: "swapped" in, or "refused"."""
        ...

    async def load(self, model: ServedModel) -> Loaded:
        """Start a process with `model`."""
        ...

    async def swap(self, loaded: Loaded) -> None:
        """Serve the loaded model from the next batch on."""
        ...


class Follower:
    """The task that keeps a service on the version its alias names."""

    def __init__(self, service: Swappable, refresh_s: float) -> None:
        self.service, self.refresh_s = service, refresh_s
        self.nudged = asyncio.Event()
        # The last version refused (it failed to load or to warm): not tried again.
        self.refused: str | None = None

    @property
    def alias(self) -> str:
        """The alias followed."""
        return self.service.uri.partition("@")[2]

    def check_now(self) -> None:
        """Check the alias at once (a webhook said it moved), not at the next tick."""
        self.nudged.set()

    async def run(self) -> None:
        """Check the alias every `refresh_s` seconds, or when nudged, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.nudged.wait(), self.refresh_s)
            self.nudged.clear()
            try:
                await self.check()
            except Exception:  # the registry may be down for a while: the old model serves
                log.exception("Checking %s in the registry failed.", self.service.uri)

    async def check(self) -> None:
        """Swap to the alias' version if it is new and sound."""
        known = (self.service.current_version(), self.refused)
        # The alias alone first: most checks find it where it was, with one registry query.
        if await asyncio.to_thread(alias_version, self.service.uri) in known:
            return
        named = await asyncio.to_thread(describe_model, self.service.uri)
        if named.version in known:  # moved back meanwhile
            return
        log.info("%s now names version %s: loading it.", self.service.uri, named.version)
        try:
            loaded = await self.service.load(named)
        except Exception as error:
            self.refuse(named.version, error)
            return
        try:
            await warm(loaded)
        except Exception as error:
            await discard(loaded)
            self.refuse(named.version, error)
            return
        self.refused = None
        self.service.counted("swapped")
        await self.service.swap(loaded)

    def refuse(self, version: str | None, error: Exception) -> None:
        """Keep the old model; say why the new one is not served, and count it."""
        log.error("Version %s is not served, the old one stays: %s", version, error)
        self.refused = version
        self.service.counted("refused")
