"""Two real gloo processes on the CPU take the same step as one process with the same global
batch."""

import os
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from audistill.train import ddp
from audistill.train.config import from_dict
from audistill.train.loop import train

from .conftest import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, raw: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        train(from_dict(raw))
    finally:
        ddp.cleanup()


def _params(run_dir) -> dict:
    ckpt = sorted((run_dir / "checkpoints").glob("ckpt-*"))[-1]
    return load_file(str(ckpt / "model.safetensors"))


def test_two_process_ddp_matches_single_process_step(tiny_bank, tmp_path):
    over = {"optim.max_steps": 1, "optim.warmup_steps": 0, "data.batch_seconds": 6.0}
    single = from_dict(tiny_config(tiny_bank, str(tmp_path / "one"), **over))
    train(single)
    raw = tiny_config(tiny_bank, str(tmp_path / "two"), **over)
    mp.spawn(_worker, args=(2, _free_port(), raw), nprocs=2, join=True)
    a, b = _params(single.run_dir), _params(from_dict(raw).run_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5)  # Adam steps are ~lr = 3e-3
