import torch

from byoc.training import checkpoint


def test_atomic_save_prunes_and_resumes_newest(tmp_path):
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, {"model": {"w": torch.tensor([epoch])}, "epoch": epoch}, epoch, 0)
    names = [p.name for p in checkpoint.candidates(tmp_path)]
    assert names == ["checkpoint-00003-0000000.pt", "checkpoint-00002-0000000.pt"]
    assert not list(tmp_path.glob(".tmp-*"))
    state, path = checkpoint.load_newest(tmp_path)
    assert state["epoch"] == 3


def test_corrupt_newest_is_skipped(tmp_path, caplog):
    checkpoint.save(tmp_path, {"model": {}, "epoch": 1}, 1, 0)
    (tmp_path / checkpoint.name_for(2, 0)).write_bytes(b"PK\x03\x04 truncated")
    state, path = checkpoint.load_newest(tmp_path)
    assert state["epoch"] == 1
    assert "skipping unreadable checkpoint checkpoint-00002" in caplog.text


def test_mid_epoch_sorts_after_epoch_start(tmp_path):
    checkpoint.save(tmp_path, {"model": {}, "epoch": 1}, 1, 0)
    checkpoint.save(tmp_path, {"model": {}, "epoch": 1, "step": 7}, 1, 7)
    assert checkpoint.load_newest(tmp_path)[0].get("step") == 7


def test_nothing_to_resume(tmp_path):
    assert checkpoint.load_newest(tmp_path / "missing") is None
