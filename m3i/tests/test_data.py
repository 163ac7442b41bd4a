"""Data: the captioned shapes, tokenizers, the M3I transform, sources (ImageFolder, tar shards), target
availability, the weighted multi-source sampler, and the errors a new user meets."""

import io
import tarfile

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from repro_shared.data import DataError
from m3i.data.shapes import COLOURS, KINDS, SPLITS, VOCAB, make_shapes, shapes_split
from m3i.data.sources import (ImageFolderSource, PretrainDataset, ShapesSource, TarShardSource,
                              WeightedSourceSampler)
from m3i.data.text import WordTokenizer
from m3i.data.views import M3ITransform, count_a


def test_shapes_are_deterministic_labelled_and_captioned():
    a, b = make_shapes(200, seed=3), make_shapes.__wrapped__(200, seed=3)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, make_shapes(200, seed=4).images)
    assert a.images.shape == (200, 32, 32, 3) and a.masks.shape == (200, 32, 32)
    assert np.array_equal(a.labels, a.kind * 2 + a.colour) and set(a.labels.tolist()) <= set(range(10))
    for i in range(50):
        words = a.captions[i].split()
        assert KINDS[a.kind[i]] in words and COLOURS[a.colour[i]] in words and set(words) <= set(VOCAB)
    # the shape's pixels carry its colour: red shapes have R >> B inside the mask
    red = a.colour == 0
    inside = np.array([a.images[i][a.masks[i]].mean(0) for i in range(200)])
    assert (inside[red, 0] > inside[red, 2] + 100).all() and (inside[~red, 2] > inside[~red, 0] + 100).all()
    # sizes are ordered: mean mask area grows with the size bucket
    areas = [a.masks[a.size == s].sum((1, 2)).mean() for s in range(3)]
    assert areas[0] < areas[1] < areas[2]
    assert [len(shapes_split(s)) for s in SPLITS] == [2000, 1000, 1000]
    with pytest.raises(ValueError, match="unknown shapes split 'val'; known: train, probe_train, probe_test"):
        shapes_split("val")


def test_word_tokenizer_pads_and_ends_with_eot():
    tok = WordTokenizer(["a", "red", "ring"], context_length=6)
    assert tok("a red ring").tolist() == [1, 4, 5, 6, 2, 0]
    assert tok("A Blue ring").tolist() == [1, 4, 3, 6, 2, 0]        # unknown -> 3, lower-cased
    assert tok("a a a a a a a").tolist() == [1, 4, 4, 4, 4, 2]      # truncated, EOT kept
    assert tok.vocab_size == 7


def test_m3i_transform_gives_two_views_their_geometry_and_an_exact_count_mix():
    tf = M3ITransform(32, 4, 0.5, crop_min=0.2, min_mask_block=4, blur_p=(0.0, 0.0))
    torch.manual_seed(0)
    v1, v2, geo, mix = tf(Image.fromarray(make_shapes(4).images[0]))
    assert v1.shape == v2.shape == (3, 32, 32) and geo.shape == (6,) and mix.shape == (64,)
    assert int(mix.sum()) == 32 == tf.count_a
    for seed in range(5):
        torch.manual_seed(seed)
        assert int(tf(Image.fromarray(make_shapes(4).images[1]))[3].sum()) == 32
    assert count_a(14, 0.4) == 78  # 196 - 118: SiameseIM's mask
    with pytest.raises(ValueError, match="0 < ratio < 1"):
        count_a(8, 1.0)


def test_target_availability_per_source():
    tf = M3ITransform(32, 4, 0.5, crop_min=0.2, min_mask_block=4, blur_p=(0.0, 0.0))
    tok = WordTokenizer(VOCAB, 16)
    src = ShapesSource("train")
    full = PretrainDataset(src, tf, tok, targets=["label", "text"])[0]
    text_only = PretrainDataset(src, tf, tok, targets=["text"])[0]
    none = PretrainDataset(src, tf, tok, targets=[])[0]
    assert full[4].item() == src.data.labels[0] and bool(full[6]) and full[5].ne(0).sum() > 3
    assert text_only[4].item() == -1 and bool(text_only[6])
    assert none[4].item() == -1 and not bool(none[6]) and none[5].abs().sum() == 0
    with pytest.raises(ValueError, match="unknown target"):
        PretrainDataset(src, tf, tok, targets=["caption"])


def test_weighted_sampler_draws_each_source_by_weight_deterministically_and_resumes():
    s = WeightedSourceSampler([100, 20, 50], [0.5, 0.5, 0.0], batch_size=10, epoch_size=80, seed=1)
    s.set_epoch(0)
    order = [i for b in s for (_, i) in b]
    assert len(order) == 80
    src = np.digitize(order, [100, 120])
    assert np.bincount(src, minlength=3).tolist() == [40, 40, 0]
    assert len(set(i for i in order if 100 <= i < 120)) == 20  # 40 draws from 20 images: each twice (cycled)
    s2 = WeightedSourceSampler([100, 20, 50], [0.5, 0.5, 0.0], batch_size=10, epoch_size=80, seed=1)
    s2.set_epoch(0, start_batch=3)
    assert [i for b in s2 for (_, i) in b] == order[30:]
    s.set_epoch(1)
    assert [i for b in s for (_, i) in b] != order
    r0 = WeightedSourceSampler([100, 20, 50], None, batch_size=5, seed=1, rank=0, world_size=2)
    r1 = WeightedSourceSampler([100, 20, 50], None, batch_size=5, seed=1, rank=1, world_size=2)
    i0, i1 = [i for b in r0 for _, i in b], [i for b in r1 for _, i in b]
    assert len(i0) == len(i1) == 85 and not set(i0) & set(i1)  # proportional weights: a permutation of 170
    with pytest.raises(ValueError, match="non-negative"):
        WeightedSourceSampler([10, 10], [1.0, -1.0], batch_size=2)


