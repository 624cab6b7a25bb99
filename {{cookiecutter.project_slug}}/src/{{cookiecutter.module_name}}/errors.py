"""Errors: the one contract between the package and the people who run it.

A `ProjectError`'s message says what to change. The command line shows it on one line
and exits with its `exit_status` (`cli/__init__.py`); the server answers it with its
`http_status` and MLflow's `error_code` (`serving/app.py`). Any other exception is a
bug: the command line shows its traceback, the server a generic 500 that hides it.
"""


class ProjectError(Exception):
    """Something the user can fix; the message says what."""

    exit_status = 1
    http_status = 400
    # MLflow's name for the error, as its scoring server and clients use it.
    error_code = "BAD_REQUEST"


class ConfigError(ProjectError):
    """The configuration (a file, an option, a search space) cannot be used as it is."""


class DataError(ProjectError):
    """The data cannot be trained on as it is."""


class EstimatorError(ProjectError):
    """`[estimator]` names something that is not a usable scikit-learn estimator."""


class VersioningError(ProjectError):
    """The code or the data cannot be versioned as asked."""


class RegistryError(ProjectError):
    """The registry cannot do what was asked (no champion, no such version, ...)."""


class StoreError(ProjectError):
    """A database the project keeps state in (an Optuna study) cannot be opened."""


class ModelError(ProjectError):
    """The model cannot be loaded or used as asked (no signature, no input example, ...)."""


class ReproduceError(ProjectError):
    """A version cannot be rebuilt, or its rebuild does not match."""


class MonitorError(ProjectError):
    """An inference log or an outcomes file cannot be judged as given."""


class RolloutError(ProjectError):
    """A rollout cannot start or go on (no servers to read, a rollout under way, ...)."""


class BatchJobError(ProjectError):
    """A batch job cannot run as asked. Nothing was written."""


class PayloadError(ProjectError):
    """A request cannot be scored as sent."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.http_status = status
        self.error_code = code

    def __reduce__(self) -> tuple[type["PayloadError"], tuple[str, int, str]]:
        # Raised in the model process too: it must cross the pipe intact.
        return PayloadError, (str(self), self.http_status, self.error_code)


class ModelUnavailableError(ProjectError):
    """The model process is gone; a new one is started for the next requests."""

    http_status = 503
    error_code = "INTERNAL_ERROR"


class ScoringError(ProjectError):
    """The server failed while scoring a batch; its requests get a 500."""

    http_status = 500
    error_code = "INTERNAL_ERROR"
