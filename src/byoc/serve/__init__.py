"""The serving side: decode requests, run the model, encode answers, on multi-model-server.

Modules, in the order a request meets them: front (public port, /ping, size limit),
mms (the model server behind it), handler (initialize / preprocess / inference /
postprocess), codec (bodies <-> images and predictions), imaging (image -> tensor),
errors (the one map from typed errors to status codes and JSON bodies).
Nothing here imports the training code.
"""
