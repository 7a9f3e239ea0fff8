"""Training engine: convergence, exact resume, crash-safe checkpoints, NaN stop, lr rules, EMA, AMP."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

from humanvision.engine import (
    LRSchedule,
    ModelEma,
    ResumableSampler,
    SeededDataset,
    TrainConfig,
    Trainer,
    build_optimizer,
    load_checkpoint,
    load_weights,
    lr_factor,
    param_groups,
    read_log,
    save_checkpoint,
)
from humanvision.engine import checkpoint as checkpoint_module
from humanvision.errors import ConfigError, TrainingError

torch.set_num_threads(1)


class ToyRegression(torch.utils.data.Dataset):
    """y = x @ W with random "augmentation": numpy noise on x and a torch random sign flip of (x, y)."""

    def __init__(self, n: int = 64, dim: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, 2, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sign = 1.0 if torch.rand(()) < 0.5 else -1.0
        noise = torch.from_numpy(np.random.normal(0.0, 0.01, self.x.shape[1]).astype(np.float32))
        return {"x": sign * (self.x[i] + noise), "y": sign * self.y[i]}


class ToyModel(nn.Module):
    """A two-layer MLP regression method returning ``{"loss", "mse"}``; ``crash_at`` raises at that forward call,
    ``nan_at`` makes the ``mse`` term NaN at that call (1-based)."""

    def __init__(self, dropout: float = 0.0, crash_at: int | None = None, nan_at: int | None = None) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(8, 32), nn.Dropout(dropout), nn.Linear(32, 2)
        self.crash_at, self.nan_at, self.calls, self.dtypes = crash_at, nan_at, 0, []

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        pred = self.fc2(self.drop(torch.relu(self.fc1(batch["x"]))))
        self.dtypes.append(pred.dtype)
        mse = ((pred.float() - batch["y"]) ** 2).mean()
        if self.calls == self.nan_at:
            mse = mse * float("nan")
        return {"loss": mse + 1e-3 * pred.float().abs().mean(), "mse": mse}


def make_cfg(tmp_path, name: str, **kw) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "weight_decay": 1e-4, "schedule": "cosine", "warmup_iters": 4,
            "log_every": 1, "progress": False, "tensorboard": False, "output_dir": str(tmp_path / name),
            "device": "cpu", "precision": "fp32", "channels_last": False}  # pinned: "auto" measures, runs differ
    return TrainConfig(**{**base, **kw})


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_log(run_dir, "train")]


def test_loss_decreases_and_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    data = ToyRegression()
    history = []

    def eval_fn(model, epoch):
        with torch.no_grad():
            mse = model({"x": data.x, "y": data.y})["mse"].item()
        history.append(mse)
        return {"mse": mse, "epoch_seen": epoch}

    cfg = make_cfg(tmp_path, "run", epochs=6, lr=2e-2, best_metric="mse", best_mode="min", tensorboard=True)
    result = Trainer(cfg, ToyModel(), data, eval_fn=eval_fn).fit()
    curve = losses(cfg.output_dir)
    assert len(curve) == 6 * 8 and result["step"] == 48 and result["epoch"] == 6
    assert np.mean(curve[-8:]) < 0.1 * np.mean(curve[:8])
    assert history[-1] < 0.2 * history[0]
    # best/ holds the weights and metrics of the epoch with the lowest eval mse
    best = load_checkpoint(tmp_path / "run" / "best")
    assert best.meta["value"] == min(history) and best.meta["epoch"] == 1 + int(np.argmin(history))
    evals = read_log(cfg.output_dir, "eval")
    assert [r["epoch"] for r in evals] == [1, 2, 3, 4, 5, 6] and [r["epoch_seen"] for r in evals] == [1, 2, 3, 4, 5, 6]
    assert any((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    # the logged lr is the schedule's value at each step
    sched = LRSchedule(cfg.lr, 48, 8, "cosine", warmup_iters=4, warmup_ratio=cfg.warmup_ratio)
    assert [r["lr"] for r in read_log(cfg.output_dir, "train")] == pytest.approx([sched.factor(i) * cfg.lr
                                                                                  for i in range(48)], rel=1e-12)


@pytest.mark.parametrize(("variant", "crash_call"), [
    ({}, 13),  # killed in step 13 (epoch 2 = steps 9-16), last checkpoint at step 10
    # 4 steps / epoch; killed between the two micro-batches of step 11 (epoch 3 = steps 9-12)
    ({"accum_steps": 2, "ema": 0.9, "clip_grad": 0.5, "optimizer": "sgd", "schedule": "step", "milestones": (1,),
      "epochs": 6}, 22),
])
def test_resume_reproduces_uninterrupted_run_bitwise(tmp_path, variant, crash_call):
    """Train, kill in the middle of an epoch, resume from last/: the loss curve and final weights are identical
    (dropout, numpy/torch augmentation, optimiser, EMA and schedule state all restored). The resumed run uses 2
    data-loader workers: per-sample seeding makes augmentation independent of the worker count."""
    kw = dict(save_every_steps=5, **variant)
    torch.manual_seed(1)
    reference = Trainer(make_cfg(tmp_path, "ref", **kw), ToyModel(dropout=0.2), ToyRegression())
    reference.fit()

    torch.manual_seed(1)
    killed = Trainer(make_cfg(tmp_path, "run", **kw), ToyModel(dropout=0.2, crash_at=crash_call), ToyRegression())
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    state = load_checkpoint(tmp_path / "run" / "last").trainer_state
    assert state["step"] == 10 and state["epoch_step"] == 10 - state["epoch"] * state["steps_per_epoch"] > 0
    assert len(losses(tmp_path / "run")) == (crash_call - 1) // variant.get("accum_steps", 1)

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = Trainer(make_cfg(tmp_path, "run", num_workers=2, **kw), ToyModel(dropout=0.2), ToyRegression())
    result = resumed.fit(resume=True)

    assert losses(tmp_path / "run") == losses(tmp_path / "ref")  # bitwise, and no duplicated steps in the log
    steps = [r["step"] for r in read_log(tmp_path / "run", "train")]
    assert steps == list(range(1, result["step"] + 1))
    for a, b in zip(reference.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    if reference.ema is not None:
        for a, b in zip(reference.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
            assert torch.equal(a, b)


HELD_AT_FORK = threading.Lock()  # held by a thread of the training process while workers start


class LockingRegression(ToyRegression):
    """Takes ``HELD_AT_FORK`` for every sample, like a library's module-level lock would."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        with HELD_AT_FORK:
            return super().__getitem__(i)


