"""Synthetic nuScenes (spec §4.5): seeded scenes written as the 13 JSON tables the real devkit loads.

Ten scenes with the official ``v1.0-mini`` names (8 ``mini_train`` + 2 ``mini_val``), so
``NuScenes(version='v1.0-mini')`` loads them and ``DetectionEval(eval_set='mini_val')`` evaluates them.
Every scene: the ego vehicle drives at constant speed and yaw rate, samples 0.5 s apart; objects of all
10 detection classes (``cover_classes``) move at constant velocity along their heading (so velocity is
learnable from two frames); 6 cameras with nuScenes-like intrinsics/extrinsics render a ray-cast 2 m
checkerboard ground (ego-motion cue), sky, and the boxes painter-ordered with per-face shading (front
brightest, so heading is visible); LIDAR_TOP files hold points sampled on the box surfaces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pyquaternion import Quaternion

from .constants import CAMERAS, CANONICAL_WLH, CLASSES

MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")

CATEGORY = {"barrier": "movable_object.barrier", "bicycle": "vehicle.bicycle", "bus": "vehicle.bus.rigid",
            "car": "vehicle.car", "construction_vehicle": "vehicle.construction", "motorcycle": "vehicle.motorcycle",
            "pedestrian": "human.pedestrian.adult", "traffic_cone": "movable_object.trafficcone",
            "trailer": "vehicle.trailer", "truck": "vehicle.truck"}
COLOUR = {"barrier": (230, 60, 40), "bicycle": (250, 200, 20), "bus": (40, 90, 230), "car": (40, 200, 60),
          "construction_vehicle": (200, 120, 30), "motorcycle": (220, 40, 200), "pedestrian": (250, 250, 250),
          "traffic_cone": (255, 120, 0), "trailer": (120, 60, 180), "truck": (30, 200, 200)}
SPEED_RANGE = {"bus": (3.0, 9.0), "car": (3.0, 10.0), "construction_vehicle": (1.0, 4.0), "trailer": (3.0, 8.0),
               "truck": (3.0, 9.0), "pedestrian": (0.6, 1.6), "bicycle": (2.0, 5.0), "motorcycle": (3.0, 8.0)}
# Optical-axis yaw (deg, ego frame), mount position (m) and focal length at 1600 px width, spec §4.5.
CAM_RIG = {"CAM_FRONT": (0.0, (1.70, 0.00, 1.5), 1266.0), "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.50, 1.5), 1266.0),
           "CAM_FRONT_LEFT": (55.0, (1.55, 0.50, 1.5), 1266.0), "CAM_BACK": (180.0, (0.00, 0.00, 1.5), 809.0),
           "CAM_BACK_LEFT": (110.0, (1.05, 0.50, 1.5), 1266.0), "CAM_BACK_RIGHT": (-110.0, (1.05, -0.50, 1.5), 1266.0)}
LIDAR_TRANSLATION = (0.94, 0.0, 1.84)
LIDAR_ROTATION = Quaternion(axis=(0, 0, 1), angle=-math.pi / 2)  # lidar x right, y forward
T0_US = 1_532_402_927_647_951
FACES = {"front": [0, 1, 2, 3], "back": [4, 5, 6, 7], "left": [0, 3, 7, 4], "right": [1, 2, 6, 5],
         "top": [0, 1, 5, 4], "bottom": [3, 2, 6, 7]}
SHADE = {"front": 1.0, "back": 0.35, "left": 0.7, "right": 0.6, "top": 0.85, "bottom": 0.3}


def token(*parts) -> str:
    """Deterministic 32-hex token."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def box_corners(center, wlh, yaw) -> np.ndarray:
    """(8, 3) corners: x along length (front = +x), y along width, z up; order matches ``FACES``."""
    w, l, h = wlh
    s = np.array([[1, 1, 1], [1, -1, 1], [1, -1, -1], [1, 1, -1], [-1, 1, 1], [-1, -1, 1], [-1, -1, -1],
                  [-1, 1, -1]], dtype=np.float64) * 0.5 * np.array([l, w, h])
    c, sn = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1]])
    return s @ R.T + np.asarray(center)


