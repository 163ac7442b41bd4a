"""nn.Modules of m3i: the DCNv3 module, InternImage, ViT backbones, heads and the M3I pre-training model."""
