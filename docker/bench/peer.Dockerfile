# The peers for bench/: Ray Serve 2.60 (ray[serve], the server AWS's PyTorch inference containers run) or
# LitServe 0.2.19, by PEER=rayserve|litserve, serving byoc's model folder (docker/bench/PEER/app.py; the
# model code bench/peer_model.py: byoc's runtimes and preprocessing). Same base and same torch layer as
# byoc-serve and byoc-torchserve, plus ONNX Runtime: PEER_RUNTIME=torchscript (default) serves model.ts
# through torch, PEER_RUNTIME=onnx-int8 model.int8.onnx through ONNX Runtime. Built by
# `scripts/build_images.sh rayserve|litserve` (bench does it).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG TORCH_REQUIREMENTS=torch.txt
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Shared with docker/train/Dockerfile: identical lines up to here keep one torch layer.
COPY docker/requirements/${TORCH_REQUIREMENTS} /tmp/requirements/torch.txt
# Some torch wheels (the CPU ones) ship torch's own C++ unit tests: 120 MB nobody runs.
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements/torch.txt \
 && site="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site/torch/test" "$site"/torch/bin/test_* "$site"/torch/bin/*Test

ARG PEER=rayserve
COPY docker/bench/${PEER}/requirements.txt /tmp/requirements/peer.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements/peer.txt && rm -rf /tmp/requirements

# byoc itself for its runtimes and preprocessing only (its dependencies are the layers above).
COPY pyproject.toml README.md LICENSE /src/
COPY src /src/src
COPY lambda /src/lambda
RUN python3 -m pip install --no-cache-dir --no-deps /src && rm -rf /src

COPY bench/peer_model.py docker/bench/${PEER}/app.py /app/
# OpenMP threads wait passively, as in byoc's workers: the workers share the cores.
ENV PYTHONPATH=/app \
    OMP_WAIT_POLICY=PASSIVE \
    PEER_MODEL_DIR=/opt/ml/model
WORKDIR /tmp
ENTRYPOINT ["python3", "/app/app.py"]
