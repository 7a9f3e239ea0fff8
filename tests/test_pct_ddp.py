"""PCT's EMA codebook under DistributedDataParallel (gloo, 2 processes): the per-code sums are all-reduced
before the update (pose2d.md §3.3), so two ranks with half a batch each end with the codebook of one process
that saw the whole batch. The ranks start as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

from humanvision.models.pct import PCTTokenizer

SCRIPT = textwrap.dedent('''
    import sys

    import torch

    from humanvision.engine import cleanup, init_distributed
    from humanvision.models.pct import PCTTokenizer

    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_pct_ddp import batches, make_tokenizer

    info = init_distributed("cpu")
    tok = make_tokenizer()
    for z in batches():  # rank r takes rows r, r + W, ... of every global batch
        part = z[info.rank::info.world_size]
        _, idx = tok.quantize(part)
        tok.update_codebook(part, idx)
    if info.rank == 0:
        torch.save({k: v for k, v in tok.named_buffers()}, sys.argv[1])
    cleanup()
''')


def make_tokenizer() -> PCTTokenizer:
    torch.manual_seed(0)
    tok = PCTTokenizer(num_joints=17, token_num=6, token_dim=8, token_class_num=16, guide_channels=0,
                       enc_num_blocks=1, enc_hidden_dim=12, enc_hidden_inter_dim=12, enc_token_inter_dim=4)
    return tok.train()


def batches() -> list[torch.Tensor]:
    """Three global batches of 8 poses x 6 tokens x 8 channels, near the codebook so that many entries are
    used."""
    g = torch.Generator().manual_seed(1)
    book = make_tokenizer().codebook
    return [book[torch.randint(0, 16, (8, 6), generator=g)] + 0.3 * torch.randn(8, 6, 8, generator=g)
            for _ in range(3)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_codebook_update_two_ranks_equals_one_process_on_the_union(tmp_path):
    script = tmp_path / "ema_ddp.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))
    out = tmp_path / "ddp_buffers.pt"
    here = os.path.dirname(os.path.abspath(__file__))
    ranks = [subprocess.Popen([sys.executable, str(script), str(out), here],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]

    single, local = make_tokenizer(), make_tokenizer()  # the reference: the union, one process
    for z in batches():
        _, idx = single.quantize(z)
        single.update_codebook(z, idx)
        _, idx = local.quantize(z[0::2])  # what rank 0 would do without the all-reduce
        local.update_codebook(z[0::2], idx)

    for r, proc in enumerate(ranks):
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"rank {r}:\n{log[-3000:]}"
    ddp = torch.load(out, weights_only=True)
    assert single.ema_cluster_size.sum() > 0
    for name, ref in single.named_buffers():
        torch.testing.assert_close(ddp[name], ref, rtol=1e-5, atol=1e-5, msg=name)
    # the test can tell the two apart
    assert not torch.allclose(local.ema_cluster_size, single.ema_cluster_size)
