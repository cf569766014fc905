"""Fiji menu commands headless under a real JVM against a live clem-bridge server on 127.0.0.1.

Phantom pairs (256², DeepCLEM 160²) from clem_bridge.synthetic; parameters passed as Fiji's ``key=value`` string.
Checks: ImageJ-warped channels equal Python's warp of the server's matrix (RMS ≪ 1 grey level in the
valid region), transform files written in Fiji equal Python's and the server's artifacts, batch with
reuse, and every failure path (server down, wrong token, server-side error, missing endpoint) is one
``error:`` line with exit code 2 and no stack trace.
"""
import csv
import os
import re
import signal
import socket
import time

import httpx
import numpy as np
import pytest
import tifffile

from clem_bridge import export, io, synthetic, transforms
from clem_bridge.insilico import DEFAULT_MODEL
from clem_bridge.result import load_transform_json
from fiji_utils import fiji_app_and_server, jvm_missing, make_fiji_app, run_script
from server_utils import TOKEN

pytestmark = [pytest.mark.jvm, pytest.mark.slow,
              pytest.mark.skipif(jvm_missing() is not None, reason=str(jvm_missing()))]
CHANNELS = ("reflected", "fluorescence")
SIZE = (256, 256)


def write_pair(folder, name, pair):
    em = (pair.em * 255).round().astype(np.uint8)
    lm = np.stack([(pair.lm[k] * 60000).round().astype(np.uint16) for k in CHANNELS])
    io.write_tiff(folder / f"{name}_em.tif", em, pixel_size=pair.fixed_pixel_size)
    io.write_tiff(folder / f"{name}_lm.tif", lm, pixel_size=pair.moving_pixel_size)
    return em, lm


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    """The phantom pair, a Fiji.app and conftest's shared server (token ``TOKEN``)."""
    root = tmp_path_factory.mktemp("fiji_server")
    pair = synthetic.make_pair(SIZE, seed=3, lm_pixel_ratio=1.4)
    em, lm = write_pair(root, "a", pair)
    app, url = fiji_app_and_server(root, request)
    return {"root": root, "app": app, "url": url, "pair": pair, "em": em, "lm": lm}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_url():
    """A URL where nothing answers and that is not local (127.0.0.2 is loopback, but only 127.0.0.1,
    localhost and [::1] make the scripts start a server)."""
    return f"http://127.0.0.2:{free_port()}"


def assert_clean_failure(r, *needles):
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0]
    assert not re.search(r"Traceback|Exception|\tat [a-z]", out), out


def assert_warp_matches(warped_path, lm, f2m, em_shape, reference=None, min_valid=0.3):
    got = tifffile.imread(warped_path)
    got = got[None] if got.ndim == 2 else got
    mask = transforms.valid_mask(f2m, em_shape, lm.shape[1:])
    assert mask.mean() > min_valid
    for c in range(lm.shape[0]):
        ref = (transforms.warp_image(lm[c], f2m, em_shape) if reference is None else reference[c]).astype(float)
        rms = float(np.sqrt(np.mean((got[c].astype(float) - ref)[mask] ** 2)))
        assert rms < 0.05, f"channel {c}: RMS {rms} grey levels"
        assert np.all(got[c][~mask] == 0)


