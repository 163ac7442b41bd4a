"""Pieces of siamese self-supervised training that several packages use as they are.

- :mod:`repro_shared.ssl.momentum`: the cosine momentum (EMA) schedule and the fused EMA update of a
  momentum (target) network (UniGrad, SiameseIM, M3I).
- :mod:`repro_shared.ssl.masking`: BEiT block-wise patch masking with SiameseIM's exact-count top-up.
- :mod:`repro_shared.ssl.geometry`: two views by independent flip + RandomResizedCrop with their six
  relative numbers, the relative sin-cos embedding of view 2 in view 1's frame and the absolute
  sin-cos table (row before column) (SiameseIM, M3I).
- :mod:`repro_shared.ssl.augment`: the asymmetric BYOL colour augmentations of the two views.
- :mod:`repro_shared.ssl.dense_unigrad`: the dense UniGrad-form loss, row-wise, float32, with the target
  correlation all-reduced under a process group (SiameseIM, M3I).
"""
