"""Results JSON formatting (spec §4.2) and the devkit's DetectionEval (spec §4.3)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

from .constants import CLASSES

VEHICLES = ("car", "construction_vehicle", "bus", "truck", "trailer")
DEFAULT_ATTR = {"car": "vehicle.parked", "truck": "vehicle.parked", "trailer": "vehicle.parked",
                "construction_vehicle": "vehicle.parked", "bus": "vehicle.stopped", "pedestrian": "pedestrian.standing",
                "bicycle": "cycle.without_rider", "motorcycle": "cycle.without_rider", "barrier": "",
                "traffic_cone": ""}


def attribute_for(name: str, vx: float, vy: float) -> str:
    """Official rule (spec §4.2): moving attribute if |v| > 0.2 m/s, else the class default."""
    if np.hypot(vx, vy) > 0.2:
        if name in VEHICLES:
            return "vehicle.moving"
        if name in ("bicycle", "motorcycle"):
            return "cycle.with_rider"
        if name == "pedestrian":
            return "pedestrian.moving"
    return DEFAULT_ATTR[name]


def boxes_to_results(info: dict, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_range: dict) -> list:
    """Lidar-frame boxes ``(n, 9) = (x, y, z_centre, w, l, h, yaw, vx, vy)`` -> nuScenes result dicts (global)."""
    l2e, e2g = info["lidar2ego"], info["ego2global"]
    out = []
    for b, s, lab in zip(boxes, scores, labels):
        name = CLASSES[int(lab)]
        c_ego = l2e[:3, :3] @ b[:3] + l2e[:3, 3]
        if np.hypot(c_ego[0], c_ego[1]) > class_range[name]:
            continue
        c = e2g[:3, :3] @ c_ego + e2g[:3, 3]
        R = e2g[:3, :3] @ l2e[:3, :3]
        q = Quaternion(matrix=R, atol=1e-6) * Quaternion(axis=(0, 0, 1), angle=float(b[6]))
        v = R @ np.array([b[7], b[8], 0.0])
        out.append(dict(sample_token=info["token"], translation=c.tolist(), size=[float(x) for x in b[3:6]],
                        rotation=list(q.elements), velocity=[float(v[0]), float(v[1])], detection_name=name,
                        detection_score=float(s), attribute_name=attribute_for(name, b[7], b[8])))
    return out


def gt_results(infos: list) -> dict:
    """The ground truth of ``infos`` written as predictions (score 1), for pipeline checks."""
    from nuscenes.eval.common.config import config_factory

    rng = config_factory("detection_cvpr_2019").class_range
    res = {}
    for info in infos:
        keep = info["valid_flag"]
        res[info["token"]] = boxes_to_results(info, info["gt_boxes"][keep], np.ones(int(keep.sum())),
                                              info["gt_labels"][keep], rng)
    return res


def evaluate_results(nusc, results: dict, eval_set: str, out_dir) -> dict:
    """Run ``DetectionEval`` (``detection_cvpr_2019``) and return flat metrics (NDS, mAP, TP errors, per-class AP)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results_nusc.json"
    meta = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)
    path.write_text(json.dumps(dict(meta=meta, results=results)))
    with contextlib.redirect_stdout(io.StringIO()):
        ev = DetectionEval(nusc, config=config_factory("detection_cvpr_2019"), result_path=str(path),
                           eval_set=eval_set, output_dir=str(out_dir), verbose=False)
        summary = ev.main(plot_examples=0, render_curves=False)
    m = {"NDS": summary["nd_score"], "mAP": summary["mean_ap"]}
    for key, short in (("trans_err", "mATE"), ("scale_err", "mASE"), ("orient_err", "mAOE"), ("vel_err", "mAVE"),
                       ("attr_err", "mAAE")):
        m[short] = summary["tp_errors"][key]
    for cls, aps in summary["label_aps"].items():
        m[f"AP/{cls}"] = float(np.mean(list(aps.values())))
    return m
