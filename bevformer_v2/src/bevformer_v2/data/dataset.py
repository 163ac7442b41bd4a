"""Training/test samples from info records: multi-frame images, lidar2img, GT, mono GT (spec §2.1, §2.5, §3.6).

One code path for real nuScenes (trainval / mini) and the synthetic set. Per sample:
* frames (relative key-frame offsets, e.g. ``(-1, 0)``): a frame of another scene or outside the list is
  replaced by the nearest newer available frame (spec §2.5 'missing frames').
* History frames get ``lidar2img_k @ inv(T_{k->t})`` so their BEV is computed on the current grid (spec §2.5).
* CropResizeFlipImage (same crop/resize/flip for all cameras and frames; K <- ida K; flip only flips pixels,
  the network flips features back), PhotoMetricDistortion (train, per frame), caffe Normalize (BGR, std 1),
  Pad to /32 in ``collate``.
* BDA (train): GT boxes p <- F s R(theta) p, the model warps the BEV with inv(F s R) (spec §2.4).

Randomness: every random choice of a sample is drawn from a generator seeded from numpy's global RNG, which
``repro_shared.data.build_loader`` seeds by (seed, epoch, index) for each sample in any worker, so a resumed
run loads exactly the samples of the uninterrupted one.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from repro_shared.data import DataError, load_image

from .constants import CAMERAS, PC_RANGE

_log = logging.getLogger("bevformer_v2.data")

CAFFE_MEAN_BGR = (103.53, 116.28, 123.675)


def rot_scale_flip(theta: float, scale: float, flip_x: bool, flip_y: bool) -> np.ndarray:
    """(3, 3) BDA matrix F S R(theta) acting on lidar-frame points (spec §2.4)."""
    c, s = math.cos(theta), math.sin(theta)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    F = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
    return F @ (scale * R)


def apply_bda(boxes: np.ndarray, theta: float, scale: float, flip_x: bool, flip_y: bool) -> np.ndarray:
    """Transform GT ``(n, 9)`` boxes: centres and velocities by F s R, sizes by s, yaw by theta then flips."""
    M = rot_scale_flip(theta, scale, flip_x, flip_y)
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ M.T
    out[:, 3:6] = boxes[:, 3:6] * scale
    vel = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], 1) @ M.T
    out[:, 7:9] = vel[:, :2]
    yaw = boxes[:, 6] + theta
    if flip_x:
        yaw = math.pi - yaw
    if flip_y:
        yaw = -yaw
    out[:, 6] = yaw
    return out


def photometric_distortion(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """mmdet PhotoMetricDistortion on a (3, H, W) RGB tensor in [0, 255] (each step with p = 0.5)."""
    if rng.random() < 0.5:
        img = img + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    alpha = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    if contrast_first and alpha is not None:
        img = img * alpha
    x = (img / 255.0).clamp(0, 1)
    if rng.random() < 0.5:
        x = TF.adjust_saturation(x, rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        x = TF.adjust_hue(x, rng.uniform(-18, 18) / 360.0)
    img = x * 255.0
    if not contrast_first and alpha is not None:
        img = img * alpha
    if rng.random() < 0.5:
        img = img[torch.from_numpy(rng.permutation(3))]
    return img


class BEVDataset(torch.utils.data.Dataset):
    """Samples for training/evaluation; ``infos`` from :func:`bevformer_v2.data.infos.build_infos`.

    Returns a dict: ``imgs (T, N, 3, H, W)`` (BGR caffe-normalised: mean subtracted, std 1), ``lidar2img
    (T, N, 4, 4)``, ``gt_boxes (n, 9)``, ``gt_labels (n,)``, ``bda (3, 3)``, ``flip``, ``mono`` (N dicts),
    ``intrinsics (N, 3, 3)`` (current frame, after crop/resize), ``ego_k2t (T, 4, 4)`` (frame-k lidar -> current
    lidar), ``index``, ``skipped`` (paths of unreadable samples replaced by another one, with ``skip_corrupt``).

    Raises:
        DataError: an image file is missing or unreadable (named), unless ``skip_corrupt`` is set for a training
            set: then the sample is replaced by a random other one, with a warning naming the file.
        ValueError: the info records do not have the 6 nuScenes cameras, or ``frames`` lacks 0.
    """

    def __init__(self, infos: list, frames=(0,), crop=(0, 260, 1600, 900), resize_heights=(640,),
                 test_height: int = 640, train: bool = False, flip: bool = False, bda: bool = False,
                 photometric: bool = False, bda_rot_deg: float = 22.5, bda_scale=(0.95, 1.05), pc_range=PC_RANGE,
                 skip_corrupt: bool = False):
        self.infos, self.frames, self.crop = infos, tuple(frames), tuple(crop)
        self.resize_heights, self.test_height, self.train = tuple(resize_heights), test_height, train
        self.flip, self.bda, self.photometric = flip and train, bda and train, photometric and train
        self.bda_rot, self.bda_scale, self.pc_range = math.radians(bda_rot_deg), tuple(bda_scale), pc_range
        self.skip_corrupt = skip_corrupt
        if 0 not in self.frames:
            raise ValueError(f"data.frames={list(self.frames)} must include 0 (the current frame)")
        if len(infos) and len(infos[0]["cams"]) != len(CAMERAS):
            raise ValueError(f"info records have {len(infos[0]['cams'])} cameras; BEVFormer v2 needs the 6 nuScenes "
                             f"cameras {CAMERAS}")

    def __len__(self) -> int:
        return len(self.infos)

    def _frame_index(self, i: int, offset: int) -> int:
        """Index of frame ``i + offset`` in the same scene, else the nearest newer (towards ``i``) one."""
        scene = self.infos[i]["scene_token"]
        step = 1 if offset < 0 else -1
        j = i + offset
        while j != i and not (0 <= j < len(self.infos) and self.infos[j]["scene_token"] == scene):
            j += step
        return j

    def _load_frame(self, info: dict, ratio: float, flip: bool, rng, cur_info: dict):
        x1, y1, x2, y2 = self.crop
        out_w, out_h = round((x2 - x1) * ratio), round((y2 - y1) * ratio)
        ida = np.array([[ratio, 0, -x1 * ratio], [0, ratio, -y1 * ratio], [0, 0, 1.0]])
        # current-lidar -> frame-lidar: inv(T_{k->t}), T_{k->t} = inv(L2E) inv(E2G_t) E2G_k L2E (spec §2.5)
        l2e = cur_info["lidar2ego"]
        t_k2t = np.linalg.inv(l2e) @ np.linalg.inv(cur_info["ego2global"]) @ info["ego2global"] @ l2e
        imgs, l2i, intr = [], [], []
        for ch in CAMERAS:
            cam = info["cams"][ch]
            im = load_image(cam["data_path"]).crop((x1, y1, x2, y2)).resize((out_w, out_h), Image.BILINEAR)
            t = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
            if flip:
                t = t.flip(-1)
            if self.photometric:
                t = photometric_distortion(t, rng)
            t = t[[2, 1, 0]] - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)  # RGB -> BGR, caffe mean, std 1
            imgs.append(t)
            K4 = np.eye(4)
            K4[:3, :3] = ida @ cam["cam_intrinsic"]
            l2i.append(K4 @ np.linalg.inv(cam["sensor2lidar"]) @ np.linalg.inv(t_k2t))
            intr.append(K4[:3, :3])
        return (torch.stack(imgs), torch.from_numpy(np.stack(l2i)).float(), ida, torch.from_numpy(np.stack(intr)).float(),
                torch.from_numpy(t_k2t).float())

    def _has_targets(self, info: dict) -> bool:
        mono = [c.get("mono") for c in info["cams"].values()]
        has_mono = any(m is not None and len(m["labels"]) for m in mono) or all(m is None for m in mono)
        return bool(info["valid_flag"].any()) and has_mono

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**32, size=4, dtype=np.uint64))
        skipped = []
        for _ in range(100):
            # training samples without (mono) GT are re-drawn at random (spec §3.6)
            if self.train and not self._has_targets(self.infos[i]):
                i = int(rng.integers(len(self.infos)))
                continue
            try:
                return self._sample(i, rng, skipped)
            except DataError as e:
                if not (self.skip_corrupt and self.train):  # evaluation never replaces a sample
                    raise
                _log.warning("skipping an unreadable sample (replaced by a random other one): %s", e.reason)
                skipped.append(str(e))
                i = int(rng.integers(len(self.infos)))
        raise DataError(f"no readable sample with targets found after 100 draws (last index {i}); check the data")

    def _sample(self, i: int, rng: np.random.Generator, skipped: list) -> dict:
        info = self.infos[i]
        h = int(rng.choice(self.resize_heights)) if self.train else self.test_height
        ratio = h / (self.crop[3] - self.crop[1])
        flip = bool(self.flip and rng.random() < 0.5)
        imgs, l2is, k2t = [], [], []
        for off in self.frames:
            j = self._frame_index(i, off)
            im, l2i, ida, intr, t_k2t = self._load_frame(self.infos[j], ratio, flip, rng, info)
            imgs.append(im)
            l2is.append(l2i)
            k2t.append(t_k2t)
            if off == 0:
                ida_cur, intr_cur = ida, intr
        ida, intr = ida_cur, intr_cur
        boxes = info["gt_boxes"][info["valid_flag"]]
        labels = info["gt_labels"][info["valid_flag"]]
        bda = np.eye(3)
        if self.bda:
            params = (rng.uniform(-self.bda_rot, self.bda_rot), rng.uniform(*self.bda_scale), rng.random() < 0.5,
                      rng.random() < 0.5)
            boxes = apply_bda(boxes, *params)
            bda = rot_scale_flip(*params)
        r = self.pc_range
        keep = (boxes[:, 0] > r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] > r[1]) & (boxes[:, 1] < r[4])
        boxes, labels = boxes[keep].copy(), labels[keep]
        boxes[:, 6] = (boxes[:, 6] + math.pi) % (2 * math.pi) - math.pi  # yaw wrapped to [-pi, pi)
        H, W = imgs[0].shape[-2:]
        mono = []
        for ch in CAMERAS:
            m = info["cams"][ch].get("mono")
            if m is None:
                mono.append(None)
                continue
            b2 = m["boxes2d"].copy()
            b2[:, [0, 2]] = b2[:, [0, 2]] * ida[0, 0] + ida[0, 2]
            b2[:, [1, 3]] = b2[:, [1, 3]] * ida[1, 1] + ida[1, 2]
            b2[:, [0, 2]] = b2[:, [0, 2]].clip(0, W)
            b2[:, [1, 3]] = b2[:, [1, 3]].clip(0, H)
            ok = ((b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])) > 1.0
            mono.append(dict(boxes2d=torch.from_numpy(b2[ok]).float(), labels=torch.from_numpy(m["labels"][ok]),
                             box3d=torch.from_numpy(m["box3d"][ok]).float(), attr=torch.from_numpy(m["attr"][ok]),
                             speed=torch.from_numpy(m["speed"][ok]).float(),
                             K=torch.from_numpy(ida @ info["cams"][ch]["cam_intrinsic"]).float()))
        return dict(imgs=torch.stack(imgs), lidar2img=torch.stack(l2is), gt_boxes=torch.from_numpy(boxes).float(),
                    gt_labels=torch.from_numpy(labels), bda=torch.from_numpy(bda).float(), flip=flip, mono=mono,
                    intrinsics=intr, ego_k2t=torch.stack(k2t), index=i, skipped=list(skipped))


def collate(batch: list, pad_divisor: int = 32) -> dict:
    """Stack samples; pad images (bottom/right, zeros) to a common size divisible by ``pad_divisor``.

    Host-side flags computed here so that the model never syncs with the device to read them: ``flip`` (B,)
    bool on the CPU, ``bda_identity`` (True when no sample of the batch is BDA-augmented)."""
    H = max(b["imgs"].shape[-2] for b in batch)
    W = max(b["imgs"].shape[-1] for b in batch)
    Hp, Wp = -(-H // pad_divisor) * pad_divisor, -(-W // pad_divisor) * pad_divisor
    imgs = torch.zeros(len(batch), *batch[0]["imgs"].shape[:3], Hp, Wp)
    for k, b in enumerate(batch):
        imgs[k, ..., : b["imgs"].shape[-2], : b["imgs"].shape[-1]] = b["imgs"]
    bda = torch.stack([b["bda"] for b in batch])
    return dict(imgs=imgs, lidar2img=torch.stack([b["lidar2img"] for b in batch]), img_shape=(Hp, Wp),
                gt_boxes=[b["gt_boxes"] for b in batch], gt_labels=[b["gt_labels"] for b in batch],
                bda=bda, bda_identity=bool(torch.equal(bda, torch.eye(3).expand_as(bda))),
                flip=torch.tensor([b["flip"] for b in batch]),
                mono=[b["mono"] for b in batch], intrinsics=torch.stack([b["intrinsics"] for b in batch]),
                ego_k2t=torch.stack([b["ego_k2t"] for b in batch]),
                index=[b["index"] for b in batch], skipped=[p for b in batch for p in b.get("skipped", [])])
