"""addp-train end to end on tiny sizes: the chain, its cache, NaN stop, bad inputs, generate / convert entry points."""

import json

import pytest
import torch

from addp.cli import run_convert, run_generate, run_train
from repro_shared.checkpoint import find_latest_checkpoint, verify_checkpoint
from repro_shared.data import DataError
from repro_shared.guards import NonFiniteError

from helpers import SMALL, cfg_of


def test_chain_writes_metrics_grids_and_caches_stages(chain):
    root, cache, m = chain
    for k in ("tokenizer_rec", "teacher_loss", "addp_loss", "val_ce_addp", "val_ce_addp_shuffled_images",
              "val_ce_marginal", "probe_top1_addp", "probe_top1_random_init_std",
              "probe_top1_random_init", "tiny_fid_addp", "tiny_fid_random_tokens", "tiny_fid_vq_recon"):
        assert k in m and m[k] == m[k], k
    run1 = root / "run1"
    assert json.loads((run1 / "metrics.json").read_text())["addp_loss"] == pytest.approx(m["addp_loss"])
    assert (run1 / "samples.png").stat().st_size > 1000 and (run1 / "compare.png").stat().st_size > 1000
    stages = json.loads((run1 / "stages.json").read_text())
    for path in stages.values():
        verify_checkpoint(path)
    rows = [json.loads(line) for line in (run1 / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} >= {"tokenizer", "teacher", "addp"}
    # a second run in another folder loads every stage from the cache instead of training
    mtimes = {p: p.stat().st_mtime_ns for p in cache.rglob("final.pt")}
    m2 = run_train(cfg_of(*SMALL, f"cache_dir={cache}", f"+output_dir={root}/run2", "eval.enabled=false"))
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("final.pt")} == mtimes
    assert m2["addp_loss"] == pytest.approx(m["addp_loss"])
    log = (root / "run2" / "log.txt").read_text()
    assert all(f"{s}: cached in" in log for s in ("tokenizer", "teacher", "addp"))
    assert not (root / "run2" / "metrics.jsonl").read_text().strip()  # nothing was trained


def test_generate_and_convert_entry_points(chain, tmp_path):
    from official_layout import official_addp

    from addp.weights import load_addp, load_teacher, load_tokenizer

    root, _, _ = chain
    res = run_generate(cfg_of(f"run_dir={root}/run1", "generate.num_samples=3", "generate.batch_size=2",
                              "generate.steps=2", f"+output_dir={tmp_path}/gen", name="generate"))
    assert sorted(p.name for p in (tmp_path / "gen" / "images").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert res["generated_here"] == 3
    again = run_generate(cfg_of(f"run_dir={root}/run1", "generate.num_samples=4", "generate.steps=2",
                                f"+output_dir={tmp_path}/gen", name="generate"))
    assert again["generated_here"] == 1  # existing samples are kept: an interrupted run continues
    # an official-layout ADDP file -> our files
    stages = json.loads((root / "run1" / "stages.json").read_text())
    tok, teacher = load_tokenizer(stages["tokenizer"]), load_teacher(stages["teacher"], variant="mage_cpu_tiny",
                                                                        codebook_size=64, num_tokens=64)
    model = load_addp(stages["addp"], variant="addp_vit_tiny", codebook_size=64)
    torch.save({"model": official_addp(model, tok, teacher, patch=4)}, tmp_path / "official.pth")
    written = run_convert(cfg_of("convert.kind=addp", f"convert.src={tmp_path}/official.pth", "model.variant=addp_vit_tiny",
                                 "teacher.variant=mage_cpu_tiny", "tokenizer.preset=tiny_f4_64", "model.dropout=0.0",
                                 f"+output_dir={tmp_path}/conv", name="convert"))
    assert set(written) == {"addp", "tokenizer", "teacher", "vit_backbone"}
    back = load_addp(written["addp"], variant="x", codebook_size=64)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))


def test_nan_stops_at_the_first_non_finite_prediction_and_keeps_the_last_checkpoint(chain, tmp_path, monkeypatch):
    from addp.models import addp as addp_module

    _, cache, _ = chain
    real_forward = addp_module.ADDP.forward
    calls = {"n": 0}

    def poisoned(self, x, ids, mask):
        out = real_forward(self, x, ids, mask)
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(addp_module.ADDP, "forward", poisoned)
    with pytest.raises(NonFiniteError, match=r"non-finite (loss term 'loss'|prediction 'logits').* at step 5 \(epoch 0\)"):
        run_train(cfg_of(*SMALL, f"cache_dir={cache}", "train.label_smoothing=0.11", f"+output_dir={tmp_path}/nan",
                         "eval.enabled=false"))
    addp_dirs = [d for d in cache.iterdir() if d.name.startswith("addp-") and not (d / "final.pt").exists()]
    assert len(addp_dirs) == 1
    latest = find_latest_checkpoint(addp_dirs[0] / "checkpoints")
    assert latest is not None and latest.name == "ckpt_000000004.pt"
    verify_checkpoint(latest)


