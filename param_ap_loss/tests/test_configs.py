"""Paper-row configs (issue 19): every row composes with ``--cfg job``, recipe values as the official
configs, required initial weights, and the official photometric distortion."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from torchvision.models import resnet18

from repro_shared.checkpoint import CheckpointError

from param_ap_loss.cli import search, train, train_and_evaluate
from param_ap_loss.data.transforms import build_transforms
from param_ap_loss.data.photometric import PhotoMetricDistortion, rgb_to_hsv
from param_ap_loss.models.build import build_detector

BIN = Path(sys.executable).parent
EXPERIMENTS = Path(__file__).parents[1] / "src" / "param_ap_loss" / "configs" / "experiment"
PAPER_ROWS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if "tiny" not in p.stem)


def _cfg(name, *overrides, config="train"):
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        return compose(config, overrides=[f"experiment={name}", *overrides])


def test_every_paper_row_composes_with_cfg_job(monkeypatch, capsys):
    """``pap-train experiment=<row> --cfg job`` (``pap-search`` for the searches) through the real Hydra entry
    points, in this process (a subprocess per row would spend most of its time importing torch)."""
    assert len(PAPER_ROWS) == 17
    for name in PAPER_ROWS:
        main, exe = (search, "pap-search") if name.startswith("search_") else (train, "pap-train")
        monkeypatch.setattr(sys, "argv", [exe, f"experiment={name}", "--cfg", "job"])
        main()
        cfg = yaml.safe_load(capsys.readouterr().out)
        assert cfg["data"]["name"] == "coco" and cfg["device"] == "auto", name
        assert cfg["init"]["required"] is True and cfg["init"]["path"].endswith("resnet50-0676ba61.pth"), name
    res = subprocess.run([str(BIN / "pap-train"), "experiment=retinanet_alrp_coco", "--cfg", "job"], capture_output=True,
                         text=True, timeout=300)  # and once as a user types it
    assert res.returncode == 0 and yaml.safe_load(res.stdout)["loss"]["type"] == "alrp", res.stderr[-2000:]


ROWS = {  # experiment: (loss type, lr, milestones, box stds, test NMS)
    "retinanet_focal_l1_coco": ("focal_l1", 0.016, [60, 80], [1.0] * 4, 0.5),
    "retinanet_focal_giou_coco": ("focal_giou", 0.016, [60, 80], [1.0] * 4, 0.5),
    "retinanet_ap_loss_coco": ("ap_loss", 0.002, [60, 80], [0.1, 0.1, 0.2, 0.2], 0.5),
    "retinanet_alrp_coco": ("alrp", 0.008, [60, 80], [0.1, 0.1, 0.2, 0.2], 0.5),
    "retinanet_pap_coco": ("pap", 0.016, [60, 80], [0.1, 0.1, 0.2, 0.2], 0.6),
    "faster_rcnn_ce_l1_coco": ("ce_l1", 0.04, [75, 95], None, 0.5),
    "faster_rcnn_ce_giou_coco": ("ce_giou", 0.04, [75, 95], None, 0.5),
    "faster_rcnn_alrp_coco": ("alrp", 0.012, [75, 95], None, 0.5),
    "faster_rcnn_pap_coco": ("pap", 0.024, [75, 95], None, 0.5),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_mmdet_rows_recipe_values(name):
    kind, lr, milestones, stds, nms = ROWS[name]
    cfg = _cfg(name)
    assert cfg.loss.type == kind and cfg.train.lr == lr and list(cfg.train.milestones) == milestones
    assert cfg.train.epochs == 100 and cfg.train.optimizer == "sgd" and cfg.train.weight_decay == 1e-4
    assert cfg.train.warmup_iters == 500 and cfg.train.warmup_ratio == 0.001 and cfg.train.clip_max_norm == 0
    assert cfg.model.nms_thresh == nms and cfg.model.score_thresh == 0.05 and cfg.data.train_transform == "ssd512"
    if stds is not None:
        assert list(cfg.model.box_stds) == stds
    if kind == "focal_giou":
        assert cfg.loss.giou_weight == 2.0
    if kind == "ce_giou":
        assert cfg.loss.giou_weight == 10.0
    if kind == "alrp":
        assert cfg.loss.rpn_weight == 0.2 and cfg.loss.sb_period == 3665 and cfg.loss.sb_init == 50.0


def test_search_reward_uses_nms_05():
    assert _cfg("search_retinanet", config="search").model.nms_thresh == 0.5
    assert _cfg("search_faster_rcnn", config="search").model.nms_thresh == 0.5


@pytest.mark.parametrize("refine,two_stage", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("loss", ["", "pap_"])
def test_deformable_detr_rows_follow_the_official_recipe(loss, refine, two_stage):
    suffix = {(False, False): "", (True, False): "_refine", (True, True): "_two_stage"}[(refine, two_stage)]
    cfg = _cfg(f"deformable_detr_{loss}coco".replace("_coco", f"{suffix}_coco"))
    assert cfg.loss.type == ("pap" if loss else "focal_l1_giou")
    assert cfg.model.detr.box_refine == refine and cfg.model.detr.two_stage == two_stage
    assert cfg.model.neck == "input_proj" and cfg.model.detr.dropout == 0.1 and cfg.model.detr.num_queries == 300
    assert cfg.data.train_transform == "detr_multiscale" and cfg.model.train_size is None
    assert cfg.model.test_min_size == 800 and cfg.model.test_max_size == 1333
    tc = cfg.train
    assert tc.optimizer == "adamw" and tc.lr == 2e-4 and tc.weight_decay == 1e-4 and tc.clip_max_norm == 0.1
    assert tc.epochs == 50 and list(tc.milestones) == [40] and tc.warmup_iters == 0 and tc.batch_size == 4
    assert [list(g.names) for g in tc.param_groups] == [["backbone.body"], ["reference_points", "sampling_offsets"]]
    assert [g.lr_mult for g in tc.param_groups] == [0.1, 0.1]


def test_detr_multiscale_pipeline_sizes_and_boxes():
    """Deformable DETR's augmentation: short side in 480..800 (step 32) with the long side <= 1333, or a
    400/500/600 resize + 384-600 crop before it; boxes stay inside the image; the model keeps that size."""
    from PIL import Image
    from torchvision import tv_tensors

    from param_ap_loss.data.transforms import DETR_SCALES, RandomSizeCrop
    from param_ap_loss.models.common import SizedTransform

    tf = build_transforms("detr_multiscale")
    img = Image.new("RGB", (640, 400))
    boxes = tv_tensors.BoundingBoxes([[20.0, 30.0, 300.0, 200.0], [400.0, 100.0, 630.0, 390.0]], format="XYXY",
                                     canvas_size=(400, 640))
    shorts = set()
    for seed in range(30):
        torch.manual_seed(seed)
        out, tgt = tf(img, {"boxes": boxes, "labels": torch.tensor([0, 1])})
        h, w = out.shape[-2:]
        assert min(h, w) in DETR_SCALES and max(h, w) <= 1333, (h, w)
        b = tgt["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all() and len(b) == len(tgt["labels"])
        shorts.add(min(h, w))
    assert len(shorts) > 5
    crop = RandomSizeCrop(384, 600)
    for seed in range(20):
        torch.manual_seed(seed)
        out, cb = crop(tv_tensors.Image(torch.zeros(3, 500, 900)),
                       tv_tensors.BoundingBoxes([[0.0, 0.0, 900.0, 500.0]], format="XYXY", canvas_size=(500, 900)))
        h, w = out.shape[-2:]
        assert 384 <= h <= 500 and 384 <= w <= 600 and cb.tolist() == [[0.0, 0.0, float(w), float(h)]]
    st = SizedTransform(None, 800, 1333).train()
    batch, _ = st([torch.rand(3, 608, 911)], [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([0])}])
    assert batch.image_sizes == [(608, 911)]  # no resize in training; padded to /32 only


def test_ce_baselines_use_l1_in_the_rpn():
    """mmdet 2.1 base RPN: loss_bbox L1Loss (weight 1) over the sampled anchors; torchvision uses smooth L1."""
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        cfg = compose("train", overrides=["model=faster_rcnn_tiny", "loss=ce_giou"])
    rpn = build_detector(cfg.model, cfg.loss, 3).rpn
    g = torch.Generator().manual_seed(0)
    labels = [torch.tensor([1.0, 0.0, -1.0, 1.0, 0.0, 0.0])]
    obj, deltas, tgt = torch.randn(6, 1, generator=g), torch.randn(6, 4, generator=g) * 0.05, torch.zeros(6, 4)
    torch.manual_seed(0)
    pos, neg = rpn.fg_bg_sampler(labels)
    n_sampled = int(pos[0].sum() + neg[0].sum())
    torch.manual_seed(0)
    _, box = rpn.compute_loss(obj, deltas, labels, [tgt])
    assert box.item() == pytest.approx(deltas[pos[0].bool()].abs().sum().item() / n_sampled)  # |x| < 1/9 too


def test_ssd512_photometric_values():
    (pmd,) = [t for t in build_transforms("ssd512").transforms if isinstance(t, PhotoMetricDistortion)]
    assert pmd.brightness_delta == 32 and pmd.hue_delta == 18 and pmd.p == 0.5 and pmd.swap_p == 0.5
    assert pmd.contrast_range == (0.5, 1.5) and pmd.saturation_range == (0.5, 1.5)


def test_photometric_brightness_is_additive_and_unclipped():
    from torchvision import tv_tensors

    t = PhotoMetricDistortion(brightness_delta=32, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0, p=1.0,
                              swap_p=0.0)
    img = tv_tensors.Image(torch.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5))
    shifts, lows, highs = [], [], []
    for seed in range(40):
        torch.manual_seed(seed)
        out = t(img)
        shift = out - img
        torch.testing.assert_close(shift, torch.full_like(shift, shift.flatten()[0].item()), atol=1e-5, rtol=0)
        shifts.append(shift.flatten()[0].item() * 255)
        lows.append(out.min().item())
        highs.append(out.max().item())
    assert max(abs(s) for s in shifts) <= 32 and max(shifts) > 20 and min(shifts) < -20  # U(-32, 32) grey levels
    assert min(lows) < -20 / 255 and max(highs) > 1 + 20 / 255  # no clipping to [0, 1], as officially


def test_photometric_hue_turns_by_at_most_18_degrees():
    from torchvision import tv_tensors

    t = PhotoMetricDistortion(brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=18, p=1.0,
                              swap_p=0.0)
    img = tv_tensors.Image(torch.tensor([0.9, 0.5, 0.1]).reshape(3, 1, 1).expand(3, 2, 2).clone())
    h0 = rgb_to_hsv(img)[0, 0, 0].item()
    turns = []
    for seed in range(60):
        torch.manual_seed(seed)
        turns.append(rgb_to_hsv(t(img))[0, 0, 0].item() - h0)
    assert max(abs(d) for d in turns) <= 18 + 1e-3 and max(turns) > 14 and min(turns) < -14


def test_paper_row_without_initial_weights_stops_before_building_anything(tmp_path):
    cfg = _cfg("retinanet_pap_coco", f"init.path={tmp_path}/missing.pth", f"data.root={tmp_path}/no_coco")
    with pytest.raises(FileNotFoundError, match=r"init\.path=.*missing\.pth.*not a file.*download\.pytorch\.org"):
        train_and_evaluate(cfg, torch.device("cpu"))  # the missing COCO folder is never reached


def test_initial_weights_are_loaded_into_the_trunk(tmp_path):
    path = tmp_path / "r18.pth"
    torch.manual_seed(0)
    sd = resnet18().state_dict()
    torch.save(sd, path)
    with initialize_config_module("param_ap_loss.configs", version_base=None):
        cfg = compose("train", overrides=["model.backbone.name=resnet18", "model.backbone.trainable_layers=3"])
    model = build_detector(cfg.model, cfg.loss, 3, init_path=path)
    for k in ("conv1.weight", "layer3.1.conv2.weight", "layer4.0.bn1.running_var"):
        assert torch.equal(model.backbone.body.state_dict()[k], sd[k]), k
    torch.save({k: v[:1] if v.dim() else v for k, v in sd.items()}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        build_detector(cfg.model, cfg.loss, 3, init_path=tmp_path / "bad.pth")
