"""Every experiment config composes with its entry point (Hydra struct mode: a misspelt key fails), and every
paper row that needs initial weights refuses to start without them, naming the file to get."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import sim
from repro_shared.run import check_required_init

EXPERIMENTS = sorted(p for p in (Path(sim.__file__).parent / "configs" / "experiment").rglob("*.yaml"))
ENTRY = {"pretrain": "pretrain", "finetune": "finetune", "linprobe": "linprobe", "fewshot": "fewshot", "det": "det",
         "seg": "seg", "robustness": "eval", "eval": "eval"}


def test_every_row_exists():
    names = {f"{p.parent.name}/{p.stem}" for p in EXPERIMENTS}
    assert names >= {"pretrain/vit_b_1600ep", "pretrain/vit_b_400ep", "pretrain/vit_l_1600ep", "finetune/vit_b",
                     "linprobe/vit_b", "fewshot/vit_b_1pct", "fewshot/vit_l_1pct", "det/coco_maskrcnn_vitdet_b_100ep",
                     "det/lvis_maskrcnn_vitdet_b_100ep", "seg/ade20k_upernet_vit_b_160k", "robustness/in_a",
                     "robustness/in_r", "robustness/in_sketch", "robustness/in_c", "eval/in1k_vit_b"}
    scripts = " ".join(p.read_text() for p in (Path(__file__).parents[1] / "scripts").glob("reproduce_*.sh"))
    for n in names:
        assert n.split("/")[1] in scripts or n in scripts, f"no reproduce script runs {n}"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_composes(path, compose_config, tmp_path):
    name = f"{path.parent.name}/{path.stem}"
    cfg = compose_config(ENTRY[path.parent.name], [f"experiment={name}"], tmp_path)
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert plain["device"] == "auto"
    assert path.read_text().startswith("# @package _global_\n# ")  # names its table / row
    # '???' merged over the base config's null stays null (OmegaConf), so it would only look enforced: paper rows
    # leave data.root etc. null and the entry points name an unset key
    assert "???" not in path.read_text()
    if path.parent.name != "pretrain":
        assert cfg.init.required, f"{name} must declare its initial weights"
        with pytest.raises(FileNotFoundError, match="Get it from") as e:
            check_required_init(cfg.init)
        assert "Convert it with `none" not in str(e.value)  # converter: a command to run, or null
    if "model" in plain and "variant" in plain["model"]:
        assert plain["model"]["variant"] in ("vit_base_patch16", "vit_large_patch16")