def test_register_script_end_to_end(env):
    root, out = env["root"], env["root"] / "out"
    r = run_script(env["app"], "Register_EM-LM.py",
                   f'em_file="{root / "a_em.tif"}",lm_file="{root / "a_lm.tif"}",reg_channel=0,channels="",'
                   f'server_url="{env["url"]}",token="{TOKEN}",preset="fast",out_dir="{out}"')
    assert r.returncode == 0, r.stdout + r.stderr
    reg = load_transform_json(out / "transform.json")
    f2m = reg.fixed_to_moving
    assert_warp_matches(out / "warped_channels.tif", env["lm"], f2m, env["em"].shape)
    assert io.read_image(out / "warped_channels.tif").pixel_size.x == pytest.approx(
        env["pair"].fixed_pixel_size.x, rel=1e-5)
    assert tifffile.imread(out / "composite.tif").shape == (3, *SIZE)  # EM + 2 LM channels
    assert io.read_image(out / "composite.tif").pixel_size.x == pytest.approx(env["pair"].fixed_pixel_size.x, rel=1e-5)

    # transform files written in Fiji == Python's export of the same record == the server's artifacts
    headers = {"Authorization": f"Bearer {TOKEN}"}
    job = [j for j in httpx.get(env["url"] + "/v1/jobs", headers=headers).json()["jobs"] if j["status"] == "done"][-1]
    result = httpx.get(f'{env["url"]}/v1/jobs/{job["id"]}/result', headers=headers).json()
    np.testing.assert_allclose(result["fixed_to_moving"], f2m, atol=1e-12)
    py = root / "py"
    reg.fixed_pixel_size, reg.moving_pixel_size = env["pair"].fixed_pixel_size, env["pair"].moving_pixel_size
    export.write_all(reg, py, moving_file="a_lm.tif")
    ps = dict(fixed_pixel_size=reg.fixed_pixel_size, moving_pixel_size=reg.moving_pixel_size)
    for name in export.FILE_NAMES.values():
        assert name in job["artifacts"]
        (root / f"server_{name}").write_bytes(
            httpx.get(f'{env["url"]}/v1/jobs/{job["id"]}/artifacts/{name}', headers=headers).content)
        for other in (py / name, root / f"server_{name}"):
            np.testing.assert_allclose(export.read_transform(out / name, **ps), export.read_transform(other, **ps),
                                       atol=1e-9, err_msg=name)
        np.testing.assert_allclose(export.read_transform(out / name, **ps), f2m, atol=1e-9)
    # the server's own (Python) warp of the registration channel == Fiji's warp of it
    server_warp = root / "server_lm_warped.tif"
    server_warp.write_bytes(httpx.get(f'{env["url"]}/v1/jobs/{job["id"]}/artifacts/lm_warped.tif',
                                      headers=headers).content)
    assert_warp_matches(out / "warped_channels.tif", env["lm"][:1], f2m, env["em"].shape,
                        reference=tifffile.imread(server_warp).reshape(1, *env["em"].shape))
    fiji_rows, py_rows = (export.read_bigwarp_landmarks(p / "bigwarp_landmarks.csv") for p in (out, py))
    np.testing.assert_allclose(fiji_rows, py_rows, rtol=1e-12, atol=1e-12)


def test_status_script(env):
    r = run_script(env["app"], "CLEM_Server_Status.py", f'server_url="{env["url"]}"')
    assert r.returncode == 0, r.stderr
    assert re.search(r"version \S+, device cpu, queue \d+ queued / \d+ running", r.stdout), r.stdout


def test_batch_folder_with_reuse(env, tmp_path):
    pair = env["pair"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_em.tif", "a_lm.tif"):
        (folder / name).write_bytes((env["root"] / name).read_bytes())
    same_affine = synthetic.make_pair(SIZE, seed=5, fixed_to_moving=pair.fixed_to_moving,
                                      moving_shape=env["lm"].shape[1:], lm_pixel_ratio=1.4)
    _, lm_b = write_pair(folder, "b", same_affine)
    (folder / "lonely_em.tif").write_bytes((env["root"] / "a_em.tif").read_bytes())
    out = tmp_path / "out"
    r = run_script(env["app"], "Batch_Register_Folder.py",
                   f'in_dir="{folder}",em_pattern="*_em.tif",lm_pattern="*_lm.tif",reg_channel=0,channels="1",'
                   f'reuse=true,server_url="{env["url"]}",token="{TOKEN}",preset="fast",out_dir="{out}"')
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lonely_em.tif has no partner" in r.stdout
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(x["pair"], x["status"], x["source"]) for x in rows] == [("a", "ok", "registered"), ("b", "ok", "reused")]
    assert float(rows[0]["mi"]) > 0 and rows[1]["mi"] == ""
    f2m_a = load_transform_json(out / "a" / "transform.json").fixed_to_moving
    np.testing.assert_allclose(load_transform_json(out / "b" / "transform.json").fixed_to_moving, f2m_a)
    assert_warp_matches(out / "b" / "warped_channels.tif", lm_b[1:2], f2m_a, SIZE)


