import torch

from byoc import model, speed


def test_fixed_settings_are_not_measured():
    assert speed.candidates("off", "false", torch.device("cpu")) == [speed.Speed("off", False)]
    assert speed.candidates("bf16", "true", torch.device("cpu")) == [speed.Speed("bf16", True)]


def test_auto_tries_both_layouts_and_keeps_the_fastest(caplog):
    options = speed.candidates("off", "auto", torch.device("cpu"))
    assert options == [speed.Speed("off", True), speed.Speed("off", False)]
    net = model.build("resnet18", 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    caplog.set_level("INFO")
    choice = speed.fastest(net, options, batch_size=4, image_size=32, num_classes=3, device=torch.device("cpu"))
    assert choice in options and "speed settings measured" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # timed on a copy
    assert torch.equal(rng, torch.get_rng_state())  # and without touching the RNG
