"""What both images share: the artifact format, the one preprocessing (image opening included),
the model architectures by name, typed user errors and atomic writes. Nothing here imports
training or serving code; torchvision is needed only to rebuild a model from its state dict."""
