"""Every HTTP header name the serving processes share, spelled once.

The front, the model server's launcher, the batching framer and the handler all name the
same headers; a name copied into each of them drifts. Standard library only (nothing at
all, in fact): the front imports this and must never load torch.

Names are in their canonical spelling, as sent. Readers compare them case-insensitively:
the handler looks them up lower-cased (byoc.serve.handler.Request.header).
"""

from __future__ import annotations

CONTENT_TYPE = "Content-Type"
ACCEPT = "Accept"
# SageMaker passes this one through from the caller untouched; the handler reads `top_k=N` from it.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# Sent only by the front (never forwarded from a client): a health probe the handler answers
# without touching the model.
PROBE = "X-Byoc-Probe"
# Sent only by the front (never forwarded from a client): the body is a framed batch of this
# many requests (byoc.serve.batching).
BATCH = "X-Byoc-Batch"

# What the front passes on of a client's request: exactly the headers the handler reads.
FORWARDED = (CONTENT_TYPE, ACCEPT, CUSTOM_ATTRIBUTES)
