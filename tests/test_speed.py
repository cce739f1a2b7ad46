import pytest
import torch
from torch import nn

from byoc.training import model, speed

CPU = torch.device("cpu")


def test_fixed_settings_are_not_measured():
    assert speed.candidates("off", "false", CPU, 224) == [speed.Speed("off", False)]
    assert speed.candidates("bf16", "true", CPU, 16) == [speed.Speed("bf16", True)]  # explicit: allowed at any size


def test_auto_offers_no_bf16_on_cpu_for_tiny_images(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert {s.amp for s in speed.candidates("auto", "auto", CPU, 16)} == {"off"}
    assert {s.amp for s in speed.candidates("auto", "auto", CPU, speed.CPU_BF16_MIN_IMAGE_SIZE)} == {"off", "bf16"}


def rig_timings(monkeypatch, seconds: dict) -> list:
    """Each setting's timing is `seconds[setting]` (the real trial still runs, so its finiteness
    checks still count); returns the settings in the order they were timed."""
    real, timed = speed._trial, []

    def trial(model, setting, *args):
        timed.append(setting)
        measured, problem = real(model, setting, *args)
        return (seconds[setting] if problem is None else measured), problem

    monkeypatch.setattr(speed, "_trial", trial)
    return timed


@pytest.mark.parametrize("fast_layout", [True, False], ids=["channels_last-fastest", "contiguous-fastest"])
def test_auto_tries_both_layouts_and_keeps_the_fastest(fast_layout, caplog, monkeypatch):
    options = speed.candidates("off", "auto", CPU, 32)
    assert options == [speed.Speed("off", True), speed.Speed("off", False)]
    timed = rig_timings(monkeypatch, {s: 0.01 if s.channels_last is fast_layout else 0.03 for s in options})
    net = model.build("resnet18", 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    caplog.set_level("INFO")
    choice = speed.fastest(net, options, batch_size=4, image_size=32, num_classes=3, device=CPU)
    assert choice == speed.Speed("off", fast_layout)
    assert timed == options  # each timed once
    assert f"amp=off/channels_last=True: {0.01 if fast_layout else 0.03:.3f}" in caplog.text
    assert f"-> amp=off channels_last={fast_layout}" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # timed on a copy
    assert torch.equal(rng, torch.get_rng_state())  # and without touching the RNG


FOUR = [speed.Speed("off", True), speed.Speed("off", False), speed.Speed("bf16", True), speed.Speed("bf16", False)]


@pytest.mark.parametrize("fastest", range(len(FOUR)), ids=[f"{s.amp.value}-cl{int(s.channels_last)}" for s in FOUR])
@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_the_quickest_of_many_wins_wherever_it_is(fastest, order, monkeypatch):
    """Distinct timings, the minimum in each position, the others rising or falling around it: only
    the minimum is kept (not the first, the last or the slowest)."""
    others = [0.2, 0.3, 0.4] if order == "ascending" else [0.4, 0.3, 0.2]
    seconds = dict(zip([s for i, s in enumerate(FOUR) if i != fastest], others, strict=True))
    seconds[FOUR[fastest]] = 0.1
    monkeypatch.setattr(speed, "_trial", lambda model, setting, *args: (seconds[setting], None))
    assert speed.fastest(nn.Linear(3, 3), FOUR, 4, 8, 3, CPU) == FOUR[fastest]


class BrokenInChannelsLast(nn.Module):
    """Finite in the contiguous layout; a NaN loss or NaN gradients (from step `from_step`) in channels_last."""

    def __init__(self, where: str, from_step: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 3)
        self.where, self.from_step, self.calls = where, from_step, 0

    def forward(self, x):
        out = self.head(self.conv(x).mean((2, 3)))
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            self.calls += 1
            if self.calls >= self.from_step:
                if self.where == "loss":
                    return out * float("nan")
                out.register_hook(lambda g: g * float("nan"))  # the loss stays finite
        return out


def channels_last_times_fastest(monkeypatch) -> None:
    """Rig the clock so channels_last always wins on time: only the finiteness check can drop it."""
    real = speed._trial

    def trial(model, setting, *args):
        seconds, problem = real(model, setting, *args)
        return (0.0 if setting.channels_last else 1.0) if problem is None else seconds, problem

    monkeypatch.setattr(speed, "_trial", trial)


@pytest.mark.parametrize("where,from_step", [("loss", 1), ("grad", 1), ("grad", 3)])
def test_a_setting_that_goes_non_finite_is_dropped(where, from_step, caplog, monkeypatch):
    options = [speed.Speed("off", True), speed.Speed("off", False)]
    channels_last_times_fastest(monkeypatch)
    caplog.set_level("INFO")
    choice = speed.fastest(BrokenInChannelsLast(where, from_step), options, 4, 8, 3, CPU, steps=2)
    assert choice == speed.Speed("off", False)
    what = "loss=nan" if where == "loss" else "grad_norm=nan"
    assert f"amp=off channels_last=True dropped: {what} at step {from_step}" in caplog.text


def test_broken_in_channels_last_wins_when_finite(monkeypatch):
    """The test model above is only dropped for its NaN: finite, channels_last wins the rigged timing."""
    channels_last_times_fastest(monkeypatch)
    options = [speed.Speed("off", True), speed.Speed("off", False)]
    assert speed.fastest(BrokenInChannelsLast("loss", from_step=10), options, 4, 8, 3, CPU) == speed.Speed("off", True)


def test_when_every_setting_goes_non_finite_fp32_contiguous_is_used(caplog):
    class AlwaysNaN(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(3, 3)

        def forward(self, x):
            return self.head(x.mean((2, 3))) * float("nan")

    options = [
        speed.Speed("off", True),
        speed.Speed("bf16", True),
        speed.Speed("bf16", False),
        speed.Speed("off", False),
    ]
    assert speed.fastest(AlwaysNaN(), options, 4, 8, 3, CPU) == speed.Speed("off", False)
    assert caplog.text.count("dropped: loss=nan at step 1") == 4
    assert "no speed setting stayed finite" in caplog.text
