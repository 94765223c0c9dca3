"""Directional GRU traversal kernels: functions on tensors, no modules.

The entry points are :func:`directional_gru_scan` (one sweep) and
:func:`directional_gru_scan_sequence` (several sweeps composed), for ``(B, S, H, W)`` maps and
``(B, S, D, H, W)`` volumes alike. They validate their arguments once and dispatch to a backend
by name and number of spatial dimensions (:mod:`spatialrec.ops.scan`):

- ``"reference"``: :mod:`spatialrec.ops.reference`, readable, the ground truth for the others;
- ``"fused"``: :mod:`spatialrec.ops.fused` (2D) and :mod:`spatialrec.ops.fused3d` (3D), custom
  autograd functions (CPU and CUDA); on the CPU the 2D one does each line's element-wise work
  in the native line kernel (:mod:`spatialrec.ops.native`, built at first use; the
  ``cpu_kernel`` option) where it builds;
- ``"triton"``: :mod:`spatialrec.ops.triton`, GPU kernels for 2D and 3D (imported on first use);
- ``"auto"``: the ``backend`` option when it is not ``"auto"`` (:mod:`spatialrec.options`,
  default from ``SPATIALREC_BACKEND``), else triton for CUDA tensors when Triton is importable
  (falling back to fused on that device, with one warning, if a Triton kernel fails there), else
  fused.

The layers call :func:`scan_sequence`, which goes through the registered operators
(:mod:`spatialrec.ops.library`) in eager and traced code alike (``torch.compile``,
``torch.export``, ONNX see one node): ``spatialrec::scan_sequence_forward`` keeps what the
backend's own backward reads where a backward can follow, ``spatialrec::scan_sequence`` keeps
nothing elsewhere. Every op takes the cell's ``carry`` (``"prior"`` or ``"line"``) as its last
argument. Around the sweeps, :func:`working_layout`, :func:`project_in_activation` and
:func:`project_out` (:mod:`spatialrec.ops.projection`) make the layers' layout and kernel
choices for the backend and device. An opt-in, bounded CPU workspace
(:mod:`spatialrec.ops.workspace`, off by default) lets the fused 2D kernels reuse the states and
gates they keep for the backward across steps.

:func:`upsample2x` (:mod:`spatialrec.ops.upsample`) is the decoders' x2 linear up-sampling as a
registered operator, which compiled code calls instead of the interpolation torch.compile would
decompose (its generated code for it is 2-4x slower than torch's kernel on the CPU).

Every backend sweeps the canonical direction of a view of the input
(:mod:`spatialrec.ops.directions`), computes the gates in at least float32
(:mod:`spatialrec.ops.gates`), and returns a tensor of the input's shape and dtype.
"""

from .directions import (
    DEFAULT_DIRECTIONS,
    DIRECTIONS,
    DirectionLike,
    from_canonical_view,
    gather_neighbours,
    normalize_direction,
    normalize_directions,
    num_neighbours,
    to_canonical_view,
    valid_directions,
)
from .library import scan_sequence, scan_sequence_op
from .projection import WorkingLayout, project_in_activation, project_out, working_layout
from .reference import reference_directional_gru_scan
from .scan import (
    BACKEND_ENV_VAR,
    BACKENDS,
    available_backends,
    directional_gru_scan,
    directional_gru_scan3d,
    directional_gru_scan_sequence,
    resolve_backend,
    triton_available,
)
from .upsample import interpolate2x, upsample2x
from .validation import check_scan_inputs

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "DEFAULT_DIRECTIONS",
    "DIRECTIONS",
    "DirectionLike",
    "WorkingLayout",
    "available_backends",
    "check_scan_inputs",
    "directional_gru_scan",
    "directional_gru_scan3d",
    "directional_gru_scan_sequence",
    "from_canonical_view",
    "gather_neighbours",
    "interpolate2x",
    "normalize_direction",
    "normalize_directions",
    "num_neighbours",
    "project_in_activation",
    "project_out",
    "reference_directional_gru_scan",
    "resolve_backend",
    "scan_sequence",
    "scan_sequence_op",
    "to_canonical_view",
    "triton_available",
    "upsample2x",
    "valid_directions",
    "working_layout",
]
