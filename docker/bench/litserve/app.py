"""The LitServe peer for bench/ (byoc-litserve:latest): a LitAPI with LitServe's dynamic batching
(max_batch_size, batch_timeout) and PEER_WORKERS inference workers (workers_per_device) of PEER_THREADS
threads each on the CPU, as LitServe's documentation sets up a model server. The model code is
bench/peer_model.py (byoc's runtimes and preprocessing).

The one change from LitServe's defaults: decode_request takes the raw request body (a FastAPI `Body` of
bytes) so that POST /invocations accepts the raw image/jpeg the bench sends every server; LitServe's
default reads a JSON or multipart form body. GET /ping (LitServe's health check, moved to byoc's path)
answers 200 once every worker has loaded the model. (No `from __future__ import annotations` here:
FastAPI must see decode_request's annotation itself, not its text.)"""

import json
import os
from typing import Annotated

import litserve as ls
import peer_model
from fastapi import Body, HTTPException

settings = peer_model.Settings.from_env()
WORKER_NAME = "peer-worker"  # bench.serving.PEERS["litserve"].worker_marker


class Classifier(ls.LitAPI):
    def setup(self, device: str) -> None:
        # The worker's process name, for bench's memory per worker: its command line is multiprocessing's.
        with open(f"/proc/{os.getpid()}/comm", "w") as comm:  # the process's, from whichever thread
            comm.write(WORKER_NAME)
        self.runtime = peer_model.load(settings)

    def decode_request(self, request: Annotated[bytes, Body(media_type="image/jpeg")]) -> bytes:
        return request

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return inputs  # the images are decoded in predict, each request alone

    def predict(self, bodies: list[bytes]) -> list[tuple[int, bytes]]:
        return peer_model.predict(self.runtime, bodies)

    def unbatch(self, outputs: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        return outputs

    def encode_response(self, output: tuple[int, bytes]) -> dict:
        status, body = output
        if status != 200:
            raise HTTPException(status_code=status, detail=json.loads(body)["error"])
        return json.loads(body)


def main() -> None:
    api = Classifier(
        max_batch_size=settings.max_batch, batch_timeout=settings.batch_wait_ms / 1e3, api_path="/invocations"
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=settings.workers, healthcheck_path="/ping")
    server.run(host="127.0.0.1", port=settings.port, generate_client_file=False)


if __name__ == "__main__":
    main()
