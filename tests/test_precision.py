"""Precision and memory format chosen by measurement (``precision: auto``), on native-bf16 and AVX2-only CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from humanvision.engine import TrainConfig, Trainer, load_checkpoint, read_log
from humanvision.engine.precision import PrecisionChoice, candidates, choose, describe_rates
from humanvision.errors import ConfigError

torch.set_num_threads(1)


class FakeClock:
    """Each ``run(precision, channels_last)`` advances the clock by that option's seconds per call."""

    def __init__(self, seconds: dict[tuple[str, bool], float], warmup_extra: float = 0.0) -> None:
        self.t, self.seconds, self.warmup_extra, self.calls = 0.0, seconds, warmup_extra, []

    def __call__(self) -> float:
        return self.t

    def run(self, precision: str, channels_last: bool) -> None:
        first = (precision, channels_last) not in self.calls
        self.calls.append((precision, channels_last))
        self.t += self.seconds[(precision, channels_last)] + (self.warmup_extra if first else 0.0)


def test_candidates_per_device(monkeypatch):
    cpu = torch.device("cpu")
    assert candidates(cpu, "auto", "auto") == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    assert candidates(cpu, "bf16", "auto") == [("bf16", False), ("bf16", True)]
    assert candidates(cpu, "auto", False) == [("fp32", False), ("bf16", False)]
    assert candidates(cpu, "fp32", True) == [("fp32", True)]
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert candidates(cuda, "auto", "auto") == [("bf16", False), ("bf16", True)]  # the dtype rule, layout measured
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert candidates(cuda, "auto", True) == [("fp16", True)]
    assert candidates(torch.device("mps"), "auto", False) == [("fp32", False)]


def test_choose_picks_the_fastest_and_gives_up_on_emulated_bf16():
    # an AVX2-only CPU: bf16 ten times slower than fp32, channels-last 1.5x faster
    clock = FakeClock({("fp32", False): 1.35, ("fp32", True): 0.9, ("bf16", False): 14.0, ("bf16", True): 11.0})
    choice = choose(clock.run, candidates(torch.device("cpu"), "auto", "auto"), 32, clock=clock)
    assert (choice.precision, choice.channels_last, choice.measured) == ("fp32", True, True)
    assert choice.rate == pytest.approx(32 / 0.9) and choice.rates["fp32"] == pytest.approx(32 / 1.35)
    assert choice.gave_up == ["bf16", "bf16+channels_last"]  # one warm-up call each, not timed further
    assert clock.calls.count(("bf16", False)) == 1 and clock.calls.count(("bf16", True)) == 1
    assert clock.calls.count(("fp32", True)) >= 3  # warm-up + at least min_calls
    assert choice.rates["bf16"] == pytest.approx(32 / 14.0)
    assert "fp32+channels_last (35.6 images/s" in describe_rates(choice)
    # a native-bf16 CPU: bf16 + channels-last wins
    clock = FakeClock({("fp32", False): 0.84, ("fp32", True): 0.54, ("bf16", False): 0.35, ("bf16", True): 0.27},
                      warmup_extra=0.5)
    choice = choose(clock.run, candidates(torch.device("cpu"), "auto", "auto"), 32, clock=clock)
    assert choice.label == "bf16+channels_last" and choice.gave_up == []
    assert choice.seconds == pytest.approx(clock.t)


def test_choose_ties_reduce_and_single_option():
    clock = FakeClock({("fp32", False): 1.0, ("bf16", False): 1.0})
    choice = choose(clock.run, [("fp32", False), ("bf16", False)], 8, clock=clock)
    assert choice.label == "fp32"  # a tie keeps the first (simpler) option
    # rates averaged over ranks: another rank measured bf16 as faster, and the mean decides
    clock = FakeClock({("fp32", False): 1.0, ("bf16", False): 1.1})
    choice = choose(clock.run, [("fp32", False), ("bf16", False)], 8, clock=clock,
                    reduce=lambda t: (t + torch.tensor([8.0, 16.0], dtype=t.dtype)) / 2)
    assert choice.label == "bf16" and choice.rates["fp32"] == pytest.approx(8.0)
    clock = FakeClock({})
    single = choose(clock.run, [("bf16", True)], 8, clock=clock)
    assert single == PrecisionChoice("bf16", True) and clock.calls == []  # nothing to measure


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 12, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        noise = 0.01 * torch.randn(3, 16, 12)  # uses the (per-sample seeded) torch RNG like an augmentation
        return {"image": self.x[i] + noise, "target": self.x[i, :2].flip(-1)}


class ConvMethod(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Conv2d(8, 2, 3, padding=1))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": ((self.net(batch["image"]).float() - batch["target"]) ** 2).mean()}


def _cfg(tmp_path, name: str, **kw) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "log_every": 1, "progress": False, "tensorboard": False,
            "output_dir": str(tmp_path / name), "device": "cpu"}
    return TrainConfig(**{**base, **kw})


