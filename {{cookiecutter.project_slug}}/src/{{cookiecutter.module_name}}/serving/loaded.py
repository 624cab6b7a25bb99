"""A model loaded in a process of its own, ready to serve: the served model's or the shadow's."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError
from ..runtime.live import LiveSettings
from ..runtime.model import ServedModel
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


async def close_after_turn(loaded: Loaded) -> None:
    """Stop a model process once the batch it is predicting, if any, is answered."""
    async with loaded.turn:
        await asyncio.to_thread(loaded.predictor.close)
