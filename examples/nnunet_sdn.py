"""nnU-Net v2 with spatial recurrence, end to end, with the unmodified nnU-Net commands.

1. writes a tiny 2D data set in nnU-Net's raw format (PNG) from spatialrec's synthetic long-range
   task (segment the object whose kind a stripe on the top border names; see
   ``spatialrec.data.synthetic``), with a held-out test set;
2. ``nnUNetv2_plan_and_preprocess`` (2d configuration);
3. ``python -m spatialrec.integrations.nnunet``: writes the plans ``nnUNetPlans_SDN`` naming
   ``SDNPlainConvUNet``;
4. ``nnUNetv2_train`` on the CPU, plain (``-p nnUNetPlans``) and SDN (``-p nnUNetPlans_SDN``),
   with a short trainer this script writes to a folder named by ``nnUNet_extTrainer`` (nnU-Net
   looks for trainers there; nothing inside nnU-Net is modified);
5. ``nnUNetv2_predict`` on the test images with both, and the Dice of each against the test labels;
6. the cost of one training iteration (forward + backward + SGD step at the plans' batch and
   patch size, deep supervision on) of both networks, as a ratio measured in the same run.

Needs ``pip install 'spatialrec[nnunet]'`` (nnU-Net v2 with a torch/torchvision pair that import
together). Everything lives in ``--work-dir``; nothing else on disk is touched.

    python examples/nnunet_sdn.py --work-dir /tmp/nnunet_sdn --epochs 3 --iterations 40 --val-iterations 3

The run is a demonstration of the mechanics at a size a CPU finishes in minutes, not a benchmark;
``docs/nnunet.md`` has the measured numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATASET_ID = 981
DATASET_NAME = f"Dataset{DATASET_ID}_SDNSynthetic"
TRAINER = "nnUNetTrainer_SpatialrecShort"

TRAINER_SOURCE = '''"""A short nnU-Net trainer written by spatialrec's examples/nnunet_sdn.py."""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=Path("nnunet_sdn_work"),
                   help="folder for nnUNet_raw/_preprocessed/_results and predictions (replaced)")
    p.add_argument("--num-train", type=int, default=40, help="training images (nnU-Net's fold 0 keeps 80%%)")
    p.add_argument("--num-test", type=int, default=20, help="held-out test images")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--iterations", type=int, default=50, help="training iterations per epoch")
    p.add_argument("--val-iterations", type=int, default=5, help="validation iterations per epoch")
    p.add_argument("--stages", type=int, nargs="+", default=None, help="SDN stages (default: the command's default)")
    p.add_argument("--state-size", type=int, default=16)
    p.add_argument("--timing-iterations", type=int, default=5, help="iterations timed per network (0: skip)")
    p.add_argument("--timing-threads", type=int, default=1,
                   help="torch threads while timing (default 1: on a shared CPU more threads measure the "
                        "scheduler more than the networks)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)  # fmt: skip


def write_raw_dataset(raw: Path, num_train: int, num_test: int, image_size: int, seed: int) -> Path:
    """The synthetic task as an nnU-Net raw data set of grey PNGs (uint8) and 0/1 label PNGs."""
    from PIL import Image

    from spatialrec.data.synthetic import SyntheticLongRange

    folder = raw / DATASET_NAME
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    for split, n, images, labels in (("train", num_train, "imagesTr", "labelsTr"), ("test", num_test, "imagesTs", "labelsTs")):
        data = SyntheticLongRange(n, image_size=image_size, split=split, seed=seed)
        for i in range(n):
            item = data[i]
            image = np.clip(item["image"][0].numpy(), 0.0, 1.0)
            case = f"{split}_{i:03d}"
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / images / f"{case}_0000.png")
            Image.fromarray(item["mask"][0].numpy().astype(np.uint8)).save(folder / labels / f"{case}.png")
    dataset_json = {
        "channel_names": {"0": "synthetic"},
        "labels": {"background": 0, "target": 1},
        "numTraining": num_train,
        "file_ending": ".png",
        "name": "spatialrec synthetic long-range task",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def nnunet_command(name: str) -> str:
    """The console script beside this interpreter (a venv's bin), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install nnU-Net v2 (pip install 'spatialrec[nnunet]')")
    return found


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd``, its output into ``log``; returns the wall time. Fails loudly with the log's tail."""
    print("$", " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)), flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(cmd)} failed with status {result.returncode}:\n{tail}")
    print(f"  {seconds:.1f} s", flush=True)
    return seconds


def dice_of_folders(pred: Path, truth: Path) -> float:
    """Mean per-case Dice of the foreground (1 when both are empty)."""
    from PIL import Image

    scores = []
    for label in sorted(truth.glob("*.png")):
        t = np.asarray(Image.open(label)) > 0
        p = np.asarray(Image.open(pred / label.name)) > 0
        denom = t.sum() + p.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (t & p).sum() / denom)
    if not scores:
        raise SystemExit(f"no labels in {truth}")
    return float(np.mean(scores))


