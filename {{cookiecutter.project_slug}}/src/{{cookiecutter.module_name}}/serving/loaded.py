"""A model loaded in a process of its own, ready to serve: the served model's or the shadow's."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError
from ..runtime.inference_log import LogSettings
from ..runtime.live import LiveSettings
from ..runtime.model import ServedModel
from ..settings import ServingConfig
from .model_process import WARM_UP, ModelSettings
from .predictor import Predictor
from .protocol import parse


@dataclass
class Loaded:
    """A model being served: what it is, the process holding it, its live drift."""

    model: ServedModel
    predictor: Predictor
    live: LiveSettings | None
    # One batch at a time on a model process; a swap closes it after the batch in flight.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Scored:
    """A request's predictions, and the version of the model that made them."""

    predictions: Any
    version: str | None


async def start_process(settings: ModelSettings) -> Predictor:
    """Start a model process and wait until its model is loaded; stop it if it cannot be."""
    predictor = Predictor(settings)
    try:
        await predictor.wait_ready()
    except BaseException:
        await asyncio.to_thread(predictor.close)
        raise
    return predictor


async def warm(loaded: Loaded) -> None:
    """Score the model's own input example through the serving path (`serve --check`'s)."""
    example = await asyncio.to_thread(loaded.model.serving_example)
    rows = parse(example, "application/json", loaded.model.schema, len(example))
    [outcome] = await loaded.predictor.predict([(WARM_UP, rows)])
    if isinstance(outcome, Exception):
        version = loaded.model.version
        raise ModelError(f"Version {version} cannot score its input example: {outcome}")


async def discard(loaded: Loaded) -> None:
    """Stop a model process that never served (its version failed to warm)."""
    await asyncio.to_thread(loaded.predictor.close)


def log_settings(
    settings: ServingConfig, model: ServedModel, unnamed: str, kind: str = "inference"
) -> LogSettings | None:
    """The inference log of a model process, if INFERENCE_LOG_DIR is set.

    `unnamed` names a model that is not a registered one (its URI).
    """
    if settings.inference_log_dir is None:
        return None
    budget = int(settings.inference_log_max_mb * 1024 * 1024)
    name, version = model.name or unnamed, model.version or ""
    return LogSettings(settings.inference_log_dir, budget, name, version, kind=kind)


async def close_after_turn(loaded: Loaded) -> None:
    """Stop a model process once the batch it is predicting, if any, is answered."""
    async with loaded.turn:
        await asyncio.to_thread(loaded.predictor.close)
