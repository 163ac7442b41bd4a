"""Official-layout state dicts for the converter tests, written from the spec (§2.1-2.3), not from our code.

The tensors our modules hold keep their official names; what only the official modules hold is listed
here by hand with its official shape: ADDP's ``decoder_pos_embed`` (1, N+1, Dd), ``pos_token_embed`` and
``pos_mask_embed`` (1, N+1, D), ``decoder_pred`` Linear(Dd, p*p*3); MAGE's ``patch_embed.proj``
Conv2d(3, D, p, p), ``cls_token`` (1, 1, D), ``pos_embed`` (1, N+1, D), ``mask_token`` (1, 1, Dd),
``decoder_pos_embed`` (1, N+1, Dd), ``decoder_pred`` Linear(Dd, p*p*3). An ADDP checkpoint holds the
tokenizer twice (``vqgan.*`` and ``token_predictor.vqgan.*``, the same module registered twice).
"""

import torch


def _like(shape, meta):
    return torch.empty(shape, device="meta") if meta else torch.randn(shape)


def addp_unused(D, Dd, N, p, meta=False):
    return {"decoder_pos_embed": _like((1, N + 1, Dd), meta), "pos_token_embed": _like((1, N + 1, D), meta),
            "pos_mask_embed": _like((1, N + 1, D), meta), "decoder_pred.weight": _like((p * p * 3, Dd), meta),
            "decoder_pred.bias": _like((p * p * 3,), meta)}


def mage_unused(D, Dd, N, p, meta=False):
    return {"patch_embed.proj.weight": _like((D, 3, p, p), meta), "patch_embed.proj.bias": _like((D,), meta),
            "cls_token": _like((1, 1, D), meta), "pos_embed": _like((1, N + 1, D), meta),
            "mask_token": _like((1, 1, Dd), meta), "decoder_pos_embed": _like((1, N + 1, Dd), meta),
            "decoder_pred.weight": _like((p * p * 3, Dd), meta), "decoder_pred.bias": _like((p * p * 3,), meta)}


def official_addp(model, tokenizer, teacher, patch, meta=False):
    """The state dict of the official ``MaskedGenerativeEncoderViT`` for our three modules."""
    D, N = model.cls_token.shape[-1], model.num_tokens
    Dd = model.mask_token.shape[-1]
    Dt, Ddt = teacher.blocks[0].norm1.weight.shape[0], teacher.decoder_pos_embed_learned.shape[-1]
    sd = dict(model.state_dict())
    sd.update(addp_unused(D, Dd, N, patch, meta))
    for k, v in tokenizer.state_dict().items():
        sd["vqgan." + k] = v
        sd["token_predictor.vqgan." + k] = v
    for k, v in {**teacher.state_dict(), **mage_unused(Dt, Ddt, N, patch, meta)}.items():
        sd["token_predictor." + k] = v
    return sd


def official_mage(teacher, tokenizer, patch, meta=False):
    """The state dict of an official MAGE checkpoint (with its tokenizer copy ``vqgan.*``)."""
    Dt, Ddt = teacher.blocks[0].norm1.weight.shape[0], teacher.decoder_pos_embed_learned.shape[-1]
    sd = {**teacher.state_dict(), **mage_unused(Dt, Ddt, teacher.num_tokens, patch, meta)}
    sd.update({"vqgan." + k: v for k, v in tokenizer.state_dict().items()})
    return sd
