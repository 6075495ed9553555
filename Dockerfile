# GPU serving image: onnxruntime-gpu on a CUDA runtime, the core and serving/ only (no torch).
# Build:  docker build -t creative-qa-serve .
# Run:    docker run --gpus all -p 8000:8000 -v $PWD/model.onnx:/models/model.onnx creative-qa-serve
#         (or -e CREATIVE_QA_MODEL=models:/creative-qa@champion -e MLFLOW_TRACKING_URI=http://mlflow:5000)
#         -e CREATIVE_QA_ADMIN_TOKEN=... enables POST /v1/admin/reload; every setting is a
#         CREATIVE_QA_* variable (docs/serving.md): queue, batching, decode limits, threads.
# NOTE: Docker cannot run on the project's dev/CI machines; this file is kept correct by construction.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    CREATIVE_QA_MODEL=/models/model.onnx \
    CREATIVE_QA_HOME=/home/app/.creative-qa \
    CREATIVE_QA_MAX_QUEUE=64 \
    CREATIVE_QA_MAX_BATCH_SIZE=32 \
    CREATIVE_QA_BATCH_BUCKETS=1,2,4,8,16,32 \
    CREATIVE_QA_MAX_DURATION_S=600 \
    CREATIVE_QA_MAX_FRAME_PIXELS=64000000

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv curl \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY creative_qa ./creative_qa
COPY serving ./serving
# serving/static/ (the GET / page) ships as package data.
# The core pulls the CPU onnxruntime; swap it for the GPU build (which also runs on CPU).
RUN pip install '.[serve]' \
 && pip uninstall -y onnxruntime \
 && pip install 'onnxruntime-gpu>=1.20'

RUN useradd --create-home --uid 10001 app && mkdir -p /models && chown app /models
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["creative-qa", "serve", "--host", "0.0.0.0", "--port", "8000"]
