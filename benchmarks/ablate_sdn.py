"""Why does a four-direction SDN not learn a far grey-level cue? An ablation, declared before it runs.

The question (docs/holistic.md, "What recurrence carries, what pooling carries"): on
``cue_any_side`` (segment the object whose kind a stripe on a random border names) the published
four-sweep layer stays at the "mark every object" level (0.66), while two sweeps aimed at the cue
learn it (0.99) and a per-map norm with no sweeps at all learns it too (0.97, a global statistic).

Every arm is the benchmark's ``sdn_unet`` (``benchmarks/bench_holistic.py``: 48 x 48, depth 2,
``base_width=8``, the SDN block at the 12 x 12 level, ``state_size`` matched to 60k parameters)
trained with the benchmark's data, optimiser, schedule, loss, batch order and seeds; only the SDN
layer's forward (or one named setting) changes. The SDN layer of each arm is written here in
plain PyTorch, line by line like ``spatialrec.ops.reference``, so that no library option is needed
to run an arm:

- ``update``: what the GRU's ``(1 - z)`` term keeps. ``"prior"`` is the published cell
  (``h_i = z * n + (1 - z) * p_i``, ``p_i`` the position's own value: the previous line reaches
  line ``i`` only through the squashed candidate ``n``); ``"line"`` keeps the previous line's
  state at the same position (``h_i = z * n + (1 - z) * h_{i-1}``: an identity path along the
  sweep, as in a GRU over time), the same parameters otherwise.
- ``composition``: ``"serial"`` (each sweep reads the previous one's output, the published
  order) or ``"parallel"`` (every sweep reads the project-in map; their outputs are averaged,
  as in ReNet / VMamba's cross-scan).
- ``z_bias``: added to the update gate's bias at initialisation (``> 0`` favours the candidate).
- ``norm``: ``"none"``, ``"pixel"`` (LayerNorm over channels at each pixel, local) or
  ``"global"`` (``group_norm(h, 1)``: mean and variance over the whole map of each sample, a
  GLOBAL STATISTIC, not recurrence) after each sweep.
- ``directions``: the sweep list; ``()`` is the no-sweep control (project in, project out).
- ``state_size`` and ``recurrent_lr`` (a multiplier on the sweeps' learning rate).
- ``residual``: the block uses ``ResidualSDN`` (its mixing gate) instead of the plain layer.
- ``level``: where the SDN block sits (``"12"``: encoder level 2, the benchmark's place; ``"24"``:
  decoder level 1).

Diagnostics per run: the far-input gradient of the SDN layer at initialisation (how strongly the
output at the centre of the opposite border depends on each border line, relative to its own
position's input, minimum over the four borders), per-sweep gradient norms during training (steps
1, 25, 50, 100, 200, 300), and the test Dice / HD95 as in the benchmark.

Usage::

    PYTHONPATH=src nice -n 5 python benchmarks/ablate_sdn.py                 # every arm, seeds 0 1 2
    PYTHONPATH=src python benchmarks/ablate_sdn.py --arms pub_serial4 --seeds 0 --steps 5 --out /tmp/a

The arms and their settings were committed before any of them ran (this file's first commit);
results go to ``benchmarks/results/ablation/`` (JSON rewritten after every run, and a Markdown
table).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_holistic as bh  # noqa: E402  (the benchmark's data, model and budget)

from spatialrec.data import SyntheticLongRange  # noqa: E402
from spatialrec.layers import ResidualSDN, SpatialDependencyLayer  # noqa: E402
from spatialrec.losses import DiceCELoss  # noqa: E402
from spatialrec.metrics import dice, hd95, to_masks  # noqa: E402
from spatialrec.ops.directions import from_canonical_view, gather_neighbours, to_canonical_view  # noqa: E402

FOUR = ("right", "down", "left", "up")

# name -> (task, settings). Declared before any run; never changed after seeing results.
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    # Controls.
    "pub_serial4": ("cue_any_side", {}),  # today's layer: published cell, four serial sweeps
    "no_sweep": ("cue_any_side", {"directions": ()}),  # project in / out only: what the rest of the net does
    "no_sweep_global_norm": ("cue_any_side", {"directions": (), "norm_no_sweep": True}),  # GLOBAL STATISTIC
    # Composition.
    "pub_parallel4": ("cue_any_side", {"composition": "parallel"}),
    # The cell: what the (1 - z) term keeps.
    "line_serial4": ("cue_any_side", {"update": "line"}),
    "line_parallel4": ("cue_any_side", {"update": "line", "composition": "parallel"}),
    # Initialisation of the update gate.
    "pub_serial4_zbias2": ("cue_any_side", {"z_bias": 2.0}),
    "line_serial4_zbias-2": ("cue_any_side", {"update": "line", "z_bias": -2.0}),
    # Normalisation after each sweep: local vs global (global = a statistic of the whole map).
    "pub_serial4_pixelnorm": ("cue_any_side", {"norm": "pixel"}),
    "pub_serial4_globalnorm": ("cue_any_side", {"norm": "global"}),  # GLOBAL STATISTIC
    # Capacity, learning rate, mixing gate, place.
    "pub_serial4_S64": ("cue_any_side", {"state_size": 64}),
    "pub_serial4_lr10": ("cue_any_side", {"recurrent_lr": 10.0}),
    "pub_serial4_residual": ("cue_any_side", {"residual": True}),
    "pub_serial4_at24": ("cue_any_side", {"level": "24"}),
    # One direction at a time, cue fixed on the top border: does a single sweep carry it?
    "top_pub_down": ("cue_top", {"directions": ("down",)}),
    "top_line_down": ("cue_top", {"update": "line", "directions": ("down",)}),
    "top_pub_right_down": ("cue_top", {"directions": ("right", "down")}),
}
DEFAULTS: dict[str, Any] = {
    "update": "prior", "composition": "serial", "z_bias": 0.0, "norm": "none", "norm_no_sweep": False,
    "directions": FOUR, "state_size": None, "recurrent_lr": 1.0, "residual": False, "level": "12",
}  # fmt: skip
GRAD_STEPS = (1, 25, 50, 100, 200, 300)


# ---------------------------------------------------------------------------- the arm's layer


def sweep(h: torch.Tensor, gru: nn.Module, direction: str, update: str) -> torch.Tensor:
    """One directional sweep of ``h: (B, S, H, W)`` with the parameters of ``gru`` (a
    ``DirectionalGRU``); ``update`` chooses what the ``(1 - z)`` term keeps."""
    v = to_canonical_view(h, direction)
    s = v.shape[1]
    lines = [v[:, :, 0]]
    for i in range(1, v.shape[2]):
        prev, p = lines[-1], v[:, :, i]
        g_i = torch.einsum("os,bsw->bow", gru.weight_ih, gather_neighbours(prev)) + gru.bias_ih[:, None]
        g_h = torch.einsum("os,bsw->bow", gru.weight_hh, p) + gru.bias_hh[:, None]
        r = torch.sigmoid(g_i[:, :s] + g_h[:, :s])
        z = torch.sigmoid(g_i[:, s : 2 * s] + g_h[:, s : 2 * s])
        n = torch.tanh(g_i[:, 2 * s :] + r * g_h[:, 2 * s :])
        keep = p if update == "prior" else prev
        lines.append(z * n + (1 - z) * keep)
    return from_canonical_view(torch.stack(lines, dim=2), direction)


class ArmSDN(nn.Module):
    """Wraps a library ``SpatialDependencyLayer`` (its parameters, initialised by the library) and
    runs the arm's forward: project in, sweeps (with the arm's cell, composition and norm),
    project out."""

    def __init__(self, layer: SpatialDependencyLayer, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layer, self.cfg = layer, cfg
        if cfg["z_bias"]:
            s = layer.state_size
            with torch.no_grad():
                for g in layer.sweeps:
                    g.bias_ih[s : 2 * s] += cfg["z_bias"]
        if cfg["norm"] == "pixel":
            self.pixel_norms = nn.ModuleList(nn.LayerNorm(layer.state_size) for _ in layer.sweeps)

    @property
    def project_out(self) -> nn.Module:  # read by ResidualSDN's input check
        return self.layer.project_out

    def _norm(self, h: torch.Tensor, k: int) -> torch.Tensor:
        if self.cfg["norm"] == "pixel":
            return self.pixel_norms[k](h.movedim(1, -1)).movedim(-1, 1)
        if self.cfg["norm"] == "global":
            return F.group_norm(h, 1)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer, cfg = self.layer, self.cfg
        h0 = torch.tanh(layer.project_in(x))
        if cfg["norm_no_sweep"]:
            h0 = F.group_norm(h0, 1)
        dirs = layer.directions
        if cfg["composition"] == "parallel":
            h = sum(self._norm(sweep(h0, g, d, cfg["update"]), k) for k, (g, d) in enumerate(zip(layer.sweeps, dirs)))
            h = h / len(dirs)
        else:
            h = h0
            for k, (g, d) in enumerate(zip(layer.sweeps, dirs)):
                h = self._norm(sweep(h, g, d, cfg["update"]), k)
        return layer.project_out(h)


def build_arm(cfg: dict[str, Any], state_size: int) -> nn.Module:
    """The benchmark's ``sdn_unet`` with the arm's SDN layer in place of the library's."""
    args = dict(bh.MODEL_SPECS["sdn_unet"][1])
    args["state_size"] = cfg["state_size"] or state_size
    args["directions"] = tuple(cfg["directions"]) or ("right",)  # () -> one unused sweep, see below
    if cfg["level"] == "24":
        args.pop("encoder_sdn")
        args["decoder_sdn"] = (1,)
    if cfg["residual"]:
        args["sdn_block"] = "residual_sdn"
    import spatialrec

    model = spatialrec.create_model("sdn_unet", in_channels=1, num_classes=1, **args)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpatialDependencyLayer):
                if not cfg["directions"]:
                    child.sweeps = nn.ModuleList()
                    child.directions = ()
                setattr(parent, name, ArmSDN(child, cfg))
    return model


