"""Entry points end a user error (a path, a setting, a file, a diverging run) with one line, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro_shared.run import report_user_errors

BIN = Path(sys.executable).parent


# (the decorator itself is tested in shared/tests/test_run_logging.py)


def test_entry_point_corrupt_init_file_ends_with_one_error_line(tmp_path):
    """``addp-finetune`` with a corrupt (text) init file: exit 1, one ``error:`` line, no advice to trust it."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1"}
    corrupt = tmp_path / "addp-vit-base-16.pth"
    corrupt.write_text("<html>404 Not Found</html>\n")   # what a failed download leaves behind
    r = subprocess.run([str(BIN / "addp-finetune"), f"init.path={corrupt}", f"hydra.run.dir={tmp_path}/run"],
                       env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "addp-vit-base-16.pth cannot be read (truncated, corrupt or not a torch file)" in r.stderr
    assert "trust_checkpoint" not in r.stderr


def test_generate_without_a_model_says_what_to_pass(tmp_path):
    from helpers import cfg_of

    from addp.cli import run_generate

    with pytest.raises(ValueError, match=r"addp-generate needs a model: pass run_dir=.* or model.path="):
        run_generate(cfg_of("device=cpu", f"+output_dir={tmp_path}/gen", name="generate"))


def test_an_unset_required_setting_names_the_key(tmp_path, capsys, monkeypatch):
    from helpers import cfg_of

    from addp.cli import run_fid

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        report_user_errors("addp")(run_fid)(cfg_of("device=cpu", f"+output_dir={tmp_path}/fid", name="fid"))
    err = capsys.readouterr().err
    assert err.startswith("error: fid.generated must be set: pass fid.generated=<value>") and "Traceback" not in err


def test_paper_dense_rows_without_data_root_name_the_key(tmp_path):
    """COCO / ADE20K rows with data.root unset say so (was: "data.root='None/train2017' is not a folder")."""
    from helpers import cfg_of

    from addp.downstream.dense import run_detection, run_segmentation

    with pytest.raises(FileNotFoundError, match=r"data.root is not set; pass data.root=.* train2017/"):
        run_detection(cfg_of("experiment=coco/maskrcnn_vitdet_b", "init.required=false", "device=cpu",
                             f"+output_dir={tmp_path}/det", name="det"))
    with pytest.raises(FileNotFoundError, match=r"data.root is not set; pass data.root=.*images/\{training"):
        run_segmentation(cfg_of("experiment=ade20k/upernet_b_160k", "init.required=false", "device=cpu",
                                f"+output_dir={tmp_path}/seg", name="seg"))


def test_imagenet_rows_without_data_root_name_the_key(tmp_path):
    """ImageNet fine-tune / linear-probe rows and the pre-training data with data.root unset say so
    (was: "data.root='None/train' is not a folder")."""
    from helpers import cfg_of
    from omegaconf import OmegaConf

    from addp.cli import run_finetune, run_linprobe
    from addp.stages import build_image_dataset

    unset = r"^data.root is not set; pass data.root=/path/to/data with train/<class>/<image>.JPEG and val/"
    for run, exp, name in ((run_finetune, "finetune/in1k_vit_b_100ep", "finetune"),
                           (run_linprobe, "linprobe/vit_b", "linprobe")):
        with pytest.raises(FileNotFoundError, match=unset):
            run(cfg_of(f"experiment={exp}", "init.required=false", "device=cpu",
                       f"+output_dir={tmp_path}/{name}", name=name))
    d = OmegaConf.create({"name": "imagenet", "root": None, "img_size": 256, "crop_scale": [0.2, 1.0],
                          "skip_corrupt": False})
    with pytest.raises(FileNotFoundError, match=unset):
        build_image_dataset(d, "train")
    with pytest.raises(FileNotFoundError, match=r"data.root='.*/missing/train' is not a folder"):
        build_image_dataset(OmegaConf.merge(d, {"root": str(tmp_path / "missing")}), "train")
