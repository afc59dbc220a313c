"""Trained weights: the small digit-card models shipped with the package (:mod:`.digits`)."""
