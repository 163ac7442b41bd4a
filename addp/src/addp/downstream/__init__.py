"""Downstream transfer of the ADDP encoder: classification (fine-tuning, linear probe), detection, segmentation."""
