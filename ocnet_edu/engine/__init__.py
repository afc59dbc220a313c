"""From a config to a run directory: builders, training, checkpoints, evaluation, prediction.

=================  =====================================================================
module             what
=================  =====================================================================
``builders``       model, datasets (training / evaluation) and optimiser from a config
``train``          the training loop: set-up, resume, step, checkpointing; one process or many
``train_log``      ``metrics.csv``, TensorBoard and the progress bar of a run
``checkpoint``     atomic, checksummed, safely loaded checkpoints and RNG states
``run_dir``        atomic file writes, stale temporaries, no silent overwrite of a run
``distributed``    the only module that knows ranks (torchrun / DDP set-up, sharding)
``evaluate``       mIoU with multi-scale, flip and sliding-window inference
``predict``        label-id PNGs for test servers
=================  =====================================================================
"""
