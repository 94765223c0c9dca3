"""Long-range segmentation benchmark: where spatial recurrence wins, against global pooling and attention.

Trains seven models on each synthetic long-range task of ``spatialrec.data.synthetic`` (every
task of its registry by default, ``TASK_REGISTRY``), with the same parameter budget, optimiser,
schedule, loss, data and batch order, for several seeds, and reports test Dice (mean and spread
over seeds), HD95, training wall time, time per step (also as a ratio to ``transunet`` in the
same job) and peak memory, grouped by the tasks' kind:

- "statistic" tasks (``cue_any_side``, ``inside_outside``, ``same_shape``, ``minority_kind``):
  a global statistic of the image decides the label, so a global pooling path can solve them;
- "relational" tasks (``connected_to_marker``, ``nearer_marker``, ``same_band``,
  ``inside_which_region``): a spatial relation decides it, and the labels can flip with the
  image histogram unchanged.

The models (all depth 2 on 48 x 48 unless said otherwise):

- ``unet``: plain U-Net (VGG blocks), no long-range path; its receptive field is a square of
  a few dozen pixels.
- ``unet_large_rf``: plain U-Net with two more levels (depth 4, a 3 x 3 bottleneck), so its
  receptive field covers the whole image from every pixel: is receptive field alone enough?
- ``pool_unet``: ``unet`` with a squeeze-and-excitation block on the deepest map (global average
  pool -> MLP -> channel gates): a global-statistic path, no recurrence, no attention.
- ``sdn_unet``: ``unet`` with an SDN block at the deepest level (12 x 12), sweeping right, down,
  left, up (all four directions: the cues of these tasks can be on any side of the target).
- ``sdn_unet_published``: the same network and parameters with the published SDN cell
  (``carry="prior"``, serial sweeps, ``spatialrec.layers.PUBLISHED_CELL``): ``sdn_unet`` before the
  cell options.
- ``transunet``: ``unet`` with a 2-layer Transformer on the deepest map (one token per pixel).
- ``sdn_transunet``: ``transunet`` (token width 16) with an SDN block (four directions) in the
  decoder at 1/2 resolution, the registry's SDN-Transformer hybrid.

Each model's width knob (``base_width``, ``state_size`` or ``transformer_dim``) is chosen, before
any training, as the value whose parameter count is closest to ``--params`` (all within 10%;
the counts are printed and stored).

``--sdn-args JSON`` merges extra keyword arguments into the SDN models' registry arguments
(``sdn_unet``, ``sdn_transunet``; e.g. ``'{"composition": "parallel"}'``) before their knob is
matched to the budget; it is recorded in the JSON output.

Outputs (``--out``, default ``benchmarks/results``): ``holistic.json`` (one record per task x
model x seed with its configuration and the machine), ``holistic.md`` (the table grouped by task
kind, mean Dice per model and kind, and the targets; the time target is read from
``holistic_cost.json`` in the same folder when ``--cost`` has written it), ``holistic_erf.png`` (per task, per model: which input pixels can change the
prediction at one pixel of the target object, the effective receptive field of the seed-0
model on the same test image) and ``holistic_predictions.png`` (one test image per task, the
predictions of every model). JSON and Markdown are rewritten after every finished job, so an
interrupted run leaves the part that completed.

Usage::

    PYTHONPATH=src python benchmarks/bench_holistic.py --quick    # one task, one seed, few steps (~minutes)
    PYTHONPATH=src nice -n 19 python benchmarks/bench_holistic.py   # the full run (8 tasks x 6 models x 3 seeds)
    PYTHONPATH=src nice -n 19 python benchmarks/bench_holistic.py --cost   # time per step at 96 x 96

The defaults (48 x 48, 300 steps of batch 8, lr 2e-3, 1200 training images, 60k parameters) are
sized for a shared 2-core CPU in about an hour; they are short for these tasks: read the numbers
as "what each model learns in 300 steps", and raise ``--steps`` where there is compute.
    python benchmarks/bench_holistic.py --tasks same_shape --seeds 0 1 --steps 1000 --workers 2

    # Cost only: time per step interleaved over the models, on a batch of one task of each kind
    # (--cost-tasks, default cue_any_side and nearer_marker) at --cost-sizes (default 96).
    PYTHONPATH=src python benchmarks/bench_holistic.py --cost --cost-sizes 96

    # The longer-training check in docs/holistic.md (settings fixed before it ran): seed 0 only,
    # 4x the steps, 4000 training images (2.4 passes), one job per task in parallel. The 5-task
    # version was started and stopped (it slowed the main run past the time available); what
    # ran is the 3-task version: cue_any_side (where sdn_unet stayed at unet's level and the
    # Transformers did not) and the two tasks where almost no run left the mark-everything level.
    PYTHONPATH=src nice -n 19 python benchmarks/bench_holistic.py --seeds 0 --steps 1200 \
        --num-train 4000 --workers 3 --tasks cue_any_side same_shape minority_kind \
        --out benchmarks/results/long
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

try:
    import spatialrec
except ImportError:  # run from a checkout without installing: use its sources
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import spatialrec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import reset_peak_rss, status_kib, trim_heap  # noqa: E402  (the same memory method)

from spatialrec.analysis import effective_receptive_field, erf_rgb, prediction_rgb, receptive_field_support  # noqa: E402
from spatialrec.data import make_task  # noqa: E402
from spatialrec.blocks import set_sdn_cell  # noqa: E402
from spatialrec.layers import PUBLISHED_CELL  # noqa: E402
from spatialrec.data.synthetic import TASK_KINDS, TASK_REGISTRY, list_tasks, task_kind  # noqa: E402
from spatialrec.losses import DiceCELoss  # noqa: E402
from spatialrec.metrics import dice, hd95, to_masks  # noqa: E402

ALL_DIRECTIONS = ("right", "down", "left", "up")

# name -> (registry entry, fixed arguments, (knob, candidate values)). Decided before any run.
MODEL_SPECS: dict[str, tuple[str, dict[str, Any], tuple[str, list[int]]]] = {
    "unet": ("unet", {"depth": 2}, ("base_width", list(range(4, 33)))),
    "unet_large_rf": ("unet", {"depth": 4}, ("base_width", list(range(2, 17)))),
    "pool_unet": ("pool_unet", {"depth": 2}, ("base_width", list(range(4, 33)))),
    "sdn_unet": (
        "sdn_unet",
        {"depth": 2, "base_width": 8, "encoder_sdn": (2,), "directions": ALL_DIRECTIONS},
        ("state_size", list(range(4, 97))),
    ),
    # The same network with the published SDN cell (carry="prior", serial sweeps; set after
    # building, see build()): what sdn_unet was before the cell options.
    "sdn_unet_published": (
        "sdn_unet",
        {"depth": 2, "base_width": 8, "encoder_sdn": (2,), "directions": ALL_DIRECTIONS},
        ("state_size", list(range(4, 97))),
    ),
    "transunet": (
        "transunet",
        {"depth": 2, "base_width": 8, "transformer_layers": 2, "transformer_heads": 4, "mlp_ratio": 2.0, "dropout": 0.0},
        ("transformer_dim", list(range(8, 257, 4))),
    ),
    "sdn_transunet": (
        "sdn_transunet",
        {"depth": 2, "base_width": 8, "transformer_dim": 16, "transformer_layers": 2, "transformer_heads": 4,
         "mlp_ratio": 2.0, "dropout": 0.0, "decoder_sdn": (1,), "directions": ALL_DIRECTIONS},
        ("state_size", list(range(4, 97))),
    ),
}  # fmt: skip
TIME_BASELINE = "transunet"
COST_TARGET_SIZE, COST_TARGET_RATIO = 96, 0.6  # sdn_unet's step <= 0.6 x transunet's at 96 x 96


def is_sdn(name: str) -> bool:
    """Whether ``--sdn-args`` applies to model ``name`` (its registry entry has SDN layers)."""
    return "sdn" in MODEL_SPECS[name][0]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--sdn-args must be a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--sdn-args must be a JSON object, got {text!r}")
    return value


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=None, choices=list(TASK_REGISTRY), help="default: every registered task")
    p.add_argument("--models", nargs="+", default=list(MODEL_SPECS), choices=list(MODEL_SPECS))
    p.add_argument("--sdn-args", type=_json_object, default={},
                   help="JSON object of extra registry arguments for the SDN models (sdn_unet, sdn_transunet), "
                   "e.g. '{\"composition\": \"parallel\"}'; applied before the budget matching")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="data, initialisation and batch-order seeds (default 0 1 2)")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--params", type=int, default=60_000, help="parameter budget every model is matched to (+-10%%)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default 300)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-annealed to 0 over --steps")
    p.add_argument("--num-train", type=int, default=None, help="training images (pre-rendered once per task and seed; default 1200)")
    p.add_argument("--num-test", type=int, default=None, help="test images (default 128)")
    p.add_argument("--workers", type=int, default=2, help="parallel (task, seed) jobs, each with --threads threads")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--device", default="cpu")
    p.add_argument("--erf-seed", type=int, default=0, help="seed whose models the figures show")
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results; --quick: runs/holistic_quick)")
    p.add_argument("--cost", action="store_true",
                   help="only measure time per training step, interleaved round-robin over the models at --cost-sizes "
                   "(so that changing machine load hits every model alike); writes holistic_cost.json/.md")  # fmt: skip
    p.add_argument("--cost-sizes", nargs="+", type=int, default=[96], help="image sides for --cost")
    p.add_argument("--cost-tasks", nargs="+", default=["cue_any_side", "nearer_marker"], choices=list(TASK_REGISTRY),
                   help="tasks whose images --cost trains on (default: one of each kind)")  # fmt: skip
    p.add_argument("--cost-rounds", type=int, default=5, help="timed steps per model and size for --cost")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished (task, seed) jobs of --out/holistic.json (same settings required) and run only "
                   "the missing ones: a crashed or stopped run loses nothing it finished")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="smoke run: cue_any_side, seed 0, 60 steps, 480 training and 32 test images "
                   "(unless --tasks, --seeds, --steps, --num-train or --num-test say otherwise)")  # fmt: skip
    args = p.parse_args(argv)
    # Defaults filled in after parsing, so that --quick changes only what is not given.
    full = {"tasks": list(TASK_REGISTRY), "seeds": [0, 1, 2], "steps": 300, "num_train": 1200, "num_test": 128}
    quick = {"tasks": ["cue_any_side"], "seeds": [0], "steps": 60, "num_train": 480, "num_test": 32}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = Path("runs/holistic_quick") if args.quick else Path(__file__).resolve().parent / "results"
    for name in ("steps", "batch_size", "num_train", "num_test", "workers", "threads", "params"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def build(name: str, image_size: int, knob_value: int, sdn_args: Optional[dict[str, Any]] = None) -> torch.nn.Module:
    """Model ``name`` at ``image_size`` with its knob at ``knob_value`` (``sdn_args`` merged in for SDN models)."""
    registry, fixed, (knob, _) = MODEL_SPECS[name]
    kw = {**fixed, **(sdn_args or {} if is_sdn(name) else {})}
    kw[knob] = knob_value
    if "transunet" in registry:
        kw["img_size"] = image_size
    model = spatialrec.create_model(registry, in_channels=1, num_classes=1, **kw)
    if name.endswith("_published"):
        set_sdn_cell(model, **PUBLISHED_CELL)
    return model


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def match_budget(names: list[str], image_size: int, budget: int, sdn_args: Optional[dict[str, Any]] = None) -> dict[str, dict[str, Any]]:
    """For each model the knob value whose parameter count is closest to ``budget`` (within 10%)."""
    out = {}
    for name in names:
        registry, fixed, (knob, values) = MODEL_SPECS[name]
        extra = dict(sdn_args or {}) if is_sdn(name) else {}
        best = min(values, key=lambda v: (abs(count(build(name, image_size, v, extra)) - budget), v))
        params = count(build(name, image_size, best, extra))
        if abs(params - budget) > 0.1 * budget:
            raise SystemExit(f"{name}: no {knob} in {values[0]}..{values[-1]} gives {budget} +-10% parameters (best {params})")
        out[name] = {"registry": registry, "args": {**fixed, **extra, knob: best}, "knob": knob, "params": params,
                     "sdn_args": extra}  # fmt: skip
    return out


def rf_covers_image(model: torch.nn.Module, image_size: int) -> float:
    """Fraction of the image that can influence the top-left output pixel (1.0: the receptive
    field covers the image from a corner, hence from everywhere). Random input, eval mode."""
    x = torch.randn(1, 1, image_size, image_size, generator=torch.Generator().manual_seed(0))
    support = receptive_field_support(effective_receptive_field(model, x, (0, 0)))
    return float(support.float().mean())


def render(task: str, n: int, split: str, seed: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = make_task(task, n, split, seed, image_size=image_size)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items])


def _rss_kib(field: str) -> int:
    try:
        return status_kib(field)
    except OSError:
        return -1


def target_point(mask: torch.Tensor) -> tuple[int, int]:
    """The target pixel nearest to the target's centroid: ``mask: (H, W)`` 0/1."""
    pts = mask.nonzero().float()
    c = pts.mean(0)
    r, col = pts[((pts - c) ** 2).sum(1).argmin()].long().tolist()
    return int(r), int(col)


