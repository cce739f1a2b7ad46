"""byoc.core.pretrained (torchvision's weights files, checked without torch) and the training image's
'weights' channel (byoc.training.model): the right file loads, any other is refused with its reason."""

from __future__ import annotations

import pytest

from byoc.core import pretrained
from byoc.core.errors import ConfigError

torch = pytest.importorskip("torch")
models = pytest.importorskip("torchvision.models")


def test_files_are_torchvisions_published_weights():
    from byoc.core import architectures

    for arch in architectures.CLASSIFICATION:
        weights = models.get_model_weights(arch)
        published = [weights.DEFAULT.url] + [w.url for w in weights if w is not weights.DEFAULT]
        assert [pretrained.URL_BASE + f for f in pretrained.FILES[arch]] == published, arch
        assert pretrained.default_url(arch) == weights.DEFAULT.url


def _state_file(path, arch="resnet18"):
    torch.save(models.get_model(arch, weights=None).state_dict(), path)
    return path


def _published_as(monkeypatch, path, arch="resnet18"):
    """`path` renamed as if torchvision had published it for `arch`: ARCH-<its SHA-256's start>.pth."""
    named = path.with_name(f"{arch}-{pretrained.sha256(path)[:8]}.pth")
    path.rename(named)
    monkeypatch.setitem(pretrained.FILES, arch, (named.name,))
    monkeypatch.setitem(pretrained._ARCH_OF, named.name, arch)
    return named


def test_a_published_file_with_its_hash_passes(tmp_path, monkeypatch):
    named = _published_as(monkeypatch, _state_file(tmp_path / "w.pth"))
    assert pretrained.problem(named, "resnet18") is None


def test_a_published_file_with_other_bytes_is_refused(tmp_path, monkeypatch):
    named = _published_as(monkeypatch, _state_file(tmp_path / "w.pth"))
    named.write_bytes(named.read_bytes() + b"\0")
    found = pretrained.problem(named, "resnet18")
    assert found and "SHA-256 does not start with" in found


def test_another_architectures_file_is_refused_by_its_name(tmp_path):
    other = tmp_path / pretrained.FILES["resnet50"][0]
    other.write_bytes(b"never read")
    found = pretrained.problem(other, "resnet18")
    assert found == f"{other.name} is torchvision's resnet50 weights, not resnet18's (expected resnet18-f37072fd.pth)"


def test_a_file_of_ones_own_is_judged_by_its_tensors(tmp_path):
    own = _state_file(tmp_path / "mine.pth")
    assert pretrained.problem(own, "resnet18") is None
    assert pretrained.tensors_problem(own, "resnet18") is None
    found = pretrained.tensors_problem(own, "mobilenet_v3_small")
    assert found and "does not fit mobilenet_v3_small" in found


def test_pickled_code_is_not_loaded(tmp_path):
    bad = tmp_path / "mine.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, bad)  # a callable needs full unpickling
    found = pretrained.tensors_problem(bad, "resnet18")
    assert found and "torch cannot load it as weights" in found


def test_channel_weights_load_into_the_model(tmp_path):
    from byoc.training import model

    source = models.get_model("resnet18", weights=None)
    torch.save(source.state_dict(), tmp_path / "mine.pth")
    net = model.create("resnet18", 3, pretrained=True, weights_file=tmp_path / "mine.pth")
    assert torch.equal(net.state_dict()["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    assert net.fc.out_features == 3


def test_channel_refuses_another_architectures_file(tmp_path):
    from byoc.training import model

    other = _state_file(tmp_path / pretrained.FILES["resnet34"][0], "resnet34")
    with pytest.raises(ConfigError, match="the 'weights' channel: resnet34-b627a593.pth is torchvision's resnet34"):
        model.create("resnet18", 3, pretrained=True, weights_file=other)


def test_channel_refuses_a_file_that_is_no_state_dict(tmp_path):
    from byoc.training import model

    junk = tmp_path / "mine.pth"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="does not load as a state dict"):
        model.create("resnet18", 3, pretrained=True, weights_file=junk)
