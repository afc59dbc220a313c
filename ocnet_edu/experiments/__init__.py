"""The experiments behind ``scripts/`` and ``benchmarks/``, importable (nothing is loaded by file path).

=================  =====================================================================
module             what
=================  =====================================================================
``ablations``      the proxy ablation sweep of Tables 1, 2, 3, 5 on the digit-cards benchmark
``configs``        the configs of ``configs/paper/`` (Tables 1–3, 5, 7–11), generated
``digit_models``   training the small digit-card models shipped in :mod:`ocnet_edu.zoo`
``efficiency``     Table 4 and Fig. 4: GFLOPs, peak memory and time, each in a fresh process
``performance``    ISA's engine targets (issue 17): SA vs ISA, inference and training, and a model
=================  =====================================================================

Each module has a ``main(argv)``; the scripts are thin command lines over it, and
``python -m ocnet_edu.experiments.<module>`` takes the same arguments.
"""
