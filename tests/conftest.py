"""Shared pytest configuration.

Tests run on a 2-core CPU in CI: keep torch to the cores we have, so parallel pytest processes
or the BLAS pool do not oversubscribe the machine.
"""

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def one_thread():
    """One torch thread for tests that run many tiny tensor ops (3D models and scans): on a busy
    2-core machine OpenMP's thread hand-off costs tens of milliseconds per op, one thread costs
    microseconds (17 s -> 0.2 s per model step)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def option_env(monkeypatch):
    """``option_env(name, value)`` sets the environment variable of option ``name`` (``None``:
    unsets it) and makes :mod:`spatialrec.options` read it again; after the test the variable is
    restored and read again too, so no test leaves another its environment defaults."""
    from spatialrec import options

    def set_env(name: str, value):
        if value is None:
            monkeypatch.delenv(options.ENV_VARS[name], raising=False)
        else:
            monkeypatch.setenv(options.ENV_VARS[name], value)
        options.reset(name)

    yield set_env
    monkeypatch.undo()
    options.reset()
