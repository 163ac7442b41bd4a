"""Entry points end a user error (a path, a setting, a file, a diverging run) with one line, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro_shared.checkpoint import CheckpointError
from repro_shared.guards import NonFiniteError

from addp.cli import report_user_errors

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("exc", [ValueError("unknown x"), FileNotFoundError("no file"), CheckpointError("bad file"),
                                 NonFiniteError("non-finite loss at step 3")])
def test_a_user_error_is_one_line_and_exit_status_1(exc, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def task(cfg):
        raise exc

    with pytest.raises(SystemExit) as e:
        report_user_errors(task)(None)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {exc}\n") and "Traceback" not in err


def test_hydra_full_error_and_bugs_keep_the_traceback(monkeypatch):
    def task(cfg):
        raise ValueError("shown with its traceback")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="shown with its traceback"):
        report_user_errors(task)(None)
    monkeypatch.delenv("HYDRA_FULL_ERROR")

    def bug(cfg):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        report_user_errors(bug)(None)


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
        report_user_errors(run_fid)(cfg_of("device=cpu", f"+output_dir={tmp_path}/fid", name="fid"))
    err = capsys.readouterr().err
    assert err.startswith("error: fid.generated must be set: pass fid.generated=...") and "Traceback" not in err
