"""nnU-Net v2 with spatial recurrence, without forking nnU-Net.

nnU-Net v2 builds its network from the plans file: ``configurations -> <name> -> architecture``
holds ``network_class_name`` (a dotted name that ``get_network_from_plans`` resolves with
``pydoc.locate``), ``arch_kwargs`` (the constructor's keyword arguments) and
``_kw_requires_import`` (the ``arch_kwargs`` that are dotted names of classes). Any importable
class with the right constructor can therefore be trained by the unmodified ``nnUNetv2_train``.

This module provides two such classes, one per nnU-Net network family, 2D and 3D alike (the
dimension comes from ``conv_op``, as in nnU-Net):

- :class:`SDNPlainConvUNet`, nnU-Net's default ``PlainConvUNet``;
- :class:`SDNResidualEncoderUNet`, the ``ResidualEncoderUNet`` of the ResEnc presets.

Each takes the original's constructor arguments plus ``sdn_stages``, ``sdn_state_size``,
``sdn_directions``, ``sdn_gate_init`` and ``sdn_backend``, builds the original network and
replaces one stride-1 convolution per chosen encoder stage by a
:class:`~spatialrec.layers.ResidualSDN` with :func:`~spatialrec.convert.add_spatial_recurrence`:
the last convolution of the stage in a ``PlainConvUNet``, the first convolution of the stage's
last residual block in a ``ResidualEncoderUNet`` (its second convolution feeds a normalisation
that nnU-Net initialises to zero, which would keep the new layer's gradient at zero for a step).

**Initialisation.** ``get_network_from_plans`` calls ``network.apply(network.initialize)`` after
construction; nnU-Net's ``initialize`` draws He-normal weights for every convolution, the
convolutions inside the new layers included. ``Module.apply`` visits children before their
parent, so :meth:`initialize` here, called on a ``ResidualSDN`` after its convolutions were
redrawn, restores the exact start of :mod:`spatialrec.convert`: the SDN branch's output
projection is zeroed, the gate's bias set to ``logit(sdn_gate_init)`` and the conv branch scaled
by ``1 / sigmoid(logit(sdn_gate_init))``. The initialised SDN network therefore computes exactly
what a plain nnU-Net network with the conv branches' weights would compute (bit for bit with the
default ``sdn_gate_init=0.5``): it starts as plain nnU-Net and learns how much recurrence to use.
:func:`load_plain_weights` puts the weights of a (trained) plain network into an SDN network
under the same guarantee.

**The plans command.** :func:`convert_plans` (and ``spatialrec-nnunet`` /
``python -m spatialrec.integrations.nnunet``) reads a plans file, names the SDN class with the
chosen options in the chosen configurations, checks that every converted configuration builds
(on the ``meta`` device: no memory, no time), and writes the result under a new plans
identifier beside the original (atomically, through :mod:`spatialrec.io`). ``data_identifier``
is kept, so the preprocessed data is reused. See ``docs/nnunet.md``.

**Modules.** :mod:`~spatialrec.integrations.nnunet.networks` (the networks, their options,
:func:`load_plain_weights`), :mod:`~spatialrec.integrations.nnunet.plans` (:func:`convert_plans`),
:mod:`~spatialrec.integrations.nnunet.cli` (the command). Everything public is re-exported here,
and plans files name the classes here (``spatialrec.integrations.nnunet.SDNPlainConvUNet``).

Needs nnU-Net's networks (``dynamic-network-architectures``); the ``nnunet`` extra installs them
with nnU-Net: ``pip install 'spatialrec[nnunet]'``.
"""

from .cli import main
from .networks import DEFAULT_SDN_OPTIONS, SDNPlainConvUNet, SDNResidualEncoderUNet, load_plain_weights, sdn_conv_names
from .plans import DEFAULT_PLANS_IDENTIFIER, PlansError, convert_plans

__all__ = [
    "DEFAULT_PLANS_IDENTIFIER",
    "DEFAULT_SDN_OPTIONS",
    "PlansError",
    "SDNPlainConvUNet",
    "SDNResidualEncoderUNet",
    "convert_plans",
    "load_plain_weights",
    "main",
    "sdn_conv_names",
]
