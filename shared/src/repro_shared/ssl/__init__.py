"""Pieces of siamese self-supervised training that several packages use as they are.

- :mod:`repro_shared.ssl.momentum`: the cosine momentum (EMA) schedule and the fused EMA update of a
  momentum (target) network (UniGrad, SiameseIM, M3I).
"""