def seconds_per_iteration(plans_files: dict[str, Path], configuration: str, n: int) -> dict[str, float]:
    """One nnU-Net training iteration (forward, deep-supervision Dice + CE loss, backward, SGD
    step) at the plans' batch and patch size on random data, each network built as nnU-Net builds
    it; the networks take turns, so a change of machine load hits all of them alike. Returns the
    median wall time over ``n`` iterations (after one warm-up) per key of ``plans_files``, and the
    median CPU time of the process under ``<key>_cpu`` (on one thread, the work done: unlike the
    wall time it does not grow when other processes share the cores)."""
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    steps = {}
    for label, plans_file in plans_files.items():
        config = PlansManager(str(plans_file)).get_configuration(configuration)
        torch.manual_seed(0)
        net = _build(config)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
        x = torch.randn(config.batch_size, 1, *config.patch_size)
        y = torch.randint(0, 2, (config.batch_size, 1, *config.patch_size)).float()
        with torch.no_grad():
            targets = [torch.nn.functional.interpolate(y, size=o.shape[2:], mode="nearest") for o in net(x)]
        weights = [1 / 2**i for i in range(len(targets))]
        dice_kwargs = {"batch_dice": config.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}
        loss_fn = DeepSupervisionWrapper(DC_and_CE_loss(dice_kwargs, {}), [w / sum(weights) for w in weights])

        def step(net=net, opt=opt, x=x, targets=targets, loss_fn=loss_fn) -> None:
            opt.zero_grad()
            loss_fn(net(x), targets).backward()
            opt.step()

        steps[label] = step
    wall: dict[str, list[float]] = {label: [] for label in steps}
    cpu: dict[str, list[float]] = {label: [] for label in steps}
    for i in range(n + 1):
        for label, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            if i > 0:  # the first one warms up
                wall[label].append(time.perf_counter() - start)
                cpu[label].append(time.process_time() - start_cpu)
    out = {label: float(np.median(t)) for label, t in wall.items()}
    out.update({f"{label}_cpu": float(np.median(t)) for label, t in cpu.items()})
    return out


