"""Data-parallel training: a 2-process torchrun (gloo, CPU) run matches a 1-process run; the sampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spatialrec.train import ShardedEpochSampler, load_checkpoint
from spatialrec.train.distributed import DistContext, resolve_device, setup

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["OMP_NUM_THREADS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def test_torchrun_two_processes_match_single_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run1 = subprocess.run([sys.executable, str(WORKER), str(single), "8"], env=_env(), capture_output=True, text=True, timeout=300)
    assert run1.returncode == 0, run1.stderr[-3000:]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(ddp), "4",
    ]  # fmt: skip
    run2 = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert run2.returncode == 0, run2.stderr[-3000:]

    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert a["config"]["world_size"] == 1 and b["config"]["world_size"] == 2
    assert len(b["rng"]) == 2  # one RNG snapshot per process
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert len(a["history"]) == len(b["history"]) == 3
    for ra, rb in zip(a["history"], b["history"]):
        for key in ("train_loss", "train_dice", "val_loss", "val_dice"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), key
    # The parameters did change, so the match is not trivial.
    assert a["history"][0]["val_loss"] != a["history"][-1]["val_loss"]
    summary = json.loads((ddp / "metrics.json").read_text())
    reference = json.loads((single / "metrics.json").read_text())
    assert summary["world_size"] == 2
    # Test metrics gathered from both processes: every test image once, same values.
    assert summary["test"]["num_cases"] == reference["test"]["num_cases"] == 5
    for metric in ("dice", "iou", "hd95"):
        got, want = summary["test"][metric], reference["test"][metric]
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-4, abs=1e-5), metric
    # Only rank 0 wrote: exactly one CSV with one row per epoch.
    assert len((ddp / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4)])
def test_sharded_sampler_global_batches_match_single_process(n: int, world: int) -> None:
    b = 2
    single = list(ShardedEpochSampler(n, shuffle=True, seed=3, pad=True, world_size=1, rank=0))
    shards = [list(ShardedEpochSampler(n, shuffle=True, seed=3, rank=r, world_size=world, pad=True)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # processes step together
    assert sorted(set(i for s in shards for i in s)) == list(range(n))  # nothing left out
    if n % world == 0:
        # The k-th batch of every process together = the k-th global batch of one process.
        for k in range(len(shards[0]) // b):
            together = sorted(i for s in shards for i in s[k * b : (k + 1) * b])
            assert together == sorted(single[k * b * world : (k + 1) * b * world])


def test_sharded_sampler_order_depends_on_seed_and_epoch_only() -> None:
    s = ShardedEpochSampler(50, shuffle=True, seed=1)
    assert isinstance(s, torch.utils.data.DistributedSampler)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(e0) == sorted(e1) == list(range(50))
    torch.manual_seed(123)  # global RNG does not matter
    t = ShardedEpochSampler(50, shuffle=True, seed=1)
    t.set_epoch(1)
    assert list(t) == e1
    assert list(ShardedEpochSampler(50, shuffle=True, seed=2)) != e0


def test_eval_sampler_splits_without_repeats() -> None:
    shards = [list(ShardedEpochSampler(7, shuffle=False, rank=r, world_size=3, pad=False)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(ShardedEpochSampler(7, shuffle=False, rank=r, world_size=3, pad=False)) for r in range(3)] == [3, 2, 2]


def test_single_process_context_and_device_errors() -> None:
    ctx = setup("cpu")
    assert ctx == DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert ctx.is_main and not ctx.distributed
    with pytest.raises(ValueError, match="device='gpu'"):
        resolve_device("gpu")
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(0)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("mode,message", [
    ("masks255", r"ValueError: the masks of the first training batch hold values in \[0, 255\]"),
    ("diverge", r"NonFiniteStateError: .*epoch 1 \(1\.running_var"),
])  # fmt: skip
def test_torchrun_every_process_stops_with_the_same_error(tmp_path: Path, mode: str, message: str) -> None:
    """A check that fails in one process only (rank 1's masks) or in all must stop every process
    with the same error, none left waiting in a collective."""
    import re

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(tmp_path / "run"), "4", mode,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    # both ranks report it (torchrun prefixes nothing without --tee; count the raises)
    assert len(re.findall(message, proc.stderr)) == 2, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "last.pt").exists()