@pytest.mark.parametrize("script", ["Register_EM-LM.py", "Batch_Register_Folder.py", "CLEM_Server_Status.py",
                                    "DeepCLEM_Correlate.py"])
def test_server_down_is_one_line_and_exit_2(env, script):
    root = env["root"]
    args = {"Register_EM-LM.py": f'em_file="{root / "a_em.tif"}",lm_file="{root / "a_lm.tif"}",out_dir="{root / "x"}"',
            "Batch_Register_Folder.py": f'in_dir="{root}",out_dir="{root / "x"}"',
            "CLEM_Server_Status.py": "",
            "DeepCLEM_Correlate.py": f'em_file="{root / "a_em.tif"}",chromatin_file="{root / "a_lm.tif"}",'
                                     f'chromatin_channel=0,out_dir="{root / "x"}"'}[script]
    r = run_script(env["app"], script, f'{args},server_url="{dead_url()}"'.lstrip(","))
    assert_clean_failure(r, "cannot reach the CLEM server", "clem-bridge serve")


def test_wrong_token_and_server_side_error(env, tmp_path):
    root = env["root"]
    base = f'em_file="{root / "a_em.tif"}",lm_file="{root / "a_lm.tif"}",server_url="{env["url"]}",out_dir="{tmp_path}"'
    assert_clean_failure(run_script(env["app"], "Register_EM-LM.py", base + ',token="wrong"'), "rejected the token")
    io.write_tiff(tmp_path / "tiny.tif", np.arange(64, dtype=np.uint8).reshape(8, 8))
    r = run_script(env["app"], "Register_EM-LM.py",
                   f'em_file="{tmp_path / "tiny.tif"}",lm_file="{root / "a_lm.tif"}",server_url="{env["url"]}",'
                   f'token="{TOKEN}",out_dir="{tmp_path}"')
    assert_clean_failure(r, "HTTP 422")
    assert_clean_failure(run_script(env["app"], "Register_EM-LM.py",
                                    base.replace("a_em.tif", "missing.tif") + f',token="{TOKEN}"'),
                         "EM image file not found")


def test_deepclem_says_when_the_server_lacks_the_model(env, tmp_path):
    root = env["root"]
    r = run_script(env["app"], "DeepCLEM_Correlate.py",
                   f'em_file="{root / "a_em.tif"}",chromatin_file="{root / "a_lm.tif"}",chromatin_channel=0,'
                   'model="no-such-model",'
                   f'server_url="{env["url"]}",token="{TOKEN}",out_dir="{tmp_path}"')
    assert_clean_failure(r, "lacks the DeepCLEM chromatin model 'no-such-model'")


def test_deepclem_end_to_end(env, tmp_path):
    from clem_bridge.errors import InputError
    from clem_bridge.insilico.predict import resolve_model
    try:
        resolve_model(DEFAULT_MODEL)
    except InputError as e:
        pytest.skip(f"the chromatin model is not in models/ ({e})")
    pair = synthetic.make_pair((160, 160), seed=3, lm_pixel_ratio=1.4)   # small: the model runs on the server
    _, lm = write_pair(tmp_path, "s", pair)
    # RGB as DeepCLEM's example: chromatin in blue, red and green blank (a blank channel cannot be correlated,
    # so the run only succeeds when the command takes blue by default, like the CLI)
    rgb = np.zeros(pair.lm["chromatin"].shape + (3,), np.uint8)
    rgb[..., 2] = (pair.lm["chromatin"] * 255).round()
    tifffile.imwrite(tmp_path / "chromatin.tif", rgb, photometric="rgb")
    r = run_script(env["app"], "DeepCLEM_Correlate.py",
                   f'em_file="{tmp_path / "s_em.tif"}",chromatin_file="{tmp_path / "chromatin.tif"}",'
                   f'lm_file="{tmp_path / "s_lm.tif"}",channels="1",server_url="{env["url"]}",token="{TOKEN}",'
                   f'out_dir="{tmp_path / "out"}"')
    # the correlation's quality is test_correlate's; here: a finished run (exit 3 = status failed, files written)
    assert r.returncode == 0 or (r.returncode == 3 and "DeepCLEM correlation: status failed" in r.stdout), \
        r.stdout + r.stderr
    rec = load_transform_json(tmp_path / "out" / "transform.json")
    assert rec.params.get("model") == DEFAULT_MODEL
    # the error estimate is logged whenever the result has one
    assert ("DeepCLEM: expected error" in r.stdout) == ("expected_error_px" in rec.metrics), r.stdout
    assert_warp_matches(tmp_path / "out" / "warped_channels.tif", lm[1:2], rec.fixed_to_moving, (160, 160),
                        min_valid=0.01)  # equality of the warps, whatever the correlation found


