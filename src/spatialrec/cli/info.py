"""``spatialrec info``: versions, the scan backends usable here, Triton and CUDA status.

What to paste into a bug report, and a quick answer to "will the GPU kernels run on this
machine?". ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from typing import Any, Optional, Sequence

PROG = "spatialrec info"

# Distributions whose version is shown: the required ones, then the optional ones by extra.
REQUIRED = ("torch", "numpy", "einops")
OPTIONAL = {
    "pillow": "data", "nibabel": "data", "tqdm": "data", "triton": "triton", "onnx": "deploy",
    "onnxruntime": "deploy", "monai": "interop", "segmentation-models-pytorch": "interop", "nnunetv2": "nnunet",
}  # fmt: skip


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect() -> dict[str, Any]:
    """Everything ``spatialrec info`` reports, as a JSON-able dict.

    Returns:
        ``{"spatialrec", "python", "platform", "packages": {name: version | None},
        "backends": {...}, "cuda": {...}}``; a package that is not installed has ``None``.
    """
    import torch

    import spatialrec
    from spatialrec import ops
    from spatialrec.ops import native

    cuda: dict[str, Any] = {"available": torch.cuda.is_available(), "torch_built_with": torch.version.cuda}
    if cuda["available"]:
        cuda["devices"] = [
            {"name": torch.cuda.get_device_name(i), "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
            for i in range(torch.cuda.device_count())
        ]
    from spatialrec import options

    # The options as they stand (spatialrec.options: set in code, else the environment variables
    # read once). A bad variable is reported here, since this is where one looks, not raised.
    settings: dict[str, Any] = {}
    for name, getter in (("backend", options.get_backend), ("fused_gates", options.get_fused_gates),
                         ("cpu_kernel", options.get_cpu_kernel), ("triton_precision", options.get_triton_precision),
                         ("cache_dir", options.get_cache_dir)):  # fmt: skip
        try:
            settings[name] = str(getter())
        except ValueError as err:
            settings[name] = f"error: {err}"
    try:
        auto_cpu = ops.resolve_backend("auto", torch.empty(0))
    except ValueError as err:
        auto_cpu = f"error: {err}"
    # What "auto" picks for a CUDA tensor, named without making one (the report must work
    # without a GPU): the backend option when set, else triton when it imports and has not
    # fallen back on that device, else fused.
    chosen = settings["backend"]
    auto_cuda = None if not cuda["available"] else chosen if chosen != "auto" else (
        "triton" if ops.triton_available() and not options.triton_fallback() else "fused")  # fmt: skip
    # The fused backend's native CPU line kernel (spatialrec.ops.native): built (or found in the
    # cache) here unless the option keeps it off, since this is where one checks it.
    native_kernel: dict[str, Any]
    if settings["cpu_kernel"] == "torch":
        native_kernel = {"state": "off (cpu_kernel=torch)", "library": None}
    else:
        try:
            native_kernel = {"state": "loaded", "library": str(native.build()), "openmp": native.status()["openmp"]}
        except RuntimeError as err:
            native_kernel = {"state": f"not available, torch's ops run instead: {err}", "library": None}
    backends: dict[str, Any] = {
        "native_cpu_kernel": native_kernel,
        "available": list(ops.available_backends()),
        "triton_importable": ops.triton_available(),
        "options": settings,
        "env": dict(options.ENV_VARS),
        "triton_fallback": options.triton_fallback(),
        "auto_cpu": auto_cpu,
        "auto_cuda": auto_cuda,
    }
    return {
        "spatialrec": spatialrec.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in (*REQUIRED, *OPTIONAL)},
        "backends": backends,
        "cuda": cuda,
    }


def format_report(info: dict[str, Any]) -> str:
    """The human-readable form of :func:`collect`'s result."""
    lines = [f"spatialrec {info['spatialrec']}", f"python     {info['python']} ({info['platform']})", "", "packages:"]
    for name, version in info["packages"].items():
        extra = f"  (pip install 'spatialrec[{OPTIONAL[name]}]')" if name in OPTIONAL and version is None else ""
        lines.append(f"  {name:<28}{version or 'not installed'}{extra}")
    b, c = info["backends"], info["cuda"]
    lines += [
        "", "scan backends:",
        f"  usable here                 {', '.join(b['available'])}",
        f"  auto on CPU tensors         {b['auto_cpu']}",
        f"  auto on CUDA tensors        {b['auto_cuda'] or 'n/a (no CUDA device)'}",
        f"  triton                      {'importable' if b['triton_importable'] else 'not installed (CPU needs none)'}",
        f"  triton fallen back on       {', '.join(b['triton_fallback']) or 'no device'}",
        f"  native CPU line kernel      {b['native_cpu_kernel']['library'] or b['native_cpu_kernel']['state']}"
        + (f" (OpenMP: {b['native_cpu_kernel']['openmp']})" if b["native_cpu_kernel"].get("openmp") else ""),
        "", "options (spatialrec.options; environment variable):",
        *(f"  {name:<18}{value:<24}({b['env'][name]})" for name, value in b["options"].items()),
        "", "CUDA:",
        f"  torch built with CUDA       {c['torch_built_with'] or 'no (CPU build)'}",
        f"  available                   {'yes' if c['available'] else 'no'}",
    ]  # fmt: skip
    for i, d in enumerate(c.get("devices", [])):
        lines.append(f"  device {i}                    {d['name']} (compute capability {d['capability']})")
    return "\n".join(lines)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of ``spatialrec info``."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    """``spatialrec info``. Returns the exit status (0)."""
    args = build_parser(prog).parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0
