"""repro_shared.data (resumable loaders, image errors), guards (non-finite), safe external loads,
required initial weights, momentum schedule."""

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from repro_shared import checkpoint, run
from repro_shared.checkpoint import CheckpointError, UntrustedCheckpointError
from repro_shared.data import (DataError, ImageFolder, ResumableBatchSampler, SkipNoneCollate, build_loader,
                               check_dataset_size, derive_seed, load_image, seed_step)
from repro_shared.guards import NonFiniteError, check_finite, check_finite_inputs
from repro_shared.ssl.momentum import cosine_momentum, ema_update_, momentum_pairs

HERE = Path(__file__).parent


# ------------------------------------------------------------------------------------ seeds
def test_derive_seed_is_a_fixed_order_sensitive_function():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, 1), derive_seed(1, 0), derive_seed(0, 1, 0), derive_seed(0, 2)}) == 4
    assert 0 <= derive_seed(123, 456) < 2**63
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1)


def test_seed_step_makes_every_global_rng_a_function_of_the_step():
    seed_step(3, 1, 5, rank=0)
    a = (torch.rand(3), np.random.rand(), __import__("random").random())
    torch.rand(100)
    seed_step(3, 1, 5, rank=0)
    b = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    seed_step(3, 1, 5, rank=1)
    assert not torch.equal(torch.rand(3), a[0])


# ------------------------------------------------------------------------------------ sampler
def test_sampler_epoch_order_covers_every_index_once_and_changes_with_epoch():
    s = ResumableBatchSampler(10, 3, seed=1, drop_last=False, rank=0, world_size=1)
    s.set_epoch(0)
    e0 = [k for b in s for k in b]
    assert sorted(i for _, i in e0) == list(range(10)) and all(e == 0 for e, _ in e0)
    assert len(s) == 4 and [len(b) for b in s] == [3, 3, 3, 1]
    s.set_epoch(1)
    e1 = [i for b in s for _, i in b]
    assert e1 != [i for _, i in e0] and sorted(e1) == list(range(10))
    s.set_epoch(1, start_batch=2)
    assert [i for b in s for _, i in b] == e1[6:] and len(s) == 2


def test_sampler_ranks_partition_the_epoch_like_distributed_sampler():
    shares = []
    for r in range(3):
        s = ResumableBatchSampler(10, 2, seed=0, drop_last=True, rank=r, world_size=3)
        s.set_epoch(4)
        shares.append([i for b in s for _, i in b])
        assert s.batches_per_epoch == 1  # 10 // 3 = 3 samples per rank -> one batch of 2
    full = ResumableBatchSampler(10, 9, seed=0, drop_last=True, rank=0, world_size=1)
    full.set_epoch(4)
    order = [i for b in full for _, i in b]
    for r in range(3):
        assert shares[r] == order[r::3][:2]
    padded = ResumableBatchSampler(10, 4, seed=0, drop_last=False, rank=2, world_size=3)
    assert padded.samples_per_rank == 4 and padded.batches_per_epoch == 1
    with pytest.raises(ValueError, match="start_batch"):
        full.set_epoch(0, start_batch=5)


class _RandomAug(Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.tensor([float(i)]), torch.rand(2), torch.tensor([np.random.rand()])


def _epoch(loader, epoch, start=0):
    loader.set_epoch(epoch, start)
    return [tuple(t.clone() for t in b) for b in loader]


def test_loader_batches_do_not_depend_on_workers_or_on_where_the_epoch_started():
    main = build_loader(_RandomAug(), batch_size=3, seed=5, num_workers=0)
    workers = build_loader(_RandomAug(), batch_size=3, seed=5, num_workers=2)
    a, b = _epoch(main, 1), _epoch(workers, 1)
    assert len(a) == 4
    for x, y in zip(a, b):
        assert all(torch.equal(p, q) for p, q in zip(x, y))
    tail = _epoch(main, 1, start=2)
    assert all(torch.equal(p, q) for x, y in zip(a[2:], tail) for p, q in zip(x, y))
    assert not torch.equal(_epoch(main, 2)[0][1], a[0][1])  # a new epoch draws new augmentations


def test_loading_on_the_main_process_leaves_the_global_rng_alone():
    loader = build_loader(_RandomAug(), batch_size=3, seed=5, num_workers=0)
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    _epoch(loader, 0)
    assert torch.equal(torch.rand(4), expected)


def test_dataset_smaller_than_one_batch_is_an_error_with_both_numbers_and_the_key():
    with pytest.raises(ValueError, match=r"9 samples, fewer than one batch of 64, so .*lower train\.batch_size \(to at most 9\)"):
        check_dataset_size(9, 64)
    with pytest.raises(ValueError, match=r"8 x 2 processes = 16.*lower data\.bs"):
        build_loader(_RandomAug(), batch_size=8, world_size=2, rank=0, batch_size_key="data.bs")
    with pytest.raises(ValueError, match="empty"):
        check_dataset_size(0, 1)
    check_dataset_size(9, 64, drop_last=False)


def _run(args, env_extra=None, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE), **(env_extra or {})}
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def _losses(path: Path) -> dict[int, str]:
    return {int(s): l for s, l in (line.split() for line in path.read_text().splitlines())}