def train_and_test(name: str, spec: dict[str, Any], data: dict[str, torch.Tensor], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.manual_seed(seed)  # the same initialisation stream for every model
    model = build(name, args.image_size, spec["args"][spec["knob"]], spec["sdn_args"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    loss_fn = DiceCELoss()
    x_train, y_train = data["x_train"], data["y_train"]
    order = torch.Generator().manual_seed(seed)  # the same batch order for every model
    perm, pos = torch.randperm(len(x_train), generator=order), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem_before = torch.cuda.memory_allocated(device)
    else:
        trim_heap()
        reset_peak_rss()
        mem_before = _rss_kib("VmRSS") * 1024
    step_times, losses = [], []
    model.train()
    t_start = time.perf_counter()
    for _step in range(args.steps):
        if pos + args.batch_size > len(perm):
            perm, pos = torch.randperm(len(x_train), generator=order), 0
        idx = perm[pos : pos + args.batch_size]
        pos += args.batch_size
        x, y = x_train[idx].to(device), y_train[idx].to(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
    train_time = time.perf_counter() - t_start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - mem_before
    else:
        peak = (_rss_kib("VmHWM") * 1024 - mem_before) if mem_before >= 0 else -1

    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(data["x_test"]), 32):
            preds.append(to_masks(model(data["x_test"][i : i + 32].to(device))).cpu())
    pred = torch.cat(preds)
    target = data["y_test"].bool()
    d = dice(pred, target)[:, 0]
    h = hd95(pred, target)[:, 0]
    finite = h[torch.isfinite(h)]
    timed = step_times[5:] if len(step_times) > 10 else step_times
    rec = {
        "model": name,
        "seed": seed,
        "params": count(model),
        "model_args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec["args"].items()},
        "registry": spec["registry"],
        "steps_done": len(step_times),
        "final_loss": losses[-1],
        "test_dice": float(d.mean()),
        "test_dice_per_image_sd": float(d.std()) if len(d) > 1 else 0.0,
        "test_hd95": float(finite.mean()) if len(finite) else None,
        "test_hd95_infinite": int((~torch.isfinite(h)).sum()),
        "train_time_s": train_time,
        "step_time_ms_median": 1000 * statistics.median(timed),
        "peak_memory_mb": peak / 2**20 if peak >= 0 else None,
    }
    extras: dict[str, Any] = {}
    if seed == args.erf_seed:
        x0 = data["x_test"][0]
        point = target_point(data["y_test"][0, 0])
        erf = effective_receptive_field(model, x0.to(device), point).cpu()
        support = receptive_field_support(erf)
        rows, cols = torch.meshgrid(torch.arange(erf.shape[0]), torch.arange(erf.shape[1]), indexing="ij")
        dist = ((rows - point[0]) ** 2 + (cols - point[1]) ** 2).float().sqrt()
        rec["erf"] = {
            "point": list(point),
            "support_fraction": float(support.float().mean()),
            "support_1pct_fraction": float(receptive_field_support(erf, 0.01).float().mean()),
            "mass_beyond_16px": float(erf[dist > 16].sum() / erf.sum()) if erf.sum() > 0 else 0.0,
        }
        extras = {"erf": erf, "pred": pred[:1, 0].clone(), "point": point}
    return {"record": rec, "extras": extras}


def run_job(job: tuple[str, int, dict[str, dict[str, Any]], argparse.Namespace]) -> dict[str, Any]:
    task, seed, specs, args = job
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    x_train, y_train = render(task, args.num_train, "train", seed, args.image_size)
    x_test, y_test = render(task, args.num_test, "test", seed, args.image_size)
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    render_time = time.perf_counter() - t0
    out = []
    for name in specs:
        r = train_and_test(name, specs[name], data, seed, args)
        r["record"].update(task=task, render_time_s=render_time, load_avg_after=os.getloadavg()[0])
        print(f"  {task:<20} seed {seed} {name:<14} Dice {r['record']['test_dice']:.3f}  "
              f"{r['record']['step_time_ms_median']:.0f} ms/step  {r['record']['train_time_s']:.0f} s", flush=True)  # fmt: skip
        out.append(r)
    base = next((r["record"]["step_time_ms_median"] for r in out if r["record"]["model"] == TIME_BASELINE), None)
    for r in out:  # ratios within one job: the same process, data and machine load
        r["record"]["step_time_vs_transunet"] = r["record"]["step_time_ms_median"] / base if base else None
    return {"task": task, "seed": seed, "results": out, "x0": x_test[0, 0], "y0": y_test[0, 0]}


def machine(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spatialrec": getattr(spatialrec, "__version__", "unknown"),
        "spatialrec_path": str(Path(spatialrec.__file__).parent),
        "device": args.device,
        "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "threads_per_job": args.threads,
        "workers": args.workers,
        "load_avg_at_start": os.getloadavg()[0],
        "note": "shared 2-core CPU; run under nice -n 19 beside other jobs: absolute times are noisy, ratios within a job less so",
    }


# ----------------------------------------------------------------------------- report


def summarise(records: list[dict[str, Any]], tasks: list[str], models: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        for name in models:
            rs = [r for r in records if r["task"] == task and r["model"] == name]
            if not rs:
                continue
            ds = [r["test_dice"] for r in rs]
            hs = [r["test_hd95"] for r in rs if r["test_hd95"] is not None]
            ratios = [r["step_time_vs_transunet"] for r in rs if r.get("step_time_vs_transunet")]
            mems = [r["peak_memory_mb"] for r in rs if r["peak_memory_mb"] is not None]
            table.setdefault(task, {})[name] = {
                "n": len(rs),
                "params": rs[0]["params"],
                "dice_mean": statistics.mean(ds),
                "dice_sd": statistics.stdev(ds) if len(ds) > 1 else 0.0,
                "dice_min": min(ds),
                "dice_max": max(ds),
                "hd95": statistics.mean(hs) if hs else None,
                "hd95_infinite": sum(r["test_hd95_infinite"] for r in rs),
                "train_time_s": statistics.mean(r["train_time_s"] for r in rs),
                "step_ms": statistics.median(r["step_time_ms_median"] for r in rs),
                "step_vs_transunet": statistics.median(ratios) if ratios else None,
                "peak_mb": statistics.median(mems) if mems else None,
            }
    return table


def cost_ratios(out: Path) -> Optional[dict[str, float]]:
    """``sdn_unet``'s step time over ``transunet``'s at 96 x 96, per timed task, from
    ``holistic_cost.json`` in ``out`` (written by ``--cost``); ``None`` when there is none."""
    path = out / "holistic_cost.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text()).get("rows", [])
    ratios = {
        r.get("task", "random"): r["vs_transunet"]
        for r in rows
        if r["size"] == COST_TARGET_SIZE and r["model"] == "sdn_unet" and r.get("vs_transunet") is not None
    }
    return ratios or None


def targets(table: dict[str, dict[str, dict[str, Any]]], cost: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """The targets, evaluated on this run's own numbers (and ``cost``: see :func:`cost_ratios`).

    Statistic tasks: ``sdn_unet`` >= 0.95 on ``cue_any_side`` (mean over seeds) and within 0.02 of
    the best model on each statistic task. Relational tasks: ``sdn_unet`` best or within 0.02 of
    the best on every one, and >= 0.15 above ``pool_unet`` on at least two. Cost: at 96 x 96,
    ``sdn_unet``'s step time <= 0.6 x ``transunet``'s.
    """
    per_task: dict[str, dict[str, Any]] = {}
    for task, rows in table.items():
        if "sdn_unet" not in rows:
            continue
        best = max(r["dice_mean"] for r in rows.values())
        s = rows["sdn_unet"]
        per_task[task] = {
            "kind": task_kind(task),
            "best_model": max(rows, key=lambda n: rows[n]["dice_mean"]),
            "sdn_unet_dice": s["dice_mean"],
            "sdn_unet_within_0.02_of_best": s["dice_mean"] >= best - 0.02,
            "sdn_unet_minus_pool_unet": s["dice_mean"] - rows["pool_unet"]["dice_mean"] if "pool_unet" in rows else None,
        }
    stat = {t: v for t, v in per_task.items() if v["kind"] == "statistic"}
    rel = {t: v for t, v in per_task.items() if v["kind"] == "relational"}
    cue = per_task.get("cue_any_side", {}).get("sdn_unet_dice")
    n_pool_gap = sum(1 for v in rel.values() if v["sdn_unet_minus_pool_unet"] is not None and v["sdn_unet_minus_pool_unet"] >= 0.15)
    out: dict[str, Any] = {
        "per_task": per_task,
        "statistic": {
            "sdn_unet_cue_any_side": cue,
            "target_cue_any_side_ge_0.95": cue is not None and cue >= 0.95,
            "sdn_unet_within_0.02_of_best_on": [t for t, v in stat.items() if v["sdn_unet_within_0.02_of_best"]],
            "target_within_0.02_on_every_statistic_task": bool(stat) and all(v["sdn_unet_within_0.02_of_best"] for v in stat.values()),
        },
        "relational": {
            "sdn_unet_within_0.02_of_best_on": [t for t, v in rel.items() if v["sdn_unet_within_0.02_of_best"]],
            "target_within_0.02_on_every_relational_task": bool(rel) and all(v["sdn_unet_within_0.02_of_best"] for v in rel.values()),
            "sdn_unet_0.15_above_pool_unet_on": [t for t, v in rel.items() if (v["sdn_unet_minus_pool_unet"] or 0) >= 0.15],
            "target_0.15_above_pool_unet_on_2": n_pool_gap >= 2,
        },
        "cost": {
            "sdn_unet_over_transunet_at_96": cost,
            "target_le_0.6": None if cost is None else all(r <= COST_TARGET_RATIO for r in cost.values()),
        },
    }
    return out


def kind_means(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Optional[float]]]:
    """Mean over the tasks of each kind of each model's mean Dice: ``{model: {kind: Dice}}``."""
    models = list(dict.fromkeys(m for rows in table.values() for m in rows))
    out: dict[str, dict[str, Optional[float]]] = {}
    for m in models:
        out[m] = {}
        for kind in TASK_KINDS:
            ds = [rows[m]["dice_mean"] for t, rows in table.items() if task_kind(t) == kind and m in rows]
            out[m][kind] = statistics.mean(ds) if ds else None
    return out


def _met(flag: Optional[bool]) -> str:
    return "not measured" if flag is None else ("met" if flag else "NOT met")


def markdown(table: dict[str, dict[str, dict[str, Any]]], tg: dict[str, Any], config: dict[str, Any]) -> str:
    lines = [
        "# Long-range benchmark (`benchmarks/bench_holistic.py`)",
        "",
        f"{config['image_size']} x {config['image_size']} images, {config['steps']} steps of batch {config['batch_size']}, "
        f"Adam lr {config['lr']} cosine to 0, Dice+BCE loss, {config['num_train']} training and {config['num_test']} test "
        f"images per task and seed, seeds {config['seeds']}, parameter budget {config['params']:,} (+-10%)"
        + (f", SDN models with {json.dumps(config['sdn_args'])}" if config.get("sdn_args") else "")
        + ".",
        "Dice: mean +- standard deviation over seeds [min, max]; HD95 in pixels, mean over seeds of the mean over test "
        "images where it is finite (inf: images with an empty prediction, summed over seeds); time per step: median; "
        "x transunet: median over seeds of the ratio to `transunet` measured in the same job.",
    ]
    for kind in TASK_KINDS:
        tasks = [t for t in table if task_kind(t) == kind]
        if not tasks:
            continue
        lines += [
            "",
            f"## {kind.capitalize()} tasks",
            "",
            "| task | model | params | test Dice | HD95 (px) | inf | train time (s) | ms / step | x transunet | peak MB |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for task in tasks:
            rows = table[task]
            best = max(r["dice_mean"] for r in rows.values())
            for name, r in rows.items():
                dice_txt = f"{r['dice_mean']:.3f} +- {r['dice_sd']:.3f} [{r['dice_min']:.2f}, {r['dice_max']:.2f}]"
                if r["dice_mean"] == best:
                    dice_txt = f"**{dice_txt}**"
                hd = "n/a" if r["hd95"] is None else f"{r['hd95']:.1f}"
                ratio = "n/a" if r["step_vs_transunet"] is None else f"{r['step_vs_transunet']:.2f}"
                mem = "n/a" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
                lines.append(
                    f"| {task} | {name} | {r['params']:,} | {dice_txt} | {hd} | {r['hd95_infinite']} | "
                    f"{r['train_time_s']:.0f} | {r['step_ms']:.0f} | {ratio} | {mem} |"
                )
    means = kind_means(table)
    lines += [
        "",
        "## Which models learn what: mean Dice over the tasks of each kind",
        "",
        "| model | " + " | ".join(TASK_KINDS) + " |",
        "|---|" + "---:|" * len(TASK_KINDS),
    ]
    for m, by_kind in means.items():
        lines.append(f"| {m} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in by_kind.values()) + " |")
    st, rel, cost = tg["statistic"], tg["relational"], tg["cost"]
    cue = st["sdn_unet_cue_any_side"]
    lines += ["", "## Targets (from this run's numbers)", ""]
    for task, v in tg["per_task"].items():
        gap = v["sdn_unet_minus_pool_unet"]
        lines.append(
            f"- {task} ({v['kind']}): best {v['best_model']}; sdn_unet {v['sdn_unet_dice']:.3f}, within 0.02 of best: "
            f"{v['sdn_unet_within_0.02_of_best']}; sdn_unet - pool_unet: {'n/a' if gap is None else f'{gap:+.3f}'}"
        )
    ratios = cost["sdn_unet_over_transunet_at_96"]
    lines += [
        "",
        f"- Statistic: sdn_unet >= 0.95 on cue_any_side (mean of seeds): {'n/a' if cue is None else f'{cue:.3f}'}, "
        f"{_met(st['target_cue_any_side_ge_0.95'] if cue is not None else None)}; within 0.02 of the best on every "
        f"statistic task (on {', '.join(st['sdn_unet_within_0.02_of_best_on']) or 'none'}): "
        f"{_met(st['target_within_0.02_on_every_statistic_task'])}",
        f"- Relational: sdn_unet best or within 0.02 of the best on every relational task (on "
        f"{', '.join(rel['sdn_unet_within_0.02_of_best_on']) or 'none'}): {_met(rel['target_within_0.02_on_every_relational_task'])}; "
        f">= 0.15 above pool_unet on at least two (on {', '.join(rel['sdn_unet_0.15_above_pool_unet_on']) or 'none'}): "
        f"{_met(rel['target_0.15_above_pool_unet_on_2'])}",
        f"- Cost at {COST_TARGET_SIZE} x {COST_TARGET_SIZE} (from `--cost`, holistic_cost.json): sdn_unet step <= "
        f"{COST_TARGET_RATIO} x transunet's: "
        + ("not measured (run with --cost --cost-sizes 96 into the same --out)" if ratios is None else
           ", ".join(f"{t} {r:.2f}" for t, r in ratios.items()) + f": {_met(cost['target_le_0.6'])}"),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def _grey(img: torch.Tensor) -> torch.Tensor:
    lo, hi = float(img.min()), float(img.max())
    g = ((img - lo) / max(hi - lo, 1e-6) * 255).clamp(0, 255).to(torch.uint8)
    return torch.stack([g] * 3, -1)


def save_figures(out: Path, jobs: list[dict[str, Any]], models: list[str], erf_seed: int) -> list[Path]:
    """``holistic_erf.png`` and ``holistic_predictions.png`` (Pillow only)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as err:
        raise ImportError("the figures need Pillow: pip install 'spatialrec[data]'") from err
    rows = [j for j in jobs if j["seed"] == erf_seed and all(r["extras"] for r in j["results"])]
    if not rows:
        return []
    rows.sort(key=lambda j: list(TASK_REGISTRY).index(j["task"]))
    h, w = rows[0]["x0"].shape
    scale, pad, header, label = 3, 6, 16, 110
    tw, th = w * scale, h * scale
    paths = []
    for kind in ("erf", "predictions"):
        cols = ["input", *models] if kind == "erf" else ["input", "ground truth", *models]
        canvas = Image.new("RGB", (label + len(cols) * (tw + pad) + pad, header + len(rows) * (th + pad) + pad + 30), "white")
        draw = ImageDraw.Draw(canvas)
        for c, name in enumerate(cols):
            draw.text((label + pad + c * (tw + pad), 3), name, fill="black")
        for i, job in enumerate(rows):
            y = header + i * (th + pad)
            draw.text((4, y + th // 2 - 6), job["task"], fill="black")
            by_model = {r["record"]["model"]: r for r in job["results"]}
            point = by_model[models[0]]["extras"]["point"]
            inp = _grey(job["x0"])
            if kind == "erf":
                inp[point[0], point[1]] = torch.tensor([0, 255, 0], dtype=torch.uint8)
                tiles = [inp] + [erf_rgb(by_model[m]["extras"]["erf"]) for m in models]
            else:
                t = job["y0"].bool()
                tiles = [inp, torch.stack([t.to(torch.uint8) * 255] * 3, -1)]
                tiles += [prediction_rgb(by_model[m]["extras"]["pred"][0], t) for m in models]
            for c, tile in enumerate(tiles):
                im = Image.fromarray(tile.numpy(), "RGB").resize((tw, th), Image.NEAREST)
                canvas.paste(im, (label + pad + c * (tw + pad), y))
        y = header + len(rows) * (th + pad) + 2
        if kind == "erf":
            note = ("|d logit(green pixel) / d input|, log scale over 4 decades (black: no influence), seed "
                    f"{erf_seed} models, first test image")  # fmt: skip
        else:
            note = "white: correct, red: false positive, blue: missed; seed-0 models, first test image"
        draw.text((pad, y), note, fill="black")
        path = out / f"holistic_{kind}.png"
        canvas.save(path)
        paths.append(path)
    return paths


def write_report(args: argparse.Namespace, config: dict[str, Any], specs: dict[str, Any], mach: dict[str, Any],
                 jobs: list[dict[str, Any]], rf: dict[str, float], wall: float) -> None:  # fmt: skip
    records = [r["record"] for j in jobs for r in j["results"]]
    records.sort(key=lambda r: (list(TASK_REGISTRY).index(r["task"]), args.models.index(r["model"]), r["seed"]))
    table = summarise(records, [t for t in TASK_REGISTRY if t in args.tasks], args.models)
    tg = targets(table, cost_ratios(args.out))
    doc = {
        "benchmark": "bench_holistic",
        "config": config,
        "machine": mach,
        "models": {n: {**s, "rf_fraction_from_corner": rf[n]} for n, s in specs.items()},
        "wall_time_s": wall,
        "complete": len(jobs) == len(args.tasks) * len(args.seeds),
        "summary": table,
        "targets": tg,
        "records": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "holistic.json").write_text(json.dumps(doc, indent=1, default=list) + "\n")
    (args.out / "holistic.md").write_text(markdown(table, tg, config))


def measure_cost(args: argparse.Namespace, specs: dict[str, dict[str, Any]]) -> int:
    """Median time of one training step per model, image size and task (a batch of that task's
    training images), steps interleaved round-robin over the models."""
    device = torch.device(args.device)
    loss_fn = DiceCELoss()
    rows = []
    for size in args.cost_sizes:
        nets, opts = {}, {}
        for name in args.models:
            torch.manual_seed(0)
            nets[name] = build(name, size, specs[name]["args"][specs[name]["knob"]], specs[name]["sdn_args"]).to(device).train()
            opts[name] = torch.optim.Adam(nets[name].parameters(), lr=args.lr)
        for task in args.cost_tasks:
            x, y = (t.to(device) for t in render(task, args.batch_size, "train", 0, size))
            times: dict[str, list[float]] = {name: [] for name in args.models}

            def step(name: str) -> float:
                t0 = time.perf_counter()
                opts[name].zero_grad(set_to_none=True)
                loss_fn(nets[name](x), y).backward()
                opts[name].step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return time.perf_counter() - t0

            for name in args.models:  # warm-up (Adam state, allocator)
                step(name)
            for _ in range(args.cost_rounds):
                for name in args.models:
                    times[name].append(step(name))
            base = statistics.median(times[TIME_BASELINE]) if TIME_BASELINE in times else None
            for name in args.models:
                med = statistics.median(times[name])
                rows.append({"size": size, "task": task, "kind": task_kind(task), "model": name, "params": count(nets[name]),
                             "step_ms": 1000 * med, "vs_transunet": med / base if base else None})  # fmt: skip
                print(f"  {size:>4}px {task:<20} {name:<14} {1000 * med:8.0f} ms/step  "
                      f"x transunet {rows[-1]['vs_transunet'] or float('nan'):.2f}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "bench_holistic --cost", "batch_size": args.batch_size, "rounds": args.cost_rounds,
           "sdn_args": args.sdn_args, "models": specs, "machine": machine(args), "rows": rows}  # fmt: skip
    (args.out / "holistic_cost.json").write_text(json.dumps(doc, indent=1, default=list) + "\n")
    lines = [
        f"Time per training step (batch {args.batch_size} of the task's training images, median of {args.cost_rounds} "
        "steps interleaved round-robin over the models; the same widths as the benchmark, transunet position "
        "embeddings laid out for each size; in brackets: x transunet):",
        "",
        "| image | task (kind) | " + " | ".join(args.models) + " |",
        "|---|---|" + "---:|" * len(args.models),
    ]
    for size in args.cost_sizes:
        for task in args.cost_tasks:
            cells = [r for r in rows if r["size"] == size and r["task"] == task]
            lines.append(f"| {size} x {size} | {task} ({task_kind(task)}) | " + " | ".join(
                f"{r['step_ms']:.0f} ms ({r['vs_transunet']:.2f})" if r["vs_transunet"] else f"{r['step_ms']:.0f} ms" for r in cells
            ) + " |")  # fmt: skip
    ratios = cost_ratios(args.out)
    if ratios is not None:
        ok = all(r <= COST_TARGET_RATIO for r in ratios.values())
        lines += ["", f"Target: sdn_unet step <= {COST_TARGET_RATIO} x transunet's at {COST_TARGET_SIZE} x {COST_TARGET_SIZE}: "
                  + ", ".join(f"{t} {r:.2f}" for t, r in ratios.items()) + f": {_met(ok)}"]  # fmt: skip
    lines.append("")
    (args.out / "holistic_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


# Settings that must match for --resume to mix a previous run's records with new ones.
RESUME_KEYS = ("image_size", "params", "steps", "batch_size", "lr", "num_train", "num_test", "threads", "device", "sdn_args")


def resumed_jobs(args: argparse.Namespace, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished jobs of ``--out/holistic.json`` (every model of the run present for a task and
    seed), as ``run_job`` results without figure extras.

    Raises:
        SystemExit: the file's settings differ from this run's in one of :data:`RESUME_KEYS`.
    """
    path = args.out / "holistic.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    diff = [k for k in RESUME_KEYS if old["config"].get(k) != config.get(k)]
    if diff:
        raise SystemExit(f"--resume: {path} was run with other settings ({', '.join(diff)}); use another --out")
    by_job: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rec in old["records"]:
        if rec["task"] in args.tasks and rec["seed"] in args.seeds and rec["model"] in args.models:
            by_job.setdefault((rec["task"], rec["seed"]), []).append(rec)
    return [
        {"task": t, "seed": s, "results": [{"record": r, "extras": {}} for r in recs]}
        for (t, s), recs in by_job.items()
        if {r["model"] for r in recs} == set(args.models)
    ]


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    specs = match_budget(args.models, args.image_size, args.params, args.sdn_args)
    if args.cost:
        return measure_cost(args, specs)
    rf = {}
    print(f"parameter budget {args.params:,} (+-10%):")
    for name, s in specs.items():
        m = build(name, args.image_size, s["args"][s["knob"]], s["sdn_args"])
        rf[name] = rf_covers_image(m, args.image_size)
        print(f"  {name:<14} {s['params']:>8,}  {s['knob']}={s['args'][s['knob']]:<4} "
              f"receptive field from a corner covers {100 * rf[name]:.0f}% of the image", flush=True)  # fmt: skip
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["optimizer"] = "Adam (betas 0.9, 0.999), no weight decay"
    config["schedule"] = "cosine annealing to 0 over the steps, no warm-up"
    config["loss"] = "DiceCELoss (soft Dice + BCE, sigmoid)"
    config["task_settings"] = "each task's defaults (see spatialrec.data.synthetic) at --image-size"
    mach = machine(args)
    jobs_in = [(task, seed, specs, args) for seed in args.seeds for task in args.tasks]
    done: list[dict[str, Any]] = resumed_jobs(args, config) if args.resume else []
    finished = {(j["task"], j["seed"]) for j in done}
    jobs_in = [j for j in jobs_in if (j[0], j[1]) not in finished]
    if finished:
        print(f"resumed {len(finished)} finished jobs from {args.out / 'holistic.json'}; {len(jobs_in)} to run", flush=True)
    if args.workers > 1:
        with mp.get_context("fork").Pool(args.workers) as pool:
            for res in pool.imap_unordered(run_job, jobs_in):
                done.append(res)
                write_report(args, config, specs, mach, done, rf, time.perf_counter() - t_start)
    else:
        for job in jobs_in:
            done.append(run_job(job))
            write_report(args, config, specs, mach, done, rf, time.perf_counter() - t_start)
    figures = save_figures(args.out, done, args.models, args.erf_seed)
    write_report(args, config, specs, mach, done, rf, time.perf_counter() - t_start)
    print()
    print((args.out / "holistic.md").read_text())
    print("written:", args.out / "holistic.json", args.out / "holistic.md", *figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
