"""Bridges to other frameworks, each imported only when used (``import spatialrec`` never imports
them, and none of their dependencies is a core dependency of spatialrec).

- :mod:`spatialrec.integrations.nnunet`: nnU-Net v2 networks with spatial recurrence that the
  unmodified ``nnUNetv2_train`` instantiates from a plans file, and the command
  ``spatialrec-nnunet`` (``python -m spatialrec.integrations.nnunet``) that writes such a plans
  file (modules ``networks``, ``plans``, ``cli``). Needs the ``nnunet`` extra:
  ``pip install 'spatialrec[nnunet]'``.
"""
