"""DistributedDataParallel on CPU (gloo): 2 processes x batch B/2 == 1 process x batch B.

The two ranks are started the way torchrun starts them: separate processes with RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT in the environment (``init_process_group(init_method="env://")``). The launcher itself
is skipped to keep the test fast; the single-process reference runs in the test process.
"""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from humanvision.engine import load_weights, read_log

SCRIPT = textwrap.dedent('''
    import sys

    import numpy as np
    import torch
    from torch import nn

    from humanvision.engine import TrainConfig, Trainer, cleanup
    from humanvision.engine.distributed import all_reduce_mean

    torch.set_num_threads(1)


    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(36, 8, generator=g)  # 36 = 4 full global batches of 8 + 4 left over
            self.y = self.x @ torch.randn(8, 2, generator=g)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):  # random augmentation: per-sample seeding makes it rank-independent
            noise = torch.from_numpy(np.random.normal(0, 0.05, 8).astype(np.float32))
            return {"x": self.x[i] + noise, "y": self.y[i]}


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))

        def forward(self, batch):
            mse = ((self.net(batch["x"]) - batch["y"]) ** 2).mean()
            return {"loss": mse, "mse": mse}


    output_dir, batch_size = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)  # the same init on every rank (DDP also broadcasts rank 0's weights)
    cfg = TrainConfig(epochs=3, batch_size=batch_size, lr=3e-2, schedule="cosine", warmup_iters=2, clip_grad=1.0,
                      log_every=1, progress=False, tensorboard=False, output_dir=output_dir, device="cpu",
                      precision="fp32", channels_last=False)
    trainer = Trainer(cfg, Model(), Data(), eval_fn=lambda m, e: {"mse": float(
        all_reduce_mean(m({"x": torch.ones(1, 8), "y": torch.zeros(1, 2)})["mse"]))})
    trainer.fit()
    # precision "auto": every rank measures, the rates are averaged over ranks, so all ranks choose alike
    auto = TrainConfig(max_steps=1, batch_size=batch_size, progress=False, tensorboard=False, device="cpu",
                       output_dir=output_dir + "_auto")
    choice = Trainer(auto, Model(), Data()).fit()["precision"]
    print("CHOICE", choice["precision"], choice["channels_last"], choice["measured"], flush=True)
    cleanup()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process(tmp_path, monkeypatch):
    script = tmp_path / "train_toy.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))
    ranks = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "ddp"), "4"],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # the reference: one process, batch 8, in this process
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "single"), "8"])
    runpy.run_path(str(script), run_name="__main__")

    choices = []
    for r, proc in enumerate(ranks):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"rank {r}:\n{out[-3000:]}"
        choices += [line for line in out.splitlines() if line.startswith("CHOICE")]
    assert len(choices) == 2 and choices[0] == choices[1] and choices[0].endswith("True"), choices

    ref, got = read_log(tmp_path / "single", "train"), read_log(tmp_path / "ddp", "train")
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(1, 13))  # rank 0 logs once per step
    for key in ("loss", "grad_norm", "lr"):
        assert [r[key] for r in got] == pytest.approx([r[key] for r in ref], rel=1e-5, abs=1e-7), key
    assert [r["mse"] for r in read_log(tmp_path / "ddp", "eval")] == pytest.approx(
        [r["mse"] for r in read_log(tmp_path / "single", "eval")], rel=1e-5)
    w_ref, w_ddp = load_weights(tmp_path / "single" / "last"), load_weights(tmp_path / "ddp" / "last")
    assert w_ref.keys() == w_ddp.keys()
    for k in w_ref:
        torch.testing.assert_close(w_ddp[k], w_ref[k], rtol=1e-5, atol=1e-6)
    assert not any(p.name.endswith((".tmp", ".old")) for p in (tmp_path / "ddp").iterdir())
