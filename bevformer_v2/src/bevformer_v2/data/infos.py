"""Info records from the nuScenes devkit (spec §4.1) and mono (perspective) GT (spec §3.2).

One record per key frame, scene-contiguous and time-ordered, with the official schema's content:
lidar2ego / ego2global (4, 4), per camera the image path, intrinsics and sensor2lidar (4, 4) (through
global coordinates), the GT boxes in the key-frame lidar frame ``(n, 9) = (x, y, z_centre, w, l, h, yaw,
vx, vy)`` and, per camera, the mono 3D annotations of the DD3D head. Yaw is the nuScenes yaw in the lidar
frame (spec §3.1 allows this instead of mmdet3d's ``-yaw - pi/2``; decoding uses the same convention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

from .constants import ATTRIBUTE_ID, CAMERAS, CLASSES

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")


class DatasetError(RuntimeError):
    """A dataset folder that cannot be used, with what is wrong and what to do."""


def check_dataroot(dataroot, version: str) -> None:
    """Raise one clear ``DatasetError`` if ``dataroot/version`` lacks the nuScenes tables."""
    root = Path(dataroot)
    if not root.is_dir():
        raise DatasetError(f"nuScenes dataroot {root} does not exist; expected <dataroot>/{version}/<table>.json and "
                           f"<dataroot>/samples/CAM_*/; generate a synthetic one with bevformer-v2-make-data "
                           f"--root {root} or set data.root")
    missing = [t for t in TABLES if not (root / version / f"{t}.json").is_file()]
    if missing:
        raise DatasetError(f"nuScenes tables missing in {root / version}: {', '.join(missing)}; "
                           f"all 13 tables ({', '.join(TABLES)}) are required")


def load_nuscenes(dataroot, version: str):
    """``NuScenes(version, dataroot)`` whose failure on a broken table names the file.

    Raises:
        DatasetError: a table that is not valid JSON (truncated download, disk error), with its path.
    """
    import json

    from nuscenes import NuScenes

    try:
        return NuScenes(version, str(dataroot), verbose=False)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError) as e:
        for t in TABLES:  # find the culprit only on failure: the tables of trainval are large
            path = Path(dataroot) / version / f"{t}.json"
            try:
                with open(path) as f:
                    json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError, OSError) as bad:
                raise DatasetError(f"cannot read nuScenes table {path}: {bad}; re-download or re-extract "
                                   f"{version}") from e
        raise DatasetError(f"the nuScenes devkit cannot load {Path(dataroot) / version}: {type(e).__name__}: {e}; "
                           "the tables are valid JSON, so they are probably from different releases") from e


def detection_name(category: str) -> str | None:
    from nuscenes.eval.detection.utils import category_to_detection_name

    return category_to_detection_name(category)


def _pose(rec) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Quaternion(rec["rotation"]).rotation_matrix
    T[:3, 3] = rec["translation"]
    return T


def _mono_annotations(nusc, cam_sd_token: str, K: np.ndarray, width: int, height: int) -> dict:
    """DD3D mono GT of one camera (spec §3.2 'Mono GT construction'), all in the camera frame."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    _, boxes, _ = nusc.get_sample_data(cam_sd_token, box_vis_level=BoxVisibility.ANY)
    out = dict(boxes2d=[], labels=[], box3d=[], attr=[], speed=[])
    for box in boxes:
        name = detection_name(box.name)
        ann = nusc.get("sample_annotation", box.token)
        if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] < 3 or box.center[2] <= 0:
            continue
        corners = box.corners()
        if (corners[2] <= 0.1).any():
            continue
        uv = view_points(corners, K, normalize=True)[:2]
        x1, y1, x2, y2 = uv[0].min(), uv[1].min(), uv[0].max(), uv[1].max()
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        area_c = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
        if area_c < 1e-5 or area_c / max((x2 - x1) * (y2 - y1), 1e-9) < 0.2:  # IoU(unclipped, clipped)
            continue
        attrs = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
        vel = nusc.box_velocity(box.token)
        out["boxes2d"].append([cx1, cy1, cx2, cy2])
        out["labels"].append(CLASSES.index(name))
        out["box3d"].append(list(box.orientation.elements) + list(box.center) + list(box.wlh))
        out["attr"].append(ATTRIBUTE_ID.get(attrs[0], 3) if attrs else 3)
        out["speed"].append(float(np.linalg.norm(vel[:2])) if np.isfinite(vel).all() else float("nan"))
    return {k: np.asarray(v, dtype=np.int64 if k in ("labels", "attr") else np.float64).reshape(
        len(v), *(() if k in ("labels", "attr", "speed") else (4 if k == "boxes2d" else 10,))) for k, v in out.items()}


def build_infos(nusc, scene_names, with_mono: bool = True) -> list[dict]:
    """Info records (scene-contiguous, time-ordered) of the samples in the named scenes."""
    scenes = [s for s in nusc.scene if s["name"] in set(scene_names)]
    infos = []
    for scene in scenes:
        tok, frame_idx = scene["first_sample_token"], 0
        while tok:
            sample = nusc.get("sample", tok)
            lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            l2e = _pose(nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"]))
            e2g = _pose(nusc.get("ego_pose", lidar_sd["ego_pose_token"]))
            lidar2global = e2g @ l2e
            global2lidar = np.linalg.inv(lidar2global)
            info = dict(token=tok, scene_token=scene["token"], frame_idx=frame_idx, timestamp=sample["timestamp"],
                        lidar2ego=l2e, ego2global=e2g, cams={})
            for ch in CAMERAS:
                sd = nusc.get("sample_data", sample["data"][ch])
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                cam2global = _pose(nusc.get("ego_pose", sd["ego_pose_token"])) @ _pose(cs)
                K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
                cam = dict(data_path=str(Path(nusc.dataroot) / sd["filename"]), cam_intrinsic=K,
                           sensor2lidar=global2lidar @ cam2global, width=sd["width"], height=sd["height"])
                if with_mono:
                    cam["mono"] = _mono_annotations(nusc, sd["token"], K, sd["width"], sd["height"])
                info["cams"][ch] = cam
            boxes, names, pts = [], [], []
            for ann_tok in sample["anns"]:
                ann = nusc.get("sample_annotation", ann_tok)
                name = detection_name(ann["category_name"])
                if name is None:
                    continue
                c = global2lidar[:3, :3] @ np.asarray(ann["translation"]) + global2lidar[:3, 3]
                rot = Quaternion(matrix=global2lidar[:3, :3], atol=1e-6) * Quaternion(ann["rotation"])
                yaw = rot.yaw_pitch_roll[0]
                v = nusc.box_velocity(ann_tok)
                v = np.nan_to_num(global2lidar[:3, :3] @ v)  # NaN velocity -> 0 (spec §3.6)
                boxes.append([*c, *ann["size"], yaw, v[0], v[1]])
                names.append(name)
                pts.append(ann["num_lidar_pts"] + ann["num_radar_pts"])
            info["gt_boxes"] = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
            info["gt_labels"] = np.asarray([CLASSES.index(n) for n in names], dtype=np.int64)
            info["valid_flag"] = np.asarray(pts, dtype=np.int64) > 0
            infos.append(info)
            tok, frame_idx = sample["next"], frame_idx + 1
    return infos
