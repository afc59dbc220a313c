"""From a config to a run directory: builders, training, checkpoints, evaluation, prediction.

=================  =====================================================================
module             what
=================  =====================================================================
``builders``       model, datasets and optimiser from a :class:`~ocnet_edu.config.Config`
``train``          the training loop (set-up, step, checkpointing), one process or many
``checkpoint``     atomic, safely loaded checkpoints and RNG states
``distributed``    the only module that knows ranks (torchrun / DDP set-up)
``evaluate``       mIoU with multi-scale, flip and sliding-window inference
``predict``        label-id PNGs for test servers
=================  =====================================================================
"""