@pytest.mark.parametrize("worker_start", ["forkserver", "fork"])
def test_loader_workers_do_not_inherit_a_held_lock(tmp_path, monkeypatch, worker_start):
    """A thread holds a lock while the loader workers start. Forked workers copy it locked and wait forever: the
    loader's timeout turns that hang into an error. Workers from the forkserver import a fresh, free lock."""
    from humanvision.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "LOADER_TIMEOUT_S", 3)
    cfg = make_cfg(tmp_path, worker_start, epochs=1, num_workers=2, worker_start=worker_start)
    trainer = Trainer(cfg, ToyModel(), LockingRegression())
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with HELD_AT_FORK:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        if worker_start == "fork":
            with pytest.raises(RuntimeError, match="timed out"):
                trainer.fit()
        else:
            assert trainer.fit()["step"] == 8
    finally:
        release.set()
        holder.join()


def test_worker_start_is_validated_and_needs_a_picklable_dataset(tmp_path):
    with pytest.raises(ConfigError, match="train.worker_start"):
        make_cfg(tmp_path, "bad", worker_start="thread")
    unpicklable = ToyRegression()
    unpicklable.transform = lambda x: x
    with pytest.raises(ConfigError, match="forkserver workers need a dataset that pickles, and ToyRegression"):
        Trainer(make_cfg(tmp_path, "pickle", num_workers=2), ToyModel(), unpicklable)
    Trainer(make_cfg(tmp_path, "pickle", num_workers=2, worker_start="fork"), ToyModel(), unpicklable)


def test_resume_at_epoch_boundary_and_max_steps(tmp_path):
    torch.manual_seed(0)
    Trainer(make_cfg(tmp_path, "ref"), ToyModel(dropout=0.1), ToyRegression()).fit()
    torch.manual_seed(0)
    first = Trainer(make_cfg(tmp_path, "run", max_steps=8), ToyModel(dropout=0.1), ToyRegression()).fit()
    assert first["step"] == 8 and first["epoch"] == 1
    second = Trainer(make_cfg(tmp_path, "run"), ToyModel(dropout=0.1), ToyRegression())
    second.fit(resume=tmp_path / "run" / "last")
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")


