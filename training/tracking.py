"""MLflow set-up: a team's server when ``MLFLOW_TRACKING_URI`` is set, an embedded store otherwise.

The embedded store is a SQLite database and an artifact folder under the project
home (``$CREATIVE_QA_HOME``, default ``~/.creative-qa``), never the current
directory, so runs do not land wherever the user happens to stand.

Creating (or upgrading) that SQLite store runs MLflow's schema migrations; two
processes doing it at once corrupt each other's migration (``duplicate column name``),
so the first contact with the embedded store, and experiment creation, happen under
a file lock next to it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

# NOTE: these machines (and many clusters) have no route out; don't let MLflow try to phone home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Our CLI prints JSON on stdout; MLflow would otherwise write run links into it.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from filelock import FileLock  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

import mlflow  # noqa: E402
from creative_qa.paths import tracking_uri  # noqa: E402

log = logging.getLogger(__name__)


def sqlite_artifact_root(uri: str) -> str | None:
    """Where a SQLite store's experiments keep their artifacts: beside the database file.

    NOTE: MLflow's own default for a ``sqlite:///`` store is ``./mlruns`` under whatever folder
    the process runs in, so artifacts would scatter over working directories (a benchmark run
    from the checkout wrote them into it). Other stores keep MLflow's default."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()


LOCK_TIMEOUT_S = 600


def run_name(prefix: str) -> str:
    """A fresh run name, ``<prefix>-<date>-<time>-<4 hex>``.

    NOTE: MLflow draws its own names from Python's ``random``, which training seeds first:
    every run would get the same name. ``secrets`` is not seeded by anyone."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def setup(experiment: str, store: str | None = None) -> str:
    """Point MLflow at the right store and return the experiment id (created if needed).

    ``store``: a tracking URI of the caller's own (a benchmark's private store, its registry too)
    instead of the configured one."""
    uri = store or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri if store else os.environ.get("MLFLOW_REGISTRY_URI", uri))
    if not uri.startswith("sqlite:///"):
        return _experiment(experiment, uri)
    # NOTE: the store is created/migrated on first contact in each process; serialise that.
    db = Path(uri[len("sqlite:///") :])
    lock = FileLock(str(db.with_name(db.name + ".lock")), timeout=LOCK_TIMEOUT_S)
    with lock:
        return _experiment(experiment, uri)


def _experiment(experiment: str, uri: str) -> str:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    artifact_location = sqlite_artifact_root(uri)
    log.info("creating MLflow experiment %r at %s", experiment, uri)
    return client.create_experiment(experiment, artifact_location=artifact_location)
