"""byoc.core.architectures: the torch-free list of --arch names, kept equal to torchvision's."""

from __future__ import annotations

import pytest

from byoc.core import architectures


def test_names_are_torchvisions_classification_models():
    models = pytest.importorskip("torchvision.models")
    assert list(architectures.CLASSIFICATION) == sorted(models.list_models(module=models))


def test_models_without_a_linear_head_are_the_ones_listed():
    torch_nn = pytest.importorskip("torch.nn")
    models = pytest.importorskip("torchvision.models")
    for name in architectures.NO_LINEAR_HEAD:
        net = models.get_model(name, weights=None)
        assert not any(isinstance(m, torch_nn.Linear) for m in net.modules()), name


def test_a_typo_gets_the_closest_names():
    assert architectures.problem("resnet50") is None
    assert "did you mean resnet50" in architectures.problem("resnt50")
    assert "classifier is a convolution" in architectures.problem("squeezenet1_0")
    assert "not a torchvision classification model" in architectures.problem("bert")
