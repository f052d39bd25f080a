"""Official checkpoints -> transformers folders, one module per model family (``clipvg``, ``hivg``) and the part
they share (``common``: reading a checkpoint safely, the weight checks, the output folder and the common flags).

Which family a checkpoint is, and which converter takes it, is asked of :mod:`clipvg_hf.families`; the one command
is ``clipvg-convert-checkpoint`` (:mod:`clipvg_hf.commands.convert_checkpoint`). This package imports nothing on
its own, so that the registry can import the family modules.
"""