def _jpeg(color, size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root):
    with tarfile.open(root / "00000.tar", "w") as t:
        _add(t, "000000.jpg", _jpeg((255, 0, 0)))
        _add(t, "000000.txt", b"a red square")
        _add(t, "000000.json", b"{}")
        _add(t, "000001.jpg", _jpeg((0, 0, 255)))          # no caption
    with tarfile.open(root / "00001.tar", "w") as t:
        _add(t, "sub/000002.png", _jpeg((0, 255, 0)))       # a JPEG named .png still decodes
        _add(t, "sub/000002.txt", "un carré vert".encode())
        _add(t, "000003.jpg", b"not an image at all")
        _add(t, "000003.txt", b"broken")


def test_tar_shards_random_access_with_cached_index_and_named_errors(tmp_path):
    write_shards(tmp_path)
    src = TarShardSource(str(tmp_path / "*.tar"), index_dir=str(tmp_path / "idx"))
    assert len(src) == 4 and sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["00000.tar.idx.npz",
                                                                                      "00001.tar.idx.npz"]
    s0, s1, s2 = src[0], src[1], src[2]
    assert s0["caption"] == "a red square" and s0["label"] == -1 and s0["image"].getpixel((5, 5))[0] > 200
    assert s1["caption"] is None and s2["caption"] == "un carré vert" and s2["image"].size == (24, 20)
    with pytest.raises(DataError, match="00001.tar"):
        src[3]
    again = TarShardSource([str(tmp_path / "0000[01].tar")], index_dir=str(tmp_path / "idx"), skip_corrupt=True)
    assert again[3] is None and again[0]["caption"] == "a red square"
    with pytest.raises(FileNotFoundError, match="matches no file; expected WebDataset tar shards"):
        TarShardSource(str(tmp_path / "missing-*.tar"))
    (tmp_path / "bad.tar").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match="cannot read tar shard .*bad.tar"):
        TarShardSource(str(tmp_path / "bad.tar"))


def test_pretrain_sources_from_the_config_take_one_shard_pattern_or_a_list_and_name_a_missing_path(tmp_path):
    from omegaconf import OmegaConf

    from m3i.tasks.pretrain import _source

    write_shards(tmp_path)
    for shards in (str(tmp_path / "*.tar"), [str(tmp_path / "00000.tar"), str(tmp_path / "00001.tar")]):
        # a single string was split into characters (each a "shard") before
        assert len(_source(OmegaConf.create({"kind": "tar", "shards": shards}), 0, False)) == 4
    for kind, key in (("tar", "shards"), ("imagefolder", "root")):
        cfg = OmegaConf.create({"kind": kind, "targets": ["text"]})
        OmegaConf.set_struct(cfg, True)  # as composed by Hydra: a key the source lacks is not a silent None
        with pytest.raises(ValueError, match=rf"data.sources\[2\].{key} is not set for a source of kind '{kind}'"):
            _source(cfg, 2, False)


def test_image_folder_errors_name_the_path_the_layout_and_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.sources\\[0\\].root=.*expected layout"):
        ImageFolderSource(str(tmp_path / "nope"), key="data.sources[0].root")
    (tmp_path / "cls_a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cls_a" / "ok.jpg")
    (tmp_path / "cls_a" / "truncated.jpg").write_bytes(_jpeg((1, 2, 3))[:40])
    src = ImageFolderSource(str(tmp_path))
    bad = [i for i in range(len(src)) if src.folder.samples[i][0].endswith("truncated.jpg")][0]
    with pytest.raises(DataError, match="truncated.jpg"):
        src[bad]
    assert ImageFolderSource(str(tmp_path), skip_corrupt=True)[bad] is None


def test_a_dataset_smaller_than_one_batch_stops_before_training_with_both_numbers(tmp_path):
    from m3i.tasks.pretrain import build_pretrain_loader

    cfg = OmegaConf.create({"seed": 0, "data": {"num_workers": 0, "skip_corrupt": False, "epoch_size": None,
                                                "sources": [{"kind": "shapes", "split": "probe_test", "targets": []}]}})
    tf = M3ITransform(32, 4, 0.5, crop_min=0.2, min_mask_block=4)
    with pytest.raises(ValueError, match="1000 samples, fewer than one batch of 4096.*train.batch_size"):
        build_pretrain_loader(cfg, tf, None, batch_size=4096)
    cfg.data.sources.append({"kind": "shapes", "split": "probe_train", "targets": [], "weight": 1.0})
    with pytest.raises(ValueError, match="2000 samples, fewer than one batch of 4096"):
        build_pretrain_loader(cfg, tf, None, batch_size=4096)
    cfg.data.sources.append({"kind": "webdataset", "targets": []})
    with pytest.raises(ValueError, match="unknown data.sources\\[2\\].kind 'webdataset'; known: shapes, imagefolder, tar"):
        build_pretrain_loader(cfg, tf, None, batch_size=8)
