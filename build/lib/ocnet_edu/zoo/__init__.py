"""Trained weights: the small digit-card models shipped with the package (:mod:`.digits`).

Package data: ``digits.yaml`` (the digit-cards benchmark's config) and ``checkpoints/*.pt``.
"""
