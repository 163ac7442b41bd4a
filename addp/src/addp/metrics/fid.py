"""FID / IS in the paper's protocol (spec §4), and the Fréchet distance on any features (tiny-FID).

Paper protocol (MAGE's): reference set = the 50,000 ImageNet **val** images, each ``Resize(256)``
(PIL bilinear) + ``CenterCrop(256)``, saved as PNG (:func:`prepare_reference`); generated set = 50,000
PNGs at 256x256; metric = ``torch-fidelity`` (``fidelity --isc --fid --input1 GEN --input2 REF``:
Inception-v3 ported from TF, 2048-d pool features for FID, logits for IS with 10 splits). The
reference statistics come from the val PNGs, not from a precomputed train-set npz, so the numbers are
not comparable to ADM-suite FIDs.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["frechet_distance", "fid_is", "prepare_reference"]


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two feature sets (N, D), computed with
    torch-fidelity's own FID statistics and metric functions (the formula of FID)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    stats_a = fid_features_to_statistics(features_a.double().cpu())
    stats_b = fid_features_to_statistics(features_b.double().cpu())
    return float(fid_statistics_to_metric(stats_a, stats_b, False)["frechet_inception_distance"])


def fid_is(generated_dir: str | Path, reference_dir: str | Path, *, cuda: bool | None = None,
           batch_size: int = 200, isc_splits: int = 10, cache: bool = True) -> dict[str, float]:
    """FID and Inception Score of a folder of generated PNGs against the reference PNGs (torch-fidelity).

    torch-fidelity downloads its Inception weights on first use (``~/.cache/torch/hub``); offline machines
    need them there beforehand.

    Returns:
        ``{"fid", "is_mean", "is_std"}``.

    Raises:
        FileNotFoundError: naming a missing folder.
    """
    import torch_fidelity

    for p, what in ((generated_dir, "generated images"), (reference_dir, "reference images")):
        if not Path(p).is_dir():
            raise FileNotFoundError(f"folder of {what} {p} does not exist")
    m = torch_fidelity.calculate_metrics(input1=str(generated_dir), input2=str(reference_dir), fid=True, isc=True,
                                         cuda=torch.cuda.is_available() if cuda is None else cuda,
                                         batch_size=batch_size, isc_splits=isc_splits, cache=cache, verbose=False)
    return {"fid": float(m["frechet_inception_distance"]), "is_mean": float(m["inception_score_mean"]),
            "is_std": float(m["inception_score_std"])}


def prepare_reference(val_dir: str | Path, out_dir: str | Path, size: int = 256) -> int:
    """Write the reference set: every image under ``val_dir`` (recursively) -> ``Resize(size)`` (bilinear)
    + ``CenterCrop(size)`` -> ``out_dir/<stem>.png`` (MAGE's ``prepare_imgnet_val.py``). Existing files are
    kept (the script can be re-run after an interruption). Returns the number of images written or kept.

    Raises:
        FileNotFoundError: if ``val_dir`` holds no images.
    """
    from torchvision import transforms

    from repro_shared.data import load_image
    from repro_shared.fsio import atomic_open

    files = sorted(p for p in Path(val_dir).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not files:
        raise FileNotFoundError(f"no images under {val_dir} (expected the ImageNet val JPEGs, any folder layout)")
    tf = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
                             transforms.CenterCrop(size)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for p in files:
        target = out / f"{p.stem}.png"
        if not target.exists():
            with atomic_open(target, "wb") as f:
                tf(load_image(p)).save(f, format="PNG")
    return len(files)

