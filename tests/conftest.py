"""Shared pytest configuration.

Tests run on a 2-core CPU in CI: keep torch to the cores we have, so parallel pytest processes
or the BLAS pool do not oversubscribe the machine.
"""

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