def test_auto_measures_without_side_effects_and_resume_keeps_the_choice(tmp_path):
    assert TrainConfig().precision == "auto" and TrainConfig().channels_last == "auto"
    model = ConvMethod()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(_cfg(tmp_path, "auto", max_steps=3), model, Images())
    rng = torch.get_rng_state()
    trainer._setup()
    choice = trainer.choice
    assert choice.measured and set(choice.rates) == {"fp32", "fp32+channels_last", "bf16", "bf16+channels_last"}
    assert choice.rate == max(v for k, v in choice.rates.items() if k not in choice.gave_up)
    assert torch.equal(torch.get_rng_state(), rng)  # dropout RNG untouched
    for k, v in model.state_dict().items():  # weights and BatchNorm statistics untouched
        assert torch.equal(v.contiguous(), before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert model.net[0].weight.is_contiguous(memory_format=torch.channels_last) == choice.channels_last
    result = trainer.fit()
    assert result["precision"]["precision"] == choice.precision and result["precision"]["measured"]

    # the same run with the chosen setting given explicitly: identical losses (the measurement changed nothing)
    explicit = Trainer(_cfg(tmp_path, "explicit", max_steps=3, precision=choice.precision,
                            channels_last=choice.channels_last), ConvMethod(), Images()).fit()
    assert not explicit["precision"]["measured"]
    assert [r["loss"] for r in read_log(tmp_path / "auto", "train")] == \
        [r["loss"] for r in read_log(tmp_path / "explicit", "train")]

    # resuming keeps the recorded choice instead of measuring again
    state = load_checkpoint(tmp_path / "auto" / "last").trainer_state
    assert state["precision"]["precision"] == choice.precision
    resumed = Trainer(_cfg(tmp_path, "auto", max_steps=5), ConvMethod(), Images()).fit(resume=True)
    assert resumed["step"] == 5 and not resumed["precision"]["measured"]
    assert (resumed["precision"]["precision"], resumed["precision"]["channels_last"]) == \
        (choice.precision, choice.channels_last)


def test_min_steps_floor_under_the_time_budget(tmp_path):
    with pytest.raises(ConfigError, match="train.min_steps"):
        TrainConfig(min_steps=10)  # a floor under no budget
    cfg = _cfg(tmp_path, "floor", epochs=3, max_minutes=1.0, min_steps=6, precision="fp32", channels_last=False,
               schedule="cosine")
    trainer = Trainer(cfg, ConvMethod(), Images())
    ticks = iter(range(10_000))
    trainer.clock = lambda: 30.0 * next(ticks)  # every clock reading is 30 s later: the budget ends at once
    result = trainer.fit()
    assert result["step"] == 6 and result["budget_extended"]  # held up by the floor, then stopped
    lrs = [r["lr"] for r in read_log(tmp_path / "floor", "train")]
    # the cosine follows step / min_steps (not the exhausted time fraction): it decreases over the 6 steps
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > 0.5 * cfg.lr and lrs[-1] < 0.1 * cfg.lr


AVX2_SCRIPT = r"""
import json, sys, torch
from humanvision.engine import TrainConfig, Trainer
from humanvision.methods.topdown import TopDownPose, build_codec, DataConfig
from humanvision.models import create_model

class Crops(torch.utils.data.Dataset):
    def __init__(self, model):
        self.w, self.h = model.input_size
        self.hw, self.hh = model.heatmap_size
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return {"image": torch.randn(3, self.h, self.w), "heatmaps": torch.rand(17, self.hh, self.hw),
                "keypoint_weights": torch.ones(17)}

torch.manual_seed(0)
model = create_model("lateral_tiny", input_size=(48, 64))
method = TopDownPose(model, build_codec(model, DataConfig()), "coco17")
cfg = TrainConfig(max_steps=1, batch_size=8, progress=False, tensorboard=False, device="cpu",
                  output_dir=sys.argv[1])
result = Trainer(cfg, method, Crops(model)).fit()
print("RESULT", json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), **result["precision"]}))
"""


@pytest.mark.parametrize("machine", ["native", "avx2"])
def test_selector_on_a_cpu_without_native_bf16(tmp_path, machine):
    """Runs the selector (not a timing assertion) on the demo's model family in a fresh process; with
    ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` this CPU behaves like one without AVX-512-BF16 / AMX,
    where bf16 is emulated and ~10x slower, and the selector must keep fp32 (and give up on bf16 after one call)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    env["OMP_NUM_THREADS"] = "2"
    if machine == "avx2":
        env.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    script = tmp_path / "choose_precision.py"
    script.write_text(AVX2_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    got = json.loads(line.removeprefix("RESULT "))
    assert got["measured"] and len(got["rates"]) == 4
    timed = {k: v for k, v in got["rates"].items() if k not in got["gave_up"]}
    label = got["precision"] + ("+channels_last" if got["channels_last"] else "")
    assert got["rates"][label] == max(timed.values())  # the fastest measured option was taken
    assert "precision: " + label in proc.stdout  # and said
    if machine == "avx2":
        assert got["capability"] == "AVX2"
        assert got["precision"] == "fp32", got
