"""Smoke test of an installed (not editable) wheel, run from a folder outside the checkout.

    cd "$(mktemp -d)" && /path/to/fresh-venv/bin/python /path/to/checkout/.ci/wheel_smoke.py

Checks that ``spatialrec`` is imported from the environment's site-packages (not the checkout),
runs one training step of ``sdn_unet``, and, through the console script the wheel installed,
``spatialrec demo`` on a small setting, ``spatialrec train`` and ``spatialrec evaluate`` on a tiny
DSB2018-layout data set written here, and ``spatialrec info``. About 30-60 s on a busy 2-core
machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

import spatialrec

site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(spatialrec.__file__).resolve()
assert site in where.parents, f"spatialrec imported from {where}, not from the environment's {site}"
checkout = Path(__file__).resolve().parents[1]
assert checkout not in Path.cwd().resolve().parents and Path.cwd().resolve() != checkout, "run me outside the checkout"
assert (where.parent / "py.typed").is_file(), "py.typed missing from the installed package"
print(f"spatialrec {spatialrec.__version__} from {where.parent}")

# One training step of sdn_unet: the loss is finite and the weights move.
torch.manual_seed(0)
model = spatialrec.create_model("sdn_unet", in_channels=1, num_classes=1, depth=2, base_width=4, state_size=4)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
before = [p.detach().clone() for p in model.parameters()]
loss = spatialrec.losses.DiceLoss()(model(x), y)
loss.backward()
opt.step()
assert torch.isfinite(loss), loss
assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed no weight"
print(f"sdn_unet training step: loss {loss.item():.4f}")

# The console script the wheel installed, beside this interpreter.
command = Path(sys.executable).parent / ("spatialrec.exe" if os.name == "nt" else "spatialrec")
argv = [str(command), "demo", "--out", "demo", "--epochs", "1", "--image-size", "24", "--num-train", "16",
        "--num-val", "4", "--num-test", "4", "--figure-images", "2", "--no-progress"]  # fmt: skip
done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
assert done.returncode == 0, done.returncode
summary = json.loads(Path("demo/summary.json").read_text())
assert set(summary["models"]) == {"unet", "sdn_unet"} and Path("demo/holistic_demo.png").is_file()
# A tiny data set in the preprocessed DSB2018 layout (images/<id>.png, masks/0/<id>.png), one
# epoch of a tiny SDN-UNet on it, and the run's checkpoint tested again.
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

rng = np.random.default_rng(0)
for sub in ("dsb/images", "dsb/masks/0"):
    Path(sub).mkdir(parents=True)
for i in range(8):
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB").save(f"dsb/images/im{i}.png")
    Image.fromarray(((rng.random((12, 12)) > 0.6) * 255).astype(np.uint8), "L").save(f"dsb/masks/0/im{i}.png")
tiny = ["--model", "sdn_unet", "--model-arg", "depth=1", "--model-arg", "base_width=4", "--model-arg", "state_size=4",
        "--device", "cpu", "--no-progress", "--image-size", "16"]  # fmt: skip
train = subprocess.run([str(command), "train", "--dataset", "dsb2018", "--data-dir", "dsb", "--out", "run", "--epochs", "1",
                        "--batch-size", "2", *tiny], capture_output=True, text=True, timeout=600)  # fmt: skip
print(train.stdout[-1500:], train.stderr[-1500:], sep="\n")
assert train.returncode == 0 and Path("run/metrics.json").is_file(), train.returncode
evaluate = subprocess.run([str(command), "evaluate", "--dataset", "dsb2018", "--data-dir", "dsb", "--checkpoint",
                           "run/best.pt", "--device", "cpu", "--no-progress"], capture_output=True, text=True, timeout=600)  # fmt: skip
print(evaluate.stdout[-1500:], evaluate.stderr[-1500:], sep="\n")
assert evaluate.returncode == 0 and "test images" in evaluate.stdout, evaluate.returncode
bad = subprocess.run([str(command), "train", "--dataset", "dsb2018", "--data-dir", "dsb", "--epochs", "0"],
                     capture_output=True, text=True, timeout=300)  # fmt: skip
assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr

info = subprocess.run([str(command), "info"], capture_output=True, text=True, timeout=300)
assert info.returncode == 0 and f"spatialrec {spatialrec.__version__}" in info.stdout, info.stderr
print("wheel smoke test: OK")