def camera_matrices(channel: str, img_w: int, img_h: int):
    """Intrinsics K (3, 3) and camera->ego rotation (3, 3) + translation (3,) of one rig camera."""
    yaw_deg, pos, f1600 = CAM_RIG[channel]
    f = f1600 * img_w / 1600.0
    K = np.array([[f, 0, img_w / 2.0], [0, f, img_h / 2.0], [0, 0, 1.0]])
    psi = math.radians(yaw_deg)
    z_ax = np.array([math.cos(psi), math.sin(psi), 0.0])  # optical axis
    x_ax = np.array([math.sin(psi), -math.cos(psi), 0.0])  # image right
    y_ax = np.array([0.0, 0.0, -1.0])  # image down
    return K, np.stack([x_ax, y_ax, z_ax], axis=1), np.array(pos)


def _clip_near(pts_cam: np.ndarray, near: float = 0.1) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon (n, 3) in camera coordinates against z >= near."""
    out = []
    n = len(pts_cam)
    for i in range(n):
        a, b = pts_cam[i], pts_cam[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


def render_camera(K, cam2global: np.ndarray, objects: list, img_w: int, img_h: int, rng) -> np.ndarray:
    """(H, W, 3) uint8: sky, ray-cast 2 m checkerboard ground, boxes in painter order with face shades."""
    u, v = np.meshgrid(np.arange(img_w) + 0.5, np.arange(img_h) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T @ cam2global[:3, :3].T
    cz = cam2global[2, 3]
    hit = rays[..., 2] < -1e-6
    t = np.where(hit, -cz / np.where(hit, rays[..., 2], -1.0), 0.0)
    gx = cam2global[0, 3] + t * rays[..., 0]
    gy = cam2global[1, 3] + t * rays[..., 1]
    checker = (np.floor(gx / 2.0) + np.floor(gy / 2.0)) % 2
    fade = np.clip(1.0 - t / 120.0, 0.3, 1.0)
    ground = (70 + 60 * checker) * fade
    img = np.empty((img_h, img_w, 3))
    img[...] = np.where(hit[..., None], ground[..., None] * np.array([1.0, 1.0, 0.95]),
                        np.array([150.0, 190.0, 235.0]))
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    global2cam = np.linalg.inv(cam2global)
    cam_pos = cam2global[:3, 3]
    order = sorted(objects, key=lambda o: -np.linalg.norm(o["center"] - cam_pos))
    for obj in order:
        corners = obj["corners"]
        centre = corners.mean(0)
        for name, idx in FACES.items():
            fc = corners[idx].mean(0)
            if np.dot(fc - centre, cam_pos - fc) <= 0:  # back-face culling (convex box)
                continue
            pc = corners[idx] @ global2cam[:3, :3].T + global2cam[:3, 3]
            pc = _clip_near(pc)
            if len(pc) < 3:
                continue
            uv = pc @ K.T
            uv = uv[:, :2] / uv[:, 2:3]
            if np.abs(uv).max() > 1e5:
                continue
            col = tuple(int(c * SHADE[name]) for c in COLOUR[obj["name"]])
            draw.polygon([tuple(p) for p in uv], fill=col)
    out = np.asarray(pil).astype(np.float64) + rng.normal(0.0, 3.0, size=(img_h, img_w, 3))
    return np.clip(out, 0, 255).astype(np.uint8)


def _ego_trajectory(rng, n: int, dt: float):
    """Constant speed / yaw rate: (n, 3) xy-yaw of the ego vehicle in the global frame."""
    x, y, yaw = rng.uniform(-200, 200), rng.uniform(-200, 200), rng.uniform(-math.pi, math.pi)
    speed, rate = rng.uniform(0.0, 6.0), rng.uniform(-0.08, 0.08)
    out = []
    for _ in range(n):
        out.append((x, y, yaw))
        x += speed * dt * math.cos(yaw + 0.5 * rate * dt)
        y += speed * dt * math.sin(yaw + 0.5 * rate * dt)
        yaw += rate * dt
    return np.array(out)


def _spawn_objects(rng, ego: np.ndarray, n_objects: int, dt: float, cover_classes: bool) -> list:
    """Objects with class, size, yaw, constant velocity; kept apart from each other and the ego path."""
    names = list(CLASSES) if cover_classes else []
    weights = np.array([1, 0.5, 0.5, 4, 0.5, 0.5, 3, 1, 0.5, 1.5])
    names += list(rng.choice(CLASSES, size=max(0, n_objects - len(names)), p=weights / weights.sum()))
    times = np.arange(len(ego)) * dt
    objects = []
    for name in names:
        for _ in range(200):
            w, l, h = (np.array(CANONICAL_WLH[name]) * rng.uniform(0.9, 1.1, 3)).tolist()
            k = rng.integers(len(ego))
            max_r = 25.0 if name in ("barrier", "traffic_cone") else 38.0
            r, phi = rng.uniform(6.0, max_r), rng.uniform(-math.pi, math.pi)
            c0 = ego[k, :2] + r * np.array([math.cos(phi), math.sin(phi)])
            yaw = rng.uniform(-math.pi, math.pi)
            moving = name in SPEED_RANGE and rng.random() < 0.6
            speed = rng.uniform(*SPEED_RANGE[name]) if moving else 0.0
            vel = speed * np.array([math.cos(yaw), math.sin(yaw)])
            path = c0[None] + (times - times[k])[:, None] * vel[None]
            rad = 0.5 * math.hypot(w, l)
            if np.linalg.norm(path - ego[:, :2], axis=1).min() < rad + 4.0:
                continue
            if any(np.linalg.norm(path - o["path"], axis=1).min() < rad + o["rad"] + 0.5 for o in objects):
                continue
            objects.append(dict(name=name, wlh=(w, l, h), yaw=yaw, vel=vel, path=path, rad=rad, speed=speed))
            break
    return objects


def _attribute(name: str, speed: float) -> str:
    if name in ("barrier", "traffic_cone"):
        return ""
    moving = speed > 0.2
    if name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if name in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if moving:
        return "vehicle.moving"
    return "vehicle.stopped" if name == "bus" else "vehicle.parked"


def make_synthetic_nuscenes(root, samples_per_scene: int = 10, objects_per_scene: int = 14, img_w: int = 192,
                            img_h: int = 108, seed: int = 0, cover_classes: bool = True,
                            version: str = "v1.0-mini", overwrite: bool = False) -> Path:
    """Write the dataset to ``root`` (reused when a dataset with the same parameters exists). Returns root."""
    root = Path(root)
    params = dict(samples_per_scene=samples_per_scene, objects_per_scene=objects_per_scene, img_w=img_w,
                  img_h=img_h, seed=seed, cover_classes=cover_classes, version=version, generator=2)
    stamp = root / "synthetic_params.json"
    if not overwrite and stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    rng = np.random.default_rng(seed)
    dt = 0.5
    tables = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                              "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    for name in CLASSES:
        tables["category"].append(dict(token=token("cat", name), name=CATEGORY[name], description=name))
    tables["category"].append(dict(token=token("cat", "rack"), name="static_object.bicycle_rack", description=""))
    for a in ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
              "pedestrian.sitting_lying_down", "cycle.with_rider", "cycle.without_rider"):
        tables["attribute"].append(dict(token=token("attr", a), name=a, description=a))
    for i, lvl in enumerate(("v0-40", "v40-60", "v60-80", "v80-100")):
        tables["visibility"].append(dict(token=str(i + 1), level=lvl, description=lvl))
    calib = {}
    for ch in CAMERAS + ("LIDAR_TOP",):
        tables["sensor"].append(dict(token=token("sensor", ch), channel=ch,
                                     modality="lidar" if ch == "LIDAR_TOP" else "camera"))
        if ch == "LIDAR_TOP":
            rec = dict(translation=list(LIDAR_TRANSLATION), rotation=list(LIDAR_ROTATION.elements),
                       camera_intrinsic=[])
            R, t, K = LIDAR_ROTATION.rotation_matrix, np.array(LIDAR_TRANSLATION), None
        else:
            K, R, t = camera_matrices(ch, img_w, img_h)
            rec = dict(translation=t.tolist(), rotation=list(Quaternion(matrix=R, atol=1e-7).elements),
                       camera_intrinsic=K.tolist())
        rec.update(token=token("calib", ch), sensor_token=token("sensor", ch))
        tables["calibrated_sensor"].append(rec)
        sensor2ego = np.eye(4)
        sensor2ego[:3, :3], sensor2ego[:3, 3] = R, t
        calib[ch] = (K, sensor2ego)
    log_token = token("log")
    tables["log"].append(dict(token=log_token, logfile="synthetic", vehicle="synth", date_captured="2018-07-24",
                              location="singapore-onenorth"))
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / "synthetic.png")
    tables["map"].append(dict(token=token("map"), log_tokens=[log_token], category="semantic_prior",
                              filename="maps/synthetic.png"))
    for ch in CAMERAS + ("LIDAR_TOP",):
        (root / "samples" / ch).mkdir(parents=True, exist_ok=True)

    for si, scene_name in enumerate(MINI_TRAIN + MINI_VAL):
        ego = _ego_trajectory(rng, samples_per_scene, dt)
        objects = _spawn_objects(rng, ego, objects_per_scene, dt, cover_classes)
        scene_tok = token("scene", si)
        sample_toks = [token("sample", si, k) for k in range(samples_per_scene)]
        inst_anns = {oi: [] for oi in range(len(objects))}
        for k in range(samples_per_scene):
            ts = T0_US + si * 100_000_000 + k * 500_000
            ex, ey, eyaw = ego[k]
            ego_q = Quaternion(axis=(0, 0, 1), angle=eyaw)
            ego2global = np.eye(4)
            ego2global[:3, :3], ego2global[:3, 3] = ego_q.rotation_matrix, (ex, ey, 0.0)
            pose_tok = token("pose", si, k)
            tables["ego_pose"].append(dict(token=pose_tok, timestamp=ts, translation=[ex, ey, 0.0],
                                           rotation=list(ego_q.elements)))
            tables["sample"].append(dict(token=sample_toks[k], timestamp=ts, scene_token=scene_tok,
                                         prev=sample_toks[k - 1] if k > 0 else "",
                                         next=sample_toks[k + 1] if k + 1 < samples_per_scene else ""))
            frame_objs = []
            for oi, o in enumerate(objects):
                center = np.array([o["path"][k, 0], o["path"][k, 1], o["wlh"][2] / 2.0])
                frame_objs.append(dict(name=o["name"], center=center,
                                       corners=box_corners(center, o["wlh"], o["yaw"])))
            lidar_pts = []
            lidar2global = ego2global @ calib["LIDAR_TOP"][1]
            for oi, (o, fo) in enumerate(zip(objects, frame_objs)):
                d = float(np.linalg.norm(fo["center"][:2] - np.array([ex, ey])))
                n_pts = int(min(400, 4000 / (d * d + 1))) if d < 55 else 0
                if d < 55:
                    n_pts = max(n_pts, 1)
                if n_pts:
                    local = rng.uniform(-0.5, 0.5, size=(n_pts, 3))
                    axis = rng.integers(0, 3, n_pts)
                    local[np.arange(n_pts), axis] = np.sign(local[np.arange(n_pts), axis]) * 0.5
                    w, l, h = o["wlh"]
                    c, s = math.cos(o["yaw"]), math.sin(o["yaw"])
                    pts = local * np.array([l, w, h]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + fo["center"]
                    lidar_pts.append(pts)
                inst_anns[oi].append(dict(
                    token=token("ann", si, oi, k), sample_token=sample_toks[k], instance_token=token("inst", si, oi),
                    attribute_tokens=[token("attr", a)] if (a := _attribute(o["name"], o["speed"])) else [],
                    visibility_token="4", translation=fo["center"].tolist(), size=list(o["wlh"]),
                    rotation=list(Quaternion(axis=(0, 0, 1), angle=o["yaw"]).elements), num_lidar_pts=n_pts,
                    num_radar_pts=0))
            # sensor records
            for ch in CAMERAS + ("LIDAR_TOP",):
                K, s2e = calib[ch]
                stem = f"{scene_name}__{ch}__{ts}"
                if ch == "LIDAR_TOP":
                    rel = f"samples/{ch}/{stem}.pcd.bin"
                    pts = np.concatenate(lidar_pts) if lidar_pts else np.zeros((0, 3))
                    g2l = np.linalg.inv(lidar2global)
                    pl = pts @ g2l[:3, :3].T + g2l[:3, 3]
                    np.hstack([pl, np.zeros((len(pl), 2))]).astype(np.float32).tofile(root / rel)
                    hw = (0, 0)
                else:
                    rel = f"samples/{ch}/{stem}.jpg"
                    img = render_camera(K, ego2global @ s2e, frame_objs, img_w, img_h, rng)
                    Image.fromarray(img).save(root / rel, quality=92)
                    hw = (img_h, img_w)
                tables["sample_data"].append(dict(
                    token=token("sd", si, k, ch), sample_token=sample_toks[k], ego_pose_token=pose_tok,
                    calibrated_sensor_token=token("calib", ch), timestamp=ts,
                    fileformat="pcd" if ch == "LIDAR_TOP" else "jpg", is_key_frame=True, height=hw[0], width=hw[1],
                    filename=rel, prev=token("sd", si, k - 1, ch) if k > 0 else "",
                    next=token("sd", si, k + 1, ch) if k + 1 < samples_per_scene else ""))
        for oi, anns in inst_anns.items():
            for j, a in enumerate(anns):
                a["prev"] = anns[j - 1]["token"] if j > 0 else ""
                a["next"] = anns[j + 1]["token"] if j + 1 < len(anns) else ""
            tables["sample_annotation"].extend(anns)
            tables["instance"].append(dict(token=token("inst", si, oi),
                                           category_token=token("cat", objects[oi]["name"]),
                                           nbr_annotations=len(anns), first_annotation_token=anns[0]["token"],
                                           last_annotation_token=anns[-1]["token"]))
        tables["scene"].append(dict(token=scene_tok, log_token=log_token, nbr_samples=samples_per_scene,
                                    first_sample_token=sample_toks[0], last_sample_token=sample_toks[-1],
                                    name=scene_name, description="synthetic"))
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    stamp.write_text(json.dumps(params))
    return root


def main(argv=None) -> None:
    """``bevformer-v2-make-data``: write a synthetic nuScenes-format dataset."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/synthetic_nuscenes")
    p.add_argument("--samples-per-scene", type=int, default=10)
    p.add_argument("--objects-per-scene", type=int, default=14)
    p.add_argument("--img-w", type=int, default=192)
    p.add_argument("--img-h", type=int, default=108)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cover-classes", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    root = make_synthetic_nuscenes(a.root, a.samples_per_scene, a.objects_per_scene, a.img_w, a.img_h, a.seed,
                                   not a.no_cover_classes, overwrite=a.overwrite)
    print(f"synthetic nuScenes written to {root} (version v1.0-mini, eval_set mini_val)")


if __name__ == "__main__":
    main()
