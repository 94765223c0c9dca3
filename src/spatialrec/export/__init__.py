"""Deploying SDN models: a compiled model that trains at any size (:mod:`.compile`), and ONNX
export whose graph does not grow with the image size (:mod:`.onnx`).

:func:`compile_dynamic` is ``torch.compile(fullgraph=True, dynamic=True)`` with the two inductor
settings that keep a convolution's backward dynamic, made only while its model compiles.
:func:`to_onnx` wraps ``torch.onnx.export(..., dynamo=True)`` with the translation of the scan
operator into ONNX ``Scan`` nodes (needs the ``deploy`` extra, imported on first use).
"""

from .compile import compile_dynamic
from .onnx import count_onnx_nodes, onnx_scan_sequence, onnx_translation_table, to_onnx

__all__ = ["compile_dynamic", "count_onnx_nodes", "onnx_scan_sequence", "onnx_translation_table", "to_onnx"]
