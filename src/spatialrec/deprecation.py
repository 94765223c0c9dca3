"""Renaming a public argument without breaking callers: :func:`renamed_argument`.

The policy (docs/architecture.md, "Deprecation"): an argument renamed in version ``0.N`` keeps
working under its old name for the whole of ``0.N`` and answers with a :class:`FutureWarning`
that names the new spelling; it is removed in ``0.N+1``, and the changelog records both steps.
A :class:`FutureWarning` rather than a :class:`DeprecationWarning` because Python shows it by
default wherever the call is made (a notebook, a script, a module of the user's package), and
the people who must act on it are the callers of this library.

Bottom level: imports only the standard library.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed_argument(
    old: str, new: str, *, since: str, removed_in: str, convert: Optional[Callable[[Any], Any]] = None
) -> Callable[[F], F]:
    """Decorator: accept keyword ``old`` as ``new`` (converted by ``convert``) with a FutureWarning.

    Args:
        old: the former keyword name, e.g. ``"bilinear"``.
        new: the keyword that replaces it, e.g. ``"upsample"``.
        since: the version that renamed it (the warning's first version), e.g. ``"0.3"``.
        removed_in: the version whose release drops ``old``, e.g. ``"0.4"``.
        convert: maps an old value to the new one (e.g. ``True -> "interpolate"``); default as is.

    Returns:
        The decorator; the decorated callable has the same signature and docstring.

    Raises:
        TypeError: (from the decorated callable) both ``old`` and ``new`` were given.

    Examples:
        >>> @renamed_argument("bilinear", "upsample", since="0.3", removed_in="0.4",
        ...                   convert=lambda b: "interpolate" if b else "transposed")
        ... def up(upsample: str = "interpolate") -> str:
        ...     return upsample
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     up(bilinear=False), str(seen[0].message)
        ('transposed', "up: bilinear= is deprecated since 0.3 and is removed in 0.4; use upsample='transposed' instead")
    """
    if old == new:
        raise ValueError(f"renamed_argument: old and new are the same name {old!r}")

    def decorate(fn: F) -> F:
        owner = fn.__qualname__.removesuffix(".__init__")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{owner}: got both {old}= (deprecated) and {new}=; pass only {new}=")
                value = kwargs.pop(old)
                kwargs[new] = convert(value) if convert is not None else value
                warnings.warn(
                    f"{owner}: {old}= is deprecated since {since} and is removed in {removed_in}; "
                    f"use {new}={kwargs[new]!r} instead",
                    FutureWarning,
                    stacklevel=2,
                )
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


__all__ = ["renamed_argument"]