def test_checkpoint_is_crash_safe(tmp_path, monkeypatch):
    path = tmp_path / "last"
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    save_checkpoint(path, a, trainer_state={"step": 1}, meta={"step": 1})

    real_write, real_replace = checkpoint_module._write_file, checkpoint_module.os.replace

    def crash_on_state(p, data):  # dies after model.safetensors was written, before trainer_state.pt
        if p.name == checkpoint_module.STATE_FILE:
            raise OSError("killed while writing")
        real_write(p, data)

    monkeypatch.setattr(checkpoint_module, "_write_file", crash_on_state)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.zeros(2, 3), "b": torch.zeros(2)}, trainer_state={"step": 2})
    monkeypatch.setattr(checkpoint_module, "_write_file", real_write)
    ckpt = load_checkpoint(path)
    assert ckpt.path == path and torch.equal(ckpt.model_state["w"], a["w"]) and ckpt.trainer_state == {"step": 1}

    calls = []

    def crash_on_second_rename(src, dst):  # dies between `last -> last.old` and `last.tmp -> last`
        calls.append(src)
        if len(calls) == 2:
            raise OSError("killed between renames")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_on_second_rename)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.zeros(2, 3), "b": torch.zeros(2)}, trainer_state={"step": 3})
    monkeypatch.setattr(checkpoint_module.os, "replace", real_replace)
    assert not path.exists()
    ckpt = load_checkpoint(path)  # falls back to last.old, the previous complete checkpoint
    assert ckpt.path.name == "last.old" and ckpt.trainer_state == {"step": 1}
    assert torch.equal(load_weights(path)["w"], a["w"])

    save_checkpoint(path, {"w": torch.full((2, 3), 7.0), "b": torch.zeros(2)}, trainer_state={"step": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_checkpoint(path).trainer_state == {"step": 4}
    assert json.loads((path / "meta.json").read_text()) == {}


def test_nan_loss_stops_with_step_terms_and_checkpoint(tmp_path):
    cfg = make_cfg(tmp_path, "run", save_every_steps=4)
    trainer = Trainer(cfg, ToyModel(nan_at=6), ToyRegression())
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    message = str(err.value)
    assert "step 6 " in message and "mse=nan" in message and "loss=nan" in message
    assert str(tmp_path / "run" / "last") in message
    assert load_checkpoint(tmp_path / "run" / "last").trainer_state["step"] == 4
    with pytest.raises(TrainingError, match="none saved yet"):
        Trainer(make_cfg(tmp_path, "run2"), ToyModel(nan_at=1), ToyRegression()).fit()


class ToyViT(nn.Module):
    """ViTPose layer-id rule: patch_embed/pos_embed -> 0, blocks.i -> i + 1, the rest -> depth + 1 = num_layers - 1."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(4, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)) for _ in range(depth))
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.num_layers = depth + 2  # the number of layer ids

    def layer_id(self, name: str) -> int:
        if name.startswith(("patch_embed", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers - 1

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def test_layer_decay_and_weight_decay_groups():
    model = ToyViT()
    opt = build_optimizer(param_groups(model, weight_decay=0.1, layer_decay=0.5), "adamw", lr=1.0)
    LRSchedule(lr=2.0, total_iters=10, iters_per_epoch=10).apply(opt, 3)  # constant schedule
    lr = {n: g["lr"] for g in opt.param_groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in opt.param_groups for n in g["param_names"]}
    assert lr["patch_embed.weight"] == lr["pos_embed"] == 2.0 * 0.5**4
    assert lr["blocks.0.1.weight"] == 2.0 * 0.5**3 and lr["blocks.2.0.weight"] == 2.0 * 0.5
    assert lr["head.weight"] == lr["head.bias"] == 2.0
    assert wd["patch_embed.weight"] == wd["blocks.1.1.weight"] == wd["head.weight"] == 0.1
    assert wd["patch_embed.bias"] == wd["pos_embed"] == wd["blocks.1.0.weight"] == wd["head.bias"] == 0.0
    assert not any(n.startswith("frozen") for n in lr) and len(lr) == sum(p.requires_grad for p in model.parameters())
    # without layer decay: two groups, one lr
    groups = param_groups(model, weight_decay=0.1)
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0] and sorted(g["weight_decay"] for g in groups) == [0.0, 0.1]
    with pytest.raises(ConfigError, match="layer_id"):
        param_groups(ToyModel(), 0.1, layer_decay=0.75)


def test_schedule_values():
    # mmcv linear warm-up from warmup_ratio, then the regular schedule
    assert lr_factor(0, 1000, "constant", warmup_iters=500, warmup_ratio=0.001) == pytest.approx(0.001)
    assert lr_factor(250, 1000, "constant", warmup_iters=500, warmup_ratio=0.001) == pytest.approx(0.5005)
    assert lr_factor(500, 1000, "constant", warmup_iters=500) == 1.0
    # ViTPose: x0.1 at epochs 170 and 200 (293 iterations per epoch)
    vitpose = LRSchedule(5e-4, 210 * 293, 293, "step", warmup_iters=500, milestones=(170, 200))
    assert vitpose.factor(0) == pytest.approx(0.001)
    assert vitpose.factor(170 * 293 - 1) == 1.0 and vitpose.factor(170 * 293) == pytest.approx(0.1)
    assert vitpose.factor(200 * 293) == pytest.approx(0.01) and vitpose.factor(210 * 293 - 1) == pytest.approx(0.01)
    # PCT: cosine with min_lr_ratio 1e-5 and 500 warm-up iterations
    pct = {"warmup_iters": 500, "min_lr_ratio": 1e-5}
    assert lr_factor(5000, 10000, "cosine", **pct) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)
    assert lr_factor(2500, 10000, "cosine", **pct) == pytest.approx(1e-5 + (1 - 1e-5) * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(10000, 10000, "cosine", **pct) == pytest.approx(1e-5)
    assert lr_factor(100, 10000, "cosine", **pct) == pytest.approx(
        (1 - 0.8 * 0.999) * (1e-5 + (1 - 1e-5) * (1 + math.cos(math.pi * 0.01)) / 2))
    assert lr_factor(50, 100, "poly", power=0.9) == pytest.approx(0.5**0.9)
    with pytest.raises(ConfigError, match="train.schedule"):
        lr_factor(0, 10, "linear")


def test_ema_update_math():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.9)
    p0 = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(5.0)
    ema.update(model)
    for e, a in zip(ema.module.parameters(), p0, strict=True):
        assert torch.allclose(e, 0.9 * a + 0.1 * (a + 1.0))
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 5.0))  # buffers are copied, not averaged
    ema.update(model)
    for e, a in zip(ema.module.parameters(), p0, strict=True):
        assert torch.allclose(e, 0.9 * (0.9 * a + 0.1 * (a + 1)) + 0.1 * (a + 1.0))
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_bf16_autocast_on_cpu(tmp_path):
    model = ToyModel()
    result = Trainer(make_cfg(tmp_path, "run", precision="bf16", max_steps=3), model, ToyRegression()).fit()
    assert result["step"] == 3 and set(model.dtypes) == {torch.bfloat16}
    assert all(math.isfinite(v) for v in losses(tmp_path / "run"))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


class ToyImages(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 12, 10, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "target": self.x[i, :2].flip(-1)}


class ToyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 2, 3, padding=1))
        self.layouts: list[bool] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.layouts.append(batch["image"].is_contiguous(memory_format=torch.channels_last))
        return {"loss": ((self.net(batch["image"]) - batch["target"]) ** 2).mean()}


def test_channels_last_trains_identically(tmp_path):
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        model = ToyConv()
        Trainer(make_cfg(tmp_path, f"cl{cl}", channels_last=cl, epochs=2), model, ToyImages()).fit()
        assert set(model.layouts) == {cl}
        assert model.net[0].weight.is_contiguous(memory_format=torch.channels_last) == cl
        runs[cl] = (losses(tmp_path / f"cl{cl}"), model)
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-4)
    plain = ToyConv()
    plain.load_state_dict(load_weights(tmp_path / "clTrue" / "last"))  # saved contiguous: loads anywhere
    x = ToyImages().x[:4]
    with torch.no_grad():
        np.testing.assert_allclose(plain.eval().net(x), runs[True][1].eval().net(x), atol=1e-5)


def test_sampler_shards_and_resumes():
    single = list(ResumableSampler(10, seed=3))
    ranks = [list(ResumableSampler(10, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(single) == sorted(ranks[0] + ranks[1]) and sorted(i for i, _ in single) == list(range(10))
    for k in range(5):  # k-th batch of 2 on one process == union of the k-th samples of the two ranks
        assert set(single[2 * k:2 * k + 2]) == {ranks[0][k], ranks[1][k]}
    sampler = ResumableSampler(10, seed=3)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == single[4:] and len(sampler) == 6
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != [i for i, _ in single]  # a new order each epoch
    padded = [list(ResumableSampler(5, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 3 and {i for i, _ in padded[0] + padded[1]} == set(range(5))
    # per-sample seeding: the same (index, seed) gives the same augmented sample, whatever happened before
    data = SeededDataset(ToyRegression())
    first = data[(3, 77)]
    np.random.rand(10), torch.rand(10)
    assert all(torch.equal(first[k], data[(3, 77)][k]) for k in first)
    state = torch.get_rng_state()
    data[(4, 5)]
    assert torch.equal(state, torch.get_rng_state())  # the main process's RNG is left untouched


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="train.precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        Trainer(make_cfg(tmp_path, "a", precision="fp16"), ToyModel(), ToyRegression())
    with pytest.raises(ConfigError, match="exceeds the dataset"):
        Trainer(make_cfg(tmp_path, "b", batch_size=128), ToyModel(), ToyRegression())
    with pytest.raises(ConfigError, match="best_metric"):
        Trainer(make_cfg(tmp_path, "c", best_metric="AP", epochs=1), ToyModel(), ToyRegression(),
                eval_fn=lambda m, e: {"mse": 1.0}).fit()
    save_checkpoint(tmp_path / "c" / "best", ToyModel().state_dict())
    with pytest.raises(TrainingError, match="cannot be resumed"):  # best/ holds weights only
        Trainer(make_cfg(tmp_path, "d"), ToyModel(), ToyRegression()).fit(resume=tmp_path / "c" / "best")


class TensorOut(ToyModel):
    def forward(self, batch):
        return super().forward(batch)["loss"]


def test_forward_contract_is_checked(tmp_path):
    with pytest.raises(TrainingError, match="scalar tensor 'loss'.*got Tensor"):
        Trainer(make_cfg(tmp_path, "run"), TensorOut(), ToyRegression()).fit()


@pytest.mark.slow
def test_torch_compile_trains(tmp_path):
    result = Trainer(make_cfg(tmp_path, "run", compile=True, max_steps=4), ToyModel(), ToyRegression()).fit()
    assert result["step"] == 4 and all(math.isfinite(v) for v in losses(tmp_path / "run"))


def test_time_budget_stops_follows_time_schedule_and_resumes(tmp_path):
    """``max_minutes``: each forward call advances a fake clock by 6 s, so a 1-minute budget ends after 10 steps,
    the cosine lr follows the time fraction (not the 800-step horizon), the run evaluates where it stopped, and a
    resumed run counts the minute already spent."""
    clock = {"t": 0.0}

    class SlowModel(ToyModel):
        def forward(self, batch):
            clock["t"] += 6.0
            return super().forward(batch)

    evals = []

    def eval_fn(model, epoch):
        evals.append(epoch)
        return {"mse": 0.0}

    def run(minutes):
        trainer = Trainer(make_cfg(tmp_path, "run", epochs=100, max_minutes=minutes), SlowModel(), ToyRegression(),
                          eval_fn=eval_fn)
        trainer.clock = lambda: clock["t"]
        return trainer.fit(resume=True)

    first = run(1.0)
    assert first["step"] == 10 and first["epoch"] == 1 and first["minutes"] == pytest.approx(1.0)
    assert evals == [1, 1]  # after epoch 1 (8 steps) and where the time ran out (step 10, inside epoch 2)
    lrs = [r["lr"] for r in read_log(tmp_path / "run", "train")]
    sched = LRSchedule(1e-2, 800, 8, "cosine", warmup_iters=4)
    assert lrs == pytest.approx([1e-2 * sched.factor(i, progress=i / 10) for i in range(10)], rel=1e-9)
    assert lrs[-1] < 0.03 * 1e-2  # the end of the cosine curve, not 1% into an 800-step one
    assert load_checkpoint(tmp_path / "run" / "last").trainer_state["elapsed"] == pytest.approx(60.0)

    second = run(2.0)  # resumed: one more minute
    assert second["step"] == 20 and second["minutes"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="train.max_minutes"):
        make_cfg(tmp_path, "bad", max_minutes=0)