def test_register_script_logs_the_servers_warnings(env):
    """An LM that shares nothing with the EM still finishes, but the Fiji log says the result is doubtful."""
    root = env["root"] / "unrelated"
    root.mkdir()
    other = synthetic.make_pair(SIZE, seed=99)
    io.write_tiff(root / "em.tif", (env["pair"].em * 255).round().astype(np.uint8))
    io.write_tiff(root / "lm.tif", (other.lm["fluorescence"] * 60000).round().astype(np.uint16))
    r = run_script(env["app"], "Register_EM-LM.py",
                   f'em_file="{root / "em.tif"}",lm_file="{root / "lm.tif"}",reg_channel=0,channels="",'
                   f'server_url="{env["url"]}",token="{TOKEN}",preset="fast",out_dir="{root / "out"}"')
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: low mutual information" in r.stdout and "CLEM registration: status uncertain" in r.stdout
    assert load_transform_json(root / "out" / "transform.json").warnings


def test_local_url_without_a_recorded_server_is_one_clear_line(env):
    (env["app"] / "jars" / "Lib" / "clem_bridge_server.txt").unlink(missing_ok=True)
    url = f"http://localhost:{free_port()}"
    assert_clean_failure(run_script(env["app"], "CLEM_Server_Status.py", f'server_url="{url}"'),
                         f"cannot reach the CLEM server at {url} (connection refused), and no clem-bridge executable "
                         "is recorded in", "clem_bridge_server.txt")


def test_local_url_starts_the_recorded_server(tmp_path):
    """Nothing answers at a local URL: the command starts the clem-bridge that install-fiji recorded next to
    the scripts on that port, waits for /v1/health and says so; the next command finds it running."""
    app = make_fiji_app(tmp_path)
    config = (app / "jars" / "Lib" / "clem_bridge_server.txt").read_text().splitlines()
    exe = " ".join(w for w in config if w.strip() and not w.startswith("#"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = {"HOME": str(tmp_path)}  # the started server keeps its jobs in ~/.clem-bridge/server
    r = run_script(app, "CLEM_Server_Status.py", f'server_url="{url}"', env=home)
    started = re.search(r"CLEM: started clem-bridge serve \(pid (\d+)\) at " + re.escape(url), r.stdout)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"CLEM: no server answers at {url}; starting {exe} serve --host 127.0.0.1 --port {port}" in r.stdout
        assert started and re.search(r"CLEM server \S+: status ok, version \S+, device cpu", r.stdout), r.stdout
        assert httpx.get(url + "/v1/health").json()["status"] == "ok"
        assert (tmp_path / ".clem-bridge" / "server").is_dir()
        again = run_script(app, "CLEM_Server_Status.py", f'server_url="{url}"', env=home)
        assert again.returncode == 0 and "starting" not in again.stdout and "status ok" in again.stdout
    finally:
        if started:
            pid = int(started.group(1))
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30  # clean-up only: let it release tmp_path before pytest removes it
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.1)
