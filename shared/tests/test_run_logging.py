"""Run setup from a Hydra config, metrics files, progress lines, demo summary."""

import json
import logging

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from repro_shared import logging as rlog
from repro_shared import run, summary


def test_setup_run_writes_config_and_metrics(tmp_path):
    cfg = OmegaConf.create({"seed": 3, "device": "cpu", "output_dir": str(tmp_path / "out"), "lr": 0.5,
                            "lr_scaled": "${lr}"})
    ctx = run.setup_run(cfg, name="test_run")
    assert ctx.out_dir == tmp_path / "out" and ctx.device.type == "cpu" and ctx.dist.world_size == 1
    saved = OmegaConf.load(ctx.out_dir / "config.yaml")
    assert saved.lr_scaled == 0.5 and saved.seed == 3  # resolved
    ctx.metrics.log({"loss": 1.5}, step=1)
    ctx.metrics.log({"loss": float("nan")}, step=2)
    ctx.metrics.close()
    rows = rlog.read_jsonl(ctx.out_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["loss"] == 1.5 and rows[1]["loss"] == "nan"
    path = run.write_metrics(ctx.out_dir, {"top1": 0.25, "n": 3})
    assert json.loads(path.read_text()) == {"n": 3, "top1": 0.25}
    assert run.pick_device("cpu").type == "cpu"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        run.pick_device("cuda")


def test_setup_run_uses_hydra_output_dir(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "train.yaml").write_text(f"seed: 1\ndevice: cpu\noutput_dir: {tmp_path / 'o'}\n")
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("train", overrides=["seed=4"])
    assert run.hydra_output_dir() is None  # compose() alone does not start a Hydra run
    ctx = run.setup_run(cfg)
    assert (ctx.out_dir / "config.yaml").read_text().startswith("seed: 4")


def test_progress_logs_throughput(caplog):
    log = logging.getLogger("progress_test")
    log.propagate = True
    with caplog.at_level(logging.INFO, logger="progress_test"):
        items = list(rlog.progress(range(5), desc="loop", log=log, every_s=0.0, items_per_step=4))
    assert items == [0, 1, 2, 3, 4]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and lines[-1].startswith("loop 5/5") and "items/s" in lines[-1] and "eta 0s" in lines[-1]


def test_summary_table(tmp_path):
    (tmp_path / "pkg_a").mkdir()
    run.write_metrics(tmp_path / "pkg_a", {"top1": 0.912345, "loss": 0.1})
    (tmp_path / "pkg_b").mkdir()
    table, ok = summary.summarize([tmp_path / "pkg_a", tmp_path / "pkg_b"])
    assert not ok
    assert "| pkg_a | ok | top1=0.9123, loss=0.1 |" in table.replace("loss=0.1, top1=0.9123", "top1=0.9123, loss=0.1")
    assert "| pkg_b | FAILED" in table
    assert summary.main([str(tmp_path / "pkg_a")]) == 0


def test_report_user_errors_one_line_exit_1(tmp_path, capsys, monkeypatch):
    import logging

    from omegaconf import OmegaConf

    from repro_shared.data import DataError
    from repro_shared.run import report_user_errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    log = logging.getLogger("repro_test_cli")
    handler = logging.FileHandler(tmp_path / "log.txt")
    log.addHandler(handler)
    try:
        @report_user_errors("repro_test_cli")
        def task(cfg):
            if cfg == "data":
                raise DataError("image x.jpg is truncated", "truncated")
            if cfg == "missing":
                return OmegaConf.create({"data": {"root": "???"}}).data.root
            if cfg == "bug":
                raise RuntimeError("a bug keeps its traceback")
            return 7

        assert task("ok") == 7
        with pytest.raises(SystemExit) as e:
            task("data")
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err.splitlines()[0] == "error: image x.jpg is truncated" and "Traceback" not in err
        with pytest.raises(SystemExit):
            task("missing")
        assert "error: data.root must be set: pass data.root=<value> on the command line" in capsys.readouterr().err
        with pytest.raises(RuntimeError, match="a bug"):
            task("bug")
        monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
        with pytest.raises(DataError):
            task("data")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert "DataError: image x.jpg is truncated" in (tmp_path / "log.txt").read_text()
