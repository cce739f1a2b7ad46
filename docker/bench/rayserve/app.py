"""The Ray Serve peer for bench/ (byoc-rayserve:latest): one deployment with Ray Serve's dynamic batching
(`@serve.batch`) behind a FastAPI ingress, as Ray Serve's documentation sets up a model server: PEER_WORKERS
replicas of PEER_THREADS threads each, on a single-node Ray started in this process. The model code is
bench/peer_model.py (byoc's runtimes and preprocessing); POST /invocations takes the raw image body, as
byoc-serve does, and GET /ping answers once the application is running."""

import logging
import os
import signal

import peer_model
import ray
from fastapi import FastAPI, Request, Response
from ray import serve

settings = peer_model.Settings.from_env()
app = FastAPI()


@serve.deployment(
    num_replicas=settings.workers,
    ray_actor_options={"num_cpus": settings.threads},
    # As many requests per replica as a batch takes, and one batch waiting behind the running one.
    max_ongoing_requests=2 * settings.max_batch,
)
@serve.ingress(app)
class Classifier:
    def __init__(self) -> None:
        self.runtime = peer_model.load(settings)

    @app.get("/ping")
    def ping(self) -> dict:
        return {"status": "ok"}

    @app.post("/invocations")
    async def invocations(self, request: Request) -> Response:
        status, body = await self.predict(await request.body())
        return Response(body, status_code=status, media_type="application/json")

    @serve.batch(max_batch_size=settings.max_batch, batch_wait_timeout_s=settings.batch_wait_ms / 1e3)
    async def predict(self, bodies: list[bytes]) -> list[tuple[int, bytes]]:
        return peer_model.predict(self.runtime, bodies)


def main() -> None:
    # One node on this container's cores: logical CPUs enough for every replica's threads.
    cpus = max(os.cpu_count() or 1, settings.workers * settings.threads)
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    serve.start(http_options={"host": "127.0.0.1", "port": settings.port})
    serve.run(Classifier.bind(), route_prefix="/")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})  # docker stop: end with the container
    serve.shutdown()


if __name__ == "__main__":
    main()
