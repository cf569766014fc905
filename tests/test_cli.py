"""The core CLI (register, demo) run as a real subprocess: exit codes, files written, one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clem_bridge import transforms as T
from clem_bridge.io import read_image, write_tiff

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-c", "from clem_bridge.cli import main; main()", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_register_command(phantom):
    pair, em, lm, d = phantom
    extra = write_tiff(d / "extra.tif", np.round(pair.lm["chromatin"] * 255).astype(np.uint8))
    out = d / "out"
    r = cli("register", em, lm, "--reg-channel", 0, "--channels", "1,3", "--extra-channel", extra,
            "--seed", 3, "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("transform.json", "lm_warped.tif", "overlay.png", "mi_curve.png"):
        assert (out / name).is_file() and str(out / name) in r.stdout
    rec = json.loads((out / "transform.json").read_text())
    assert T.tre(rec["fixed_to_moving"], pair.fixed_to_moving, (128, 128)) < 1.0
    assert rec["params"]["seed"] == 3 and rec["params"]["channels"] == [1, 3]
    w = read_image(out / "lm_warped.tif").data
    np.testing.assert_allclose(w[0].astype(np.float32) / 65535, w[1] / 255.0, atol=0.01)   # same channel twice
    assert "%" in r.stderr                                   # progress bar on stderr


BAD_INPUT = [
    (["{em}", "{d}/missing.tif"], "error: file not found"),
    (["{em}", "{d}/notes.txt"], "error: cannot read notes.txt: not a TIFF, PNG or JPEG image"),
    (["{em}", "{d}/trunc.tif"], "error: cannot read trunc.tif: truncated or damaged TIFF"),
    (["{em}", "{lm}", "--reg-channel", "5"], "error: registration channel 5 does not exist"),
    (["{em}", "{lm}", "--channels", "a,b"], "error: --channels must be channel numbers"),
    (["{em}", "{lm}", "--preset", "slow"], "error: --preset must be fast or thesis"),
    (["{em}", "{lm}", "--device", "tpu"], "error: unknown device 'tpu'"),
]


def _expand(args, phantom):
    _, em, lm, d = phantom
    (d / "notes.txt").write_text("not an image")
    (d / "trunc.tif").write_bytes(lm.read_bytes()[:3000])
    return [a.format(em=em, lm=lm, d=d) for a in args] + ["--out", str(d / "bad")]


@pytest.mark.parametrize("args,msg", BAD_INPUT[1:2])   # every message: in process below
def test_register_bad_file_subprocess(phantom, args, msg):
    r = cli("register", *_expand(args, phantom))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(msg), r.stderr


@pytest.mark.parametrize("args,msg", BAD_INPUT)
def test_register_bad_input_is_one_line_exit_2(phantom, args, msg):
    """Same command in-process (a subprocess per case costs seconds of imports)."""
    from typer.testing import CliRunner

    from clem_bridge.cli import app

    r = CliRunner().invoke(app, ["register", *_expand(args, phantom)])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(msg), r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not (phantom[3] / "bad" / "transform.json").exists()


def test_register_requires_out(phantom):
    from typer.testing import CliRunner

    from clem_bridge.cli import app

    _, em, lm, _ = phantom
    r = CliRunner().invoke(app, ["register", str(em), str(lm)])
    assert r.exit_code == 2 and "--out" in r.stderr


def test_demo_command(tmp_path):
    r = cli("demo", "--size", 128, "--device", "cpu", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr[-2000:]
    truth = json.loads((tmp_path / "demo" / "phantom_truth.json").read_text())
    rec = json.loads((tmp_path / "demo" / "transform.json").read_text())
    err = T.tre(rec["fixed_to_moving"], truth["fixed_to_moving"], rec["fixed_shape"])
    assert err < 1.0
    reported = float(r.stdout.split("TRE vs the known affine:")[1].split()[0])
    assert reported == pytest.approx(err, abs=1e-3)
    assert (tmp_path / "demo" / "overlay.png").is_file()