def sdn_layers(model: nn.Module) -> list[ArmSDN]:
    return [m for m in model.modules() if isinstance(m, ArmSDN)]


def far_gradient(layer: ArmSDN, size: int = 12, seed: int = 0) -> dict[str, float]:
    """Per border: ``|d y[centre of the opposite border] / d x[border line]|`` over
    ``|d y[that pixel] / d x[that pixel]|``, on one random input at initialisation (0 where the
    sweeps cannot carry that border's line to the opposite one)."""
    ratios = {}
    c_in = layer.layer.in_channels
    x = torch.randn(1, c_in, size, size, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    mid, last = size // 2, size - 1
    for src, dst in (("top", (last, mid)), ("bottom", (0, mid)), ("left", (mid, last)), ("right", (mid, 0))):
        (g,) = torch.autograd.grad(layer(x)[0, :, dst[0], dst[1]].sum(), x)
        line = {"top": g[0, :, 0], "bottom": g[0, :, last], "left": g[0, :, :, 0], "right": g[0, :, :, last]}[src]
        ratios[src] = float(line.norm() / g[0, :, dst[0], dst[1]].norm().clamp_min(1e-30))
    return ratios


def reach(ratios: dict[str, float]) -> float:
    """The weakest border among those the sweeps reach at all (0 when none)."""
    reached = [v for v in ratios.values() if v > 0]
    return min(reached) if reached else 0.0


# ---------------------------------------------------------------------------- runs


def render_task(task: str, n: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if task == "cue_top":
        ds = SyntheticLongRange(n, image_size=48, cue_position="fixed", cue_border="top", split=split, seed=seed)
        items = [ds[i] for i in range(n)]
        return torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items])
    return bh.render(task, n, split, seed, 48)