def _assert_same_run(a: Path, b: Path, kill: int, ranks: int = 1):
    wa, wb = torch.load(a / "final.pt", weights_only=True), torch.load(b / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for r in range(ranks):
        la, lb = _losses(a / f"losses_{r}.txt"), _losses(b / f"losses_{r}.txt")
        assert lb.keys() == la.keys() and all(la[s] == lb[s] for s in la if s > kill - kill % 4)


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _run([sys.executable, str(HERE / "resume_loader_script.py"), str(a), "-1"])
    killed = _run([sys.executable, str(HERE / "resume_loader_script.py"), str(b), "10"], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert not (b / "final.pt").exists()  # step 10 is mid-epoch 1 (6 steps per epoch); last checkpoint: step 8
    _run([sys.executable, str(HERE / "resume_loader_script.py"), str(b), "-1"])
    _assert_same_run(a, b, kill=10)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.dist
def test_two_process_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()

    def launch(out, kill, check=True):
        return _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                     str(HERE / "resume_loader_script.py"), str(out), str(kill)], check=check)

    launch(a, -1)
    killed = launch(b, 7, check=False)
    assert killed.returncode != 0 and not (b / "final.pt").exists()
    launch(b, -1)
    _assert_same_run(a, b, kill=7, ranks=2)


# ------------------------------------------------------------------------------------ images
def test_truncated_image_error_names_the_file_and_skip_corrupt_skips_it(tmp_path, caplog):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(tmp_path / cls / f"{k}.jpg")
    bad = tmp_path / "dog" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=r"dog/1\.jpg"):
        load_image(bad)
    ds = ImageFolder(tmp_path)
    with pytest.raises(DataError, match=r"dog/1\.jpg"):
        ds[3]
    from torchvision.transforms.functional import pil_to_tensor

    skipping = ImageFolder(tmp_path, pil_to_tensor, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="repro_shared.data"):
        assert skipping[3] is None
    assert "dog/1.jpg" in caplog.text and "skip_corrupt" not in caplog.text  # no advice to set what is set
    batch = SkipNoneCollate()([skipping[0], None, skipping[1]])
    assert batch[0].shape == (2, 3, 8, 8) and batch[1].tolist() == [0, 0]
    with pytest.raises(DataError, match="all 2 samples"):
        SkipNoneCollate()([None, None])


def test_missing_or_empty_image_folder_says_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.root=.*nope.*<class name>"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no images"):
        ImageFolder(tmp_path)


# ------------------------------------------------------------------------------------ guards
def test_check_finite_names_the_step_and_the_term():
    check_finite({"loss": torch.tensor(1.0), "loss_box": 2.0}, step=3)
    with pytest.raises(NonFiniteError, match=r"'loss_cls' = nan .* at step 17 \(epoch 2\)"):
        check_finite({"loss": torch.tensor(1.0), "loss_cls": torch.tensor([1.0, float("nan")])}, step=17, epoch=2)
    with pytest.raises(NonFiniteError, match="prediction 'logits' = inf"):
        check_finite({"logits": torch.tensor([float("inf")])}, step=0, what="prediction")
    with pytest.raises(NonFiniteError, match="matcher: input 'cost' holds 1 non-finite"):
        check_finite_inputs("matcher", cost=torch.tensor([[0.0, float("nan")]]))


