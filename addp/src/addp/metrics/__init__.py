"""Metrics: FID / IS (torch-fidelity, paper protocol), Fréchet distance on any features, tiny-data probes."""
