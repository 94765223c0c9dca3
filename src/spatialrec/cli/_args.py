"""Argument types and checks shared by the ``spatialrec`` commands.

A bad value is a usage error: argparse prints the usage line and a one-line message naming the
flag, the value and what is expected, and exits with status 2, before any data is read or any
model is built.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any, Callable, NoReturn, Optional

import torch


def number(kind: type, low: float, low_inclusive: bool, high: Optional[float] = None, high_inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse ``type`` for an ``int`` or ``float`` in a range; a bad value names the range."""
    bounds = ("[" if low_inclusive else "(") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")"))
    what = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in {bounds}, got {text!r}") from None
        ok = (value >= low if low_inclusive else value > low) and (
            high is None or (value <= high if high_inclusive else value < high)
        )
        if not ok or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"expected {what} in {bounds}, got {text}")
        return value

    return parse


positive_int = number(int, 0, False)
non_negative_int = number(int, 0, True)
positive_float = number(float, 0.0, False)
fraction = number(float, 0.0, True, 1.0, True)  # [0, 1]


def sizes(count: int, flag: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse ``type`` for ``count`` positive sizes written ``AxB[xC]`` or one number for all."""
    form = "x".join("HW" if count == 2 else "DHW")

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = [int(p) for p in text.lower().replace("x", ",").split(",") if p.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {form} or one integer, got {text!r}") from None
        if len(values) == 1:
            values *= count
        if len(values) != count or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{flag} expects {form} with positive sizes or one integer, got {text!r}")
        return tuple(values)

    return parse


def model_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for ``--model-arg``; the value is a Python literal or else a bare word."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--model-arg expects KEY=VALUE (e.g. state_size=64), got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word such as residual_sdn
    return key.strip(), parsed


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """A device that does not exist here is a usage error."""
    from spatialrec.train.distributed import resolve_device

    try:
        resolve_device(device)
    except (TypeError, ValueError) as err:
        parser.error(f"--device {device!r}: {err}")


def check_model(parser: argparse.ArgumentParser, model: str, overrides: dict[str, Any]) -> None:
    """``--model`` must be registered and ``--model-arg`` values must be arguments it accepts.

    Checked by building the model on the ``meta`` device (no memory, no weights).
    """
    import spatialrec

    names = spatialrec.list_models()
    if model not in names:
        parser.error(f"--model {model!r} is not a registered model; choose one of: {', '.join(names)}")
    try:
        with torch.device("meta"):
            spatialrec.create_model(model, **overrides)
    except (TypeError, ValueError) as err:
        shown = " ".join(f"{k}={v!r}" for k, v in overrides.items())
        parser.error(f"--model-arg {shown} does not fit --model {model}: {err}")
    except Exception:  # a model that cannot be built on 'meta' is checked when it is built for real
        pass


def build_model(parser: argparse.ArgumentParser, model: str, overrides: dict[str, Any], in_channels: int, num_classes: int) -> torch.nn.Module:
    """``create_model`` with the command line's model and overrides; a bad one is a usage error."""
    import spatialrec

    try:
        return spatialrec.create_model(model, in_channels=in_channels, num_classes=num_classes, **overrides)
    except (TypeError, ValueError) as err:
        fail(parser, f"--model {model} with --model-arg {overrides}: {err}")


def fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """A usage error (exit status 2); typed ``NoReturn`` for the checker."""
    parser.error(message)
    raise AssertionError("unreachable")  # parser.error exits


def check_progress(parser: argparse.ArgumentParser, wanted: bool) -> None:
    """Progress bars need tqdm (the ``data`` extra): say so before any work starts."""
    if not wanted:
        return
    try:
        import tqdm  # noqa: F401
    except ImportError:
        parser.error("progress bars need tqdm: pip install 'spatialrec[data]', or pass --no-progress")


def results_table(summary: dict[str, Any]) -> str:
    """A test summary (format of :mod:`spatialrec.summary`) as a table: mean ± std per class and
    overall, and how many cases had an infinite HD95 (a structure missed or hallucinated)."""
    from spatialrec.summary import format_table

    kind = "volumes" if summary["case_kind"] == "volume" else "images"
    return f"{summary['num_cases']} test {kind}\n" + format_table(summary)