def run(job: tuple[str, int, int, argparse.Namespace]) -> dict[str, Any]:
    arm, seed, state_size, args = job
    torch.set_num_threads(1)
    task, over = ARMS[arm]
    cfg = {**DEFAULTS, **over}
    x_train, y_train = render_task(task, args.num_train, "train", seed)
    x_test, y_test = render_task(task, args.num_test, "test", seed)
    torch.manual_seed(seed)  # the benchmark's initialisation stream
    model = build_arm(cfg, state_size)
    layers = sdn_layers(model)
    per_border = [far_gradient(layers[0], seed=s) for s in range(3)]
    far = {b: statistics.mean(r[b] for r in per_border) for b in per_border[0]}
    rec_params = {id(p) for lay in layers for g in lay.layer.sweeps for p in g.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in rec_params], "lr": args.lr},
        {"params": [p for p in model.parameters() if id(p) in rec_params], "lr": args.lr * cfg["recurrent_lr"]},
    ]
    opt = torch.optim.Adam([g for g in groups if g["params"]])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    loss_fn = DiceCELoss()
    order = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(x_train), generator=order), 0
    grad_norms: dict[int, list[float]] = {}
    t0 = time.perf_counter()
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(1, args.steps + 1):
        if pos + args.batch_size > len(perm):
            perm, pos = torch.randperm(len(x_train), generator=order), 0
        idx = perm[pos : pos + args.batch_size]
        pos += args.batch_size
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        loss.backward()
        if step in GRAD_STEPS:
            grad_norms[step] = [
                float(torch.cat([p.grad.flatten() for p in g.parameters() if p.grad is not None]).norm())
                for g in layers[0].layer.sweeps
            ]
        opt.step()
        sched.step()
        if not math.isfinite(loss.item()):
            break
    train_time = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([to_masks(model(x_test[i : i + 32])) for i in range(0, len(x_test), 32)])
    d = dice(pred, y_test.bool())[:, 0]
    h = hd95(pred, y_test.bool())[:, 0]
    finite = h[torch.isfinite(h)]
    return {
        "arm": arm, "task": task, "seed": seed, "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "global_statistic": bool(cfg["norm"] == "global" or cfg["norm_no_sweep"]),
        "params": sum(p.numel() for p in model.parameters()), "state_size": cfg["state_size"] or state_size,
        "test_dice": float(d.mean()), "test_hd95": float(finite.mean()) if len(finite) else None,
        "final_loss": loss.item(), "far_gradient_at_init": reach(far), "far_gradient_per_border": far, "sweep_grad_norms": grad_norms,
        "train_time_s": train_time,
    }  # fmt: skip


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| arm | task | settings (vs published serial four-sweep) | global statistic | params | test Dice mean +- sd [per seed] | far-gradient ratio at init | sweep grad norm, step 1 -> 300 (first sweep / last sweep) |",
        "|---|---|---|---|---:|---|---:|---|",
    ]  # fmt: skip
    for arm, (task, over) in ARMS.items():
        rs = sorted((r for r in records if r["arm"] == arm), key=lambda r: r["seed"])
        if not rs:
            continue
        ds = [r["test_dice"] for r in rs]
        sd = statistics.stdev(ds) if len(ds) > 1 else 0.0
        g = rs[0]["sweep_grad_norms"]
        first, last = (g.get(str(min(GRAD_STEPS))) or g.get(min(GRAD_STEPS))), (g.get(str(args_steps(rs))) or g.get(args_steps(rs)))
        gtxt = f"{first[0]:.2g}/{first[-1]:.2g} -> {last[0]:.2g}/{last[-1]:.2g}" if first and last else "-"
        lines.append(
            f"| {arm} | {task} | `{json.dumps(over)}` | {'yes' if rs[0]['global_statistic'] else 'no'} | {rs[0]['params']:,} | "
            f"{statistics.mean(ds):.3f} +- {sd:.3f} [{', '.join(f'{v:.3f}' for v in ds)}] | "
            f"{statistics.mean(r['far_gradient_at_init'] for r in rs):.2g} | {gtxt} |"
        )
    return "\n".join(lines) + "\n"


def args_steps(rs: list[dict[str, Any]]) -> int:
    keys = [int(k) for k in rs[0]["sweep_grad_norms"]]
    return max(keys) if keys else 0


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--num-train", type=int, default=1200)
    p.add_argument("--num-test", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ablation")
    args = p.parse_args(argv)
    state_size = bh.match_budget(["sdn_unet"], 48, 60_000)["sdn_unet"]["args"]["state_size"]
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, seed, state_size, args) for seed in args.seeds for arm in args.arms]
    records: list[dict[str, Any]] = []
    meta = {"machine": platform.platform(), "torch": torch.__version__, "state_size": state_size,
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "num_train": args.num_train,
            "num_test": args.num_test, "seeds": args.seeds}  # fmt: skip
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for rec in pool.imap_unordered(run, jobs):
            records.append(rec)
            print(f"{rec['arm']:>28} seed {rec['seed']}: Dice {rec['test_dice']:.3f}  reach {rec['far_gradient_at_init']:.2g}  "
                  f"{rec['train_time_s']:.0f} s", flush=True)  # fmt: skip
            (args.out / "ablation.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
            (args.out / "ablation.md").write_text(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
