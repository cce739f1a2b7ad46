import json

import pytest
import torch

from byoc import artifact, model
from byoc.errors import ArtifactError, ConfigError


@pytest.mark.parametrize("arch, head", [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"),
                                         ("efficientnet_b0", "classifier.1"), ("vit_b_16", "heads.head")])
def test_factory_replaces_head(arch, head):
    net = model.build(arch, 7)
    assert model.head_name(net) == head
    assert net.get_submodule(head).out_features == 7


def test_freeze_backbone_trains_only_the_head():
    net = model.create("resnet18", 3, freeze_backbone=True)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_unknown_arch():
    with pytest.raises(ConfigError, match="unknown arch"):
        model.build("resnet9000", 3)


def test_pretrained_without_network_says_what_to_do(monkeypatch):
    from torchvision.models import ResNet18_Weights

    def offline(self, *a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(ConfigError, match="pretrained=false.*weights"):
        model.create("resnet18", 3, pretrained=True)


def test_weights_file_loads_backbone(tmp_path):
    source = model.build("resnet18", 1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = model.create("resnet18", 5, weights_file=path)
    assert torch.equal(net.conv1.weight, source.conv1.weight)
    bad = tmp_path / "other.pth"
    torch.save(model.build("mobilenet_v3_small", 1000).state_dict(), bad)
    with pytest.raises(ConfigError, match="do not fit resnet18"):
        model.create("resnet18", 5, weights_file=bad)


def _meta(labels=("a", "b", "c")):
    return artifact.ModelMeta(arch="resnet18", labels=list(labels), preprocessing=artifact.Preprocessing.for_size(32))


def test_artifact_round_trip(tmp_path):
    net = model.build("resnet18", 3).eval()
    artifact.save(tmp_path, net, _meta())
    loaded, meta = artifact.load(tmp_path)
    assert meta.labels == ["a", "b", "c"] and meta.preprocessing.resize_size == 37
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x))
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["format"] == "byoc-image-classifier" and doc["num_classes"] == 3 and "torch" in doc["created_with"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.json").unlink(), "no model.json"),
    (lambda d: (d / "model.pt").unlink(), "no model.pt"),
    (lambda d: (d / "model.pt").write_bytes(b"garbage"), "corrupt"),
    (lambda d: (d / "model.json").write_text("{"), "not valid JSON"),
    (lambda d: (d / "model.json").write_text(json.dumps({"format": "other"})), "not a byoc-image-classifier"),
    (lambda d: (d / "model.json").write_text((d / "model.json").read_text().replace('"c"', '"c", "d"')), "does not match"),
])
def test_broken_artifacts_give_one_line_reasons(tmp_path, damage, message):
    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    damage(tmp_path)
    with pytest.raises(ArtifactError, match=message) as err:
        artifact.load(tmp_path)
    assert "\n" not in str(err.value)