# ------------------------------------------------------------------------------------ external files
class _Boom:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("BOOM_FILE", "/tmp/boom"),))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    flag = tmp_path / "ran"
    monkeypatch.setenv("BOOM_FILE", str(flag))
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": {"w": torch.ones(1)}, "payload": _Boom()}, f)
    with pytest.raises(UntrustedCheckpointError, match=r"evil\.pth holds a pickled posix\.system.*trust_checkpoint=true"):
        checkpoint.load_weights_file(path)
    assert not flag.exists()


def test_allowed_globals_and_the_explicit_trust_opt_in(tmp_path):
    import argparse

    path = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UntrustedCheckpointError, match="argparse.Namespace"):
        checkpoint.load_weights_file(path)
    assert torch.equal(checkpoint.load_weights_file(path, safe_globals=[argparse.Namespace])["w"], torch.ones(2))
    assert torch.equal(checkpoint.load_weights_file(path, trust=True)["w"], torch.ones(2))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load_weights_file(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_weights_file(tmp_path / "missing.pth")


def test_a_file_that_is_no_pickle_is_unreadable_not_untrusted(tmp_path):
    """A text file or random bytes is a corrupt file, not a refused type: no advice to trust it."""
    path = tmp_path / "notes.pth"
    path.write_bytes(b"garbage\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth cannot be read \(truncated, corrupt or not a torch file\)") as e:
        checkpoint.load_weights_file(path)
    assert not isinstance(e.value, UntrustedCheckpointError) and "trust_checkpoint" not in str(e.value)
    with open(path, "wb") as f:   # a plain pickle (not torch.save) of an object is still refused as untrusted
        pickle.dump({"w": torch.ones(1), "payload": _Boom()}, f)
    with pytest.raises(UntrustedCheckpointError, match="trust_checkpoint=true"):
        checkpoint.load_weights_file(path)


# ------------------------------------------------------------------------------------ required init
def test_required_init_stops_with_where_to_get_the_file(tmp_path):
    from omegaconf import OmegaConf

    init = OmegaConf.create({"required": True, "path": str(tmp_path / "r50.pth"), "source": "the FCOS release",
                             "converter": "bevformer-v2-convert src=... dst=..."})
    with pytest.raises(FileNotFoundError, match=r"init\.path=.*r50\.pth.*not a file.*FCOS release.*bevformer-v2-convert"):
        run.check_required_init(init)
    (tmp_path / "r50.pth").write_bytes(b"x")
    assert run.check_required_init(init) == tmp_path / "r50.pth"
    assert run.check_required_init(OmegaConf.create({"required": False, "path": None})) is None
    assert run.check_required_init(None) is None
    with pytest.raises(FileNotFoundError, match=r"^this experiment starts from pretrained weights, but init\.path is not "
                                                r"set\. Then pass init\.path=/path/to/weights \(or init\.required=false"):
        run.check_required_init({"required": True, "path": None})


def test_data_root_names_the_key_and_layout(tmp_path):
    from omegaconf import OmegaConf

    with pytest.raises(FileNotFoundError, match=r"^data.root is not set; pass data.root=/path/to/data with train2017/$"):
        run.data_root(OmegaConf.create({"root": None}), "train2017/")
    with pytest.raises(FileNotFoundError, match=r"^data.sources\[0\].root is not set"):
        run.data_root({"root": ""}, "x", key="data.sources[0].root")
    assert run.data_root(OmegaConf.create({"root": str(tmp_path)}), "x") == tmp_path
    assert run.data_root({"root": "~/coco"}, "x") == Path("~/coco").expanduser()


# ------------------------------------------------------------------------------------ momentum
def test_cosine_momentum_schedule_and_ema_update():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cosine_momentum(0, 0, 0.99)
    torch.manual_seed(0)
    online, target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target[1].running_mean.fill_(5.0)
    expected = [0.9 * t + 0.1 * o for t, o in zip(target.parameters(), online.parameters())]
    ema_update_(*momentum_pairs(online, target), 0.9)
    assert all(torch.equal(t, e) for t, e in zip(target.parameters(), expected))
    assert torch.equal(target[1].running_mean, torch.full((4,), 5.0))  # buffers are not EMA'd
    with pytest.raises(ValueError, match="differ"):
        momentum_pairs(online, nn.Linear(3, 4))
