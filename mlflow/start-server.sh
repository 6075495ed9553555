#!/usr/bin/env bash
# Start an MLflow tracking server for a team: SQLite (or any SQLAlchemy URI) for runs and the
# registry, a folder (or s3://, gs://) for artifacts, proxied by the server.
#   mlflow/start-server.sh                 # 127.0.0.1:5000, data under ~/.creative-qa/server
#   BACKEND_URI=postgresql://... ARTIFACTS=s3://bucket/mlflow HOST=0.0.0.0 mlflow/start-server.sh
# Then point clients at it:  export MLFLOW_TRACKING_URI=http://HOST:PORT
set -euo pipefail
ROOT="${CREATIVE_QA_HOME:-$HOME/.creative-qa}/server"
mkdir -p "$ROOT"
export MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" \
  --backend-store-uri "${BACKEND_URI:-sqlite:///$ROOT/mlflow.db}" \
  --artifacts-destination "${ARTIFACTS:-$ROOT/artifacts}" \
  --workers "${WORKERS:-2}"
