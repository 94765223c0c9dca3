"""fit(): training, files, early stopping, resume, non-finite loss, AMP, clipping, argument errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from spatialrec.train import CSV_COLUMNS, CheckpointError, NonFiniteLossError, fit, load_checkpoint
from .helpers import TinySegmentation, dice_bce_loss, soft_dice_loss, tiny_model

COMMON = dict(loss_fn=soft_dice_loss, device="cpu", progress=False, hd95=False)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_learns_and_writes_files(tmp_path: Path) -> None:
    train, val = TinySegmentation(16, seed=1), TinySegmentation(8, seed=2)
    model = tiny_model()
    kwargs = {**COMMON, "loss_fn": dice_bce_loss}
    result = fit(model, train, val, epochs=8, batch_size=4, lr=3e-2, out_dir=tmp_path, seed=3, **kwargs)

    assert result.epochs_completed == 8 and result.stop_reason == "max_epochs"
    losses = [r["val_loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.7, losses
    assert result.history[-1]["val_dice"] > 0.75
    assert result.best_val_loss == min(losses)
    assert result.best_epoch == 1 + losses.index(min(losses))

    rows = _read_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(losses)

    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 8 and best["epoch"] == result.best_epoch
    assert last["early_stopping"]["best_epoch"] == result.best_epoch
    # restore_best: the model ends with the best epoch's weights.
    for k, v in model.state_dict().items():
        assert torch.equal(v, best["model"][k])

    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["best_epoch"] == result.best_epoch
    assert summary["epochs_completed"] == 8 and summary["stop_reason"] == "max_epochs"
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_early_stopping_counts_patience(tmp_path: Path) -> None:
    # min_delta larger than any possible improvement: only epoch 1 counts as an improvement.
    result = fit(
        tiny_model(), TinySegmentation(8), TinySegmentation(4, seed=5),
        epochs=50, batch_size=4, lr=1e-3, patience=3, min_delta=10.0, **COMMON,
    )  # fmt: skip
    assert result.stop_reason == "early_stopping"
    assert result.epochs_completed == 4  # epoch 1 best, then 3 epochs without improvement
    assert result.best_epoch == 1


def test_time_budget_stops_after_one_epoch() -> None:
    result = fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=50, batch_size=4, time_budget=1e-6, **COMMON)
    assert result.stop_reason == "time_budget" and result.epochs_completed == 1


class _Killed(Exception):
    pass


def _kill_after(epoch: int):
    def hook(row: dict) -> None:
        if row["epoch"] == epoch:
            raise _Killed

    return hook


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path, schedule: str) -> None:
    # Dropout and random flips draw on the global RNG: the resume must restore it exactly.
    kwargs = dict(
        epochs=4, batch_size=3, lr=1e-2, optimizer="adamw", lr_schedule=schedule, grad_clip=0.5,
        patience=10, seed=11, **COMMON,
    )  # fmt: skip

    def data():
        return TinySegmentation(10, seed=1, flip_p=0.5), TinySegmentation(5, seed=2)

    ref = fit(tiny_model(dropout=0.3), *data(), out_dir=tmp_path / "ref", **kwargs)

    with pytest.raises(_Killed):
        fit(tiny_model(dropout=0.3), *data(), out_dir=tmp_path / "run", on_epoch_end=_kill_after(1), **kwargs)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    # A fresh process would build a fresh model (other random init) and draw on the RNG first.
    torch.manual_seed(1234)
    resumed_model = tiny_model(dropout=0.3, seed=99)
    res = fit(resumed_model, *data(), out_dir=tmp_path / "run", resume=True, **kwargs)

    a = load_checkpoint(tmp_path / "ref" / "last.pt")
    b = load_checkpoint(tmp_path / "run" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["val_loss"] for r in res.history] == [r["val_loss"] for r in ref.history]
    assert res.best_epoch == ref.best_epoch
    rows = _read_csv(tmp_path / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert a["scheduler"]["last_epoch" if schedule == "cosine" else "last_epoch"] == b["scheduler"]["last_epoch"]


def test_resume_finished_run_trains_no_more(tmp_path: Path) -> None:
    kwargs = dict(epochs=2, batch_size=4, **COMMON)
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), out_dir=tmp_path, **kwargs)
    before = load_checkpoint(tmp_path / "last.pt")
    res = fit(tiny_model(seed=5), TinySegmentation(8), TinySegmentation(4), out_dir=tmp_path, resume=True, **kwargs)
    after = load_checkpoint(tmp_path / "last.pt")
    assert res.epochs_completed == 2 and after["epoch"] == 2
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    # A higher epoch limit continues the finished run.
    more = fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), out_dir=tmp_path, resume=True,
               **{**kwargs, "epochs": 3})  # fmt: skip
    assert more.epochs_completed == 3 and [r["epoch"] for r in more.history] == [1, 2, 3]


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=1, batch_size=4, out_dir=tmp_path, **COMMON)
    last = tmp_path / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt.*cut short or damaged"):
        fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=2, batch_size=4, out_dir=tmp_path, resume=True, **COMMON)
    last.write_bytes(b"")
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(last)


def test_foreign_or_mismatched_checkpoint(tmp_path: Path) -> None:
    foreign = tmp_path / "weights.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a spatialrec training checkpoint"):
        load_checkpoint(foreign)
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=1, batch_size=4, out_dir=tmp_path / "r", **COMMON)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        fit(tiny_model(width=6), TinySegmentation(8), TinySegmentation(4), epochs=2, batch_size=4,
            out_dir=tmp_path / "r", resume=True, **COMMON)  # fmt: skip


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path: Path) -> None:
    calls = {"n": 0}
    # 8 training samples / batch 4 = 2 steps, then 1 validation call per epoch.
    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = soft_dice_loss(logits, target)
        return loss * float("nan") if calls["n"] == 5 else loss  # epoch 2, step 2

    model = tiny_model()
    kwargs = {**COMMON, "loss_fn": loss_fn}
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2.*last\.pt") as info:
        fit(model, TinySegmentation(8), TinySegmentation(4), epochs=5, batch_size=4, out_dir=tmp_path, **kwargs)
    err = info.value
    assert (err.epoch, err.step) == (2, 2) and math.isnan(err.value)
    assert err.checkpoint == tmp_path / "last.pt"
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len(_read_csv(tmp_path / "metrics.csv")) == 1


def test_non_finite_in_first_epoch_has_no_checkpoint() -> None:
    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target) + float("inf")

    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1.*no checkpoint"):
        fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=2, batch_size=4, **{**COMMON, "loss_fn": loss_fn})


def test_amp_bfloat16_on_cpu_runs_under_autocast() -> None:
    model = tiny_model()
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    res = fit(model, TinySegmentation(8), TinySegmentation(4), epochs=2, batch_size=4, lr=1e-2, amp=True, **COMMON)
    assert torch.bfloat16 in seen
    assert all(math.isfinite(r["val_loss"]) for r in res.history)
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32


def test_grad_clip_bounds_the_gradient_norm() -> None:
    norms: list[float] = []

    def hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        def big_loss(logits, target):
            return 1e3 * soft_dice_loss(logits, target)

        kw = {**COMMON, "loss_fn": big_loss}
        fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=1, batch_size=4, grad_clip=None, **kw)
        unclipped = list(norms)
        norms.clear()
        fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=1, batch_size=4, grad_clip=0.25, **kw)
    finally:
        handle.remove()
    assert max(unclipped) > 1.0
    assert max(norms) <= 0.25 * (1 + 1e-4)


def test_same_seed_same_run_and_other_seed_differs() -> None:
    def run(seed: int) -> list[float]:
        res = fit(tiny_model(dropout=0.2), TinySegmentation(9, flip_p=0.5), TinySegmentation(4), epochs=2,
                  batch_size=2, lr=1e-2, seed=seed, **COMMON)  # fmt: skip
        return [r["train_loss"] for r in res.history]

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_bad_arguments_fail_early(tmp_path: Path) -> None:
    train, val = TinySegmentation(8), TinySegmentation(4)
    with pytest.raises(TypeError, match="train_data must be a Dataset.*DataLoader"):
        fit(tiny_model(), DataLoader(train), val, **COMMON)
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        fit(tiny_model(), train, val, optimizer="sgd", **COMMON)
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        fit(tiny_model(), train, val, lr_schedule="linear", **COMMON)
    with pytest.raises(ValueError, match="epochs must be > 0"):
        fit(tiny_model(), train, val, epochs=0, **COMMON)
    with pytest.raises(ValueError, match="amp_dtype='fp8'"):
        fit(tiny_model(), train, val, amp=True, amp_dtype="fp8", **COMMON)
    with pytest.raises(ValueError, match=r"output has shape \(4, 2, 12, 12\).*num_classes"):
        fit(tiny_model(classes=2), train, val, epochs=1, batch_size=4, **COMMON)
    with pytest.raises(TypeError, match=r"val_data\[0\] must be a dict"):
        fit(tiny_model(), train, [(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))], **COMMON)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(tiny_model(), train, val, out_dir=tmp_path / "none", resume=True, **COMMON)
    fit(tiny_model(), train, val, epochs=1, batch_size=4, out_dir=tmp_path / "run", **COMMON)
    with pytest.raises(FileExistsError, match="already holds a run"):
        fit(tiny_model(), train, val, epochs=1, batch_size=4, out_dir=tmp_path / "run", **COMMON)
    fit(tiny_model(), train, val, epochs=1, batch_size=4, out_dir=tmp_path / "run", overwrite=True, **COMMON)


def test_progress_bar_shows_loss_and_dice(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=1, batch_size=4,
        **{**COMMON, "progress": True})  # fmt: skip
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "dice=" in err


def test_import_does_not_need_tqdm() -> None:
    code = (
        "import sys; sys.modules['tqdm'] = None\n"
        "import spatialrec, spatialrec.train\n"
        "from spatialrec.train.steps import progress_bar\n"
        "try:\n"
        "    progress_bar(True, 1, 'x')\n"
        "except ImportError as e:\n"
        "    assert \"spatialrec[data]\" in str(e), e\n"
        "    print('ok')\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": src}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_amp_float16_uses_a_gradient_scaler_that_is_checkpointed(tmp_path: Path) -> None:
    kwargs = dict(batch_size=4, lr=1e-2, amp=True, amp_dtype="fp16", out_dir=tmp_path, **COMMON)
    fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=1, **kwargs)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["amp_dtype"] == "torch.float16"
    assert ckpt["scaler"] is not None and ckpt["scaler"]["_growth_tracker"] == 2  # two good steps
    res = fit(tiny_model(), TinySegmentation(8), TinySegmentation(4), epochs=2, resume=True, **kwargs)
    assert res.epochs_completed == 2
    assert load_checkpoint(tmp_path / "last.pt")["scaler"]["_growth_tracker"] == 4  # state carried over