def test_bad_inputs_give_one_clear_error(chain, tmp_path):
    _, cache, _ = chain
    base = [*SMALL, f"cache_dir={cache}", f"+output_dir={tmp_path}/bad"]
    with pytest.raises(ValueError, match=r"has 20 samples, fewer than one batch of 32.*tokenizer.train.batch_size"):
        run_train(cfg_of(*base, "data.limit=20"))
    with pytest.raises(ValueError, match=r"has 96 samples, fewer than one batch of 128.*lower train.batch_size"):
        run_train(cfg_of(*base, "train.batch_size=128"))
    with pytest.raises(FileNotFoundError, match=r"tokenizer.init.path is not set.*vqgan_jax_strongaug"):
        run_train(cfg_of(*base, "tokenizer.init.required=true", "tokenizer.init.source=github.com/LTH14/mage",
                         "tokenizer.init.converter='the official vqgan_jax_strongaug.ckpt loads as is'"))
    with pytest.raises(FileNotFoundError, match=r"teacher.init.path='/missing/mage.pth' does not exist"):
        run_train(cfg_of(*base, "teacher.init.path=/missing/mage.pth"))
    with pytest.raises(ValueError, match=r"unknown ADDP variant 'addp_vit_g'; known: addp_vit_base_patch16"):
        run_train(cfg_of(*base, "model.variant=addp_vit_g"))
    with pytest.raises(ValueError, match=r"expects 32x32 images but data.img_size=48"):
        run_train(cfg_of(*base, "data.img_size=48"))
    with pytest.raises(FileNotFoundError, match=r"data.root=.*/nowhere.*expected layout: <root>/<class name>"):
        run_train(cfg_of(*base, "data.name=imagenet", f"data.root={tmp_path}/nowhere"))
    with pytest.raises(ValueError, match="unknown data.name 'cifar'; known: digits, imagenet"):
        run_train(cfg_of(*base, "data.name=cifar"))


def _image_folder(root, n_good=40, corrupt=True):
    from PIL import Image

    cls = root / "train" / "n0001"
    cls.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n_good):
        arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(cls / f"img_{i:03d}.JPEG", quality=90)
    if corrupt:
        data = (cls / "img_000.JPEG").read_bytes()
        (cls / "img_bad.JPEG").write_bytes(data[: len(data) // 3])
    return root


def test_unreadable_image_is_named_or_skipped(tmp_path, caplog):
    root = _image_folder(tmp_path / "imnet")
    base = ["device=cpu", "data.name=imagenet", f"data.root={root}", "tokenizer.train.epochs=1",
            "tokenizer.train.batch_size=41", f"cache_dir={tmp_path}/cache", f"+output_dir={tmp_path}/run"]
    with pytest.raises(DataError, match=r"cannot read image .*img_bad.JPEG"):
        run_train(cfg_of(*base))
    # skip_corrupt: a warning names the file and training goes on (the tokenizer stage; the teacher needs a MAGE file)
    with pytest.raises(ValueError, match="training a token predictor is only implemented for the embedded data"):
        run_train(cfg_of(*base, "data.skip_corrupt=true", "tokenizer.train.batch_size=16"))
    assert "img_bad.JPEG" in caplog.text
    assert any(p.name == "final.pt" for p in (tmp_path / "cache").rglob("final.pt"))


def test_interrupted_stage_resumes_exactly(chain, tmp_path, monkeypatch):
    """In-process version of tests/test_resume.py (which kills a process with SIGKILL, marked slow): the ADDP
    stage stopped after step 7 (checkpoint at step 4, mid-epoch) and run again equals the uninterrupted run."""
    import shutil

    from addp.models import addp as addp_module

    _, cache, _ = chain
    for name in ("u", "k"):
        shutil.copytree(cache, tmp_path / name, ignore=lambda d, names: [n for n in names if n.startswith(("addp-", "feat"))])
    args = [*SMALL, "train.label_smoothing=0.12", "train.log_every=1", "eval.enabled=false"]
    run_train(cfg_of(*args, f"cache_dir={tmp_path}/u", f"+output_dir={tmp_path}/run_u"))
    real_forward = addp_module.ADDP.forward
    calls = {"n": 0}

    def interrupted(self, *a):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated kill after step 7")
        return real_forward(self, *a)

    monkeypatch.setattr(addp_module.ADDP, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train(cfg_of(*args, f"cache_dir={tmp_path}/k", f"+output_dir={tmp_path}/run_k"))
    monkeypatch.setattr(addp_module.ADDP, "forward", real_forward)
    run_train(cfg_of(*args, f"cache_dir={tmp_path}/k", f"+output_dir={tmp_path}/run_k"))
    (fu,), (fk,) = (list((tmp_path / n).glob("addp-*/final.pt")) for n in ("u", "k"))
    wu, wk = (torch.load(f, weights_only=True)["model"] for f in (fu, fk))
    assert max((wu[k] - wk[k]).abs().max().item() for k in wu) == 0.0

    def rows(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r for r in map(json.loads, lines) if r["stage"] == "addp"}

    ru, rk = rows("run_u"), rows("run_k")
    assert sorted(ru) == sorted(rk) == list(range(1, 13))
    assert all(ru[s]["loss"] == rk[s]["loss"] and ru[s]["lr"] == rk[s]["lr"] for s in range(5, 13))