def _build(config: object) -> object:
    """The network as nnUNetTrainer.build_network_architecture builds it (1 channel in, 2 out)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(
        config.network_arch_class_name, config.network_arch_init_kwargs, config.network_arch_init_kwargs_req_import,
        1, 2, allow_init=True, deep_supervision=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    started = time.perf_counter()
    work = args.work_dir.resolve()
    if work.exists():
        shutil.rmtree(work)
    raw, pre, results, trainers, logs = (work / d for d in ("raw", "preprocessed", "results", "trainers", "logs"))
    for d in (raw, pre, results, trainers, logs):
        d.mkdir(parents=True)
    (trainers / f"{TRAINER}.py").write_text(
        TRAINER_SOURCE.format(name=TRAINER, epochs=args.epochs, iterations=args.iterations, val_iterations=args.val_iterations)
    )
    env = dict(
        os.environ,
        nnUNet_raw=str(raw),
        nnUNet_preprocessed=str(pre),
        nnUNet_results=str(results),
        nnUNet_extTrainer=str(trainers),
        nnUNet_compile="false",
        nnUNet_def_n_proc="1",
    )
    # Augmentation in the training process (no worker processes): the CPU has few cores. Only for
    # training: the planner hands this number to torch.set_num_threads, which refuses 0.
    train_env = dict(env, nnUNet_n_proc_DA="0")

    folder = write_raw_dataset(raw, args.num_train, args.num_test, args.image_size, args.seed)
    print(f"wrote {args.num_train} training and {args.num_test} test images to {folder}")
    times: dict[str, float] = {}
    times["plan_and_preprocess"] = run(
        [nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1",
         "-npfp", "1", "--verify_dataset_integrity"], env, logs / "plan.log",
    )  # fmt: skip
    plans_file = pre / DATASET_NAME / "nnUNetPlans.json"
    convert = [sys.executable, "-m", "spatialrec.integrations.nnunet", str(plans_file), "-c", "2d",
               "--state-size", str(args.state_size)]  # fmt: skip
    if args.stages:
        convert += ["--stages", *map(str, args.stages)]
    times["plans_command"] = run(convert, env, logs / "convert.log")
    print("  " + (logs / "convert.log").read_text().strip().replace("\n", "\n  "))

    scores: dict[str, float] = {}
    for label, plans_id in (("plain", "nnUNetPlans"), ("sdn", "nnUNetPlans_SDN")):
        times[f"train_{label}"] = run(
            [nnunet_command("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-p", plans_id,
             "-device", "cpu"], train_env, logs / f"train_{label}.log",
        )  # fmt: skip
        out = work / f"pred_{label}"
        times[f"predict_{label}"] = run(
            [nnunet_command("nnUNetv2_predict"), "-i", str(folder / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID),
             "-c", "2d", "-f", "0", "-tr", TRAINER, "-p", plans_id, "-device", "cpu", "--disable_tta",
             "-npp", "1", "-nps", "1"], env, logs / f"predict_{label}.log",
        )  # fmt: skip
        scores[label] = dice_of_folders(out, folder / "labelsTs")

    report = {f"dice_{k}": v for k, v in scores.items()}
    if args.timing_iterations > 0:
        import torch

        torch.set_num_threads(args.timing_threads)
        sec = seconds_per_iteration(
            {label: pre / DATASET_NAME / f"{p}.json" for label, p in (("plain", "nnUNetPlans"), ("sdn", "nnUNetPlans_SDN"))},
            "2d", args.timing_iterations,
        )  # fmt: skip
        report.update({f"s_per_iteration_{k}": v for k, v in sec.items()})
        report["iteration_cost_ratio"] = sec["sdn"] / sec["plain"]
        report["iteration_cpu_cost_ratio"] = sec["sdn_cpu"] / sec["plain_cpu"]
    report.update({f"seconds_{k}": v for k, v in times.items()})
    report["seconds_total"] = time.perf_counter() - started

    print(f"test Dice ({args.num_test} images): plain nnU-Net {scores['plain']:.3f}, SDN nnU-Net {scores['sdn']:.3f}")
    if "iteration_cost_ratio" in report:
        print(
            f"one training iteration: plain {report['s_per_iteration_plain'] * 1e3:.0f} ms, "
            f"SDN {report['s_per_iteration_sdn'] * 1e3:.0f} ms (ratio {report['iteration_cost_ratio']:.2f}; "
            f"CPU time ratio {report['iteration_cpu_cost_ratio']:.2f})"
        )
    print(f"total {report['seconds_total']:.0f} s")
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
