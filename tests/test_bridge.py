"""clem_bridge.fiji: #@ parsing (no JVM), and the scyjava + ij.jar backend in a subprocess (one JVM per process):
numpy ⇄ ImagePlus with calibration, running our Groovy and Jython scripts with outputs as arrays, errors."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clem_bridge import fiji, fiji_install, io, synthetic, transforms
from clem_bridge.errors import InputError
from clem_bridge.result import Registration
from fiji_utils import jvm_missing

SCRIPTS = sorted((fiji_install.scripts_dir() / "scripts" / "Plugins" / "CLEM").iterdir())


def test_parse_run_args_like_fiji():
    assert fiji.parse_run_args('name="Mr, Kraken",n=3,x=-1.5,flag=true,path="/a b/c.tif"') == \
        {"name": "Mr, Kraken", "n": 3, "x": -1.5, "flag": True, "path": "/a b/c.tif"}
    assert fiji.parse_run_args("") == {}
    with pytest.raises(InputError, match="key=value"):
        fiji.parse_run_args("oops")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_menu_script_declares_parseable_parameters(script):
    assert "_" in script.name  # Fiji puts only names with _ into the menu
    text = script.read_text()
    params = fiji.script_parameters(text)
    assert params and all(p["type"] and p["name"].isidentifier() for p in params)
    assert len(fiji.strip_parameters(text).splitlines()) == len(text.splitlines())
    assert "#@" not in fiji.strip_parameters(text)


def test_tokens_are_passwords_that_fiji_never_stores():
    tokens = [p for script in SCRIPTS for p in fiji.script_parameters(script.read_text()) if p["name"] == "token"]
    server_scripts = [s for s in SCRIPTS if "token" in s.read_text()]
    assert len(tokens) == len(server_scripts) >= 6  # Register, DeepCLEM, Fiducials, Landmarks, Batch, Status
    for p in tokens:
        assert p["attrs"].get("style") == "password" and p["attrs"].get("persist") is False, p


def test_fast_start_flags_yield_to_the_users_options():
    assert fiji.fast_start_options(["-Djava.awt.headless=true"]) == list(fiji.FAST_START)
    assert fiji.fast_start_options(["-XX:+UseG1GC", "-XX:-TieredCompilation"]) == []
    assert fiji.fast_start_options(["-XX:+UseParallelGC"]) == ["-XX:TieredStopAtLevel=1"]


def test_parameter_forms():
    text = ('#@ String (label="URL", value="http://x:1") url\n#@File(style="directory") out\n'
            '#@output ImagePlus warped\n#@ String (choices={"a", "b"}, value="b") pick\n#@script(name="x")\n')
    params = fiji.script_parameters(text)
    assert [(p["io"], p["type"], p["name"]) for p in params] == [
        ("input", "String", "url"), ("input", "File", "out"), ("output", "ImagePlus", "warped"),
        ("input", "String", "pick")]
    assert fiji.bind_inputs(params, {"out": "/tmp"}) == {"url": ("String", "http://x:1"), "out": ("File", "/tmp"),
                                                         "pick": ("String", "b")}
    with pytest.raises(InputError, match="no input parameter 'nope'"):
        fiji.bind_inputs(params, {"nope": 1})
    with pytest.raises(InputError, match="needs the parameter 'out'"):
        fiji.bind_inputs(params, {})


PROGRAM = textwrap.dedent('''
    import json, sys
    import numpy as np
    from clem_bridge import fiji
    from clem_bridge.errors import InputError
    from clem_bridge.schema import PixelSize
    d = json.loads(sys.argv[1])
    out = {"backend": fiji.start()}
    from scyjava import jimport
    out["jvm_args"] = [str(a) for a in jimport("java.lang.management.ManagementFactory").getRuntimeMXBean()
                       .getInputArguments()]
    arrays = {}
    rng = np.random.default_rng(0)
    for dt in ("uint8", "uint16", "float32"):
        a = (rng.random((2, 5, 7)) * 200).astype(dt)
        imp = fiji.to_imageplus(a, PixelSize(x=0.25, y=0.5, unit="um"), title=dt)
        back, ps = fiji.from_imageplus(imp)
        out[dt] = {"same": bool(np.array_equal(back, a)) and back.dtype == a.dtype,
                   "ps": [ps.x, ps.y, ps.unit], "xy": float(imp.getStack().getProcessor(2).getPixelValue(6, 1)),
                   "a": float(a[1, 1, 6]), "size": [imp.getWidth(), imp.getHeight(), imp.getNChannels()]}
    res = fiji.run_script("Apply_CLEM_Transform.groovy", {"image_file": d["lm"], "target_file": d["em"],
                          "transform_file": d["transform"], "out_file": d["out"]})
    arrays["warped"], ps = res["warped"]
    out["warped_ps"] = ps.x
    status = fiji.run_script("CLEM_Server_Status.py", 'server_url="%s"' % d["url"])
    out["status"] = status["status"]
    try:
        fiji.run_script("CLEM_Server_Status.py", {"server_url": d["dead"]})
    except InputError as e:
        out["dead"] = str(e)
    out["alive_after_error"] = fiji.run_script("CLEM_Server_Status.py", {"server_url": d["url"]})["status"] is not None
    np.savez(d["npz"], **arrays)
    print("RESULT " + json.dumps(out))
''')


@pytest.mark.jvm
@pytest.mark.skipif(jvm_missing() is not None, reason=str(jvm_missing()))
def test_scyjava_backend_conversions_and_scripts(tmp_path, server_url):
    pair = synthetic.make_pair((96, 112), seed=1, lm_pixel_ratio=1.3)
    lm = (pair.lm["fluorescence"] * 1000).astype(np.float32)
    io.write_tiff(tmp_path / "em.tif", (pair.em * 255).astype(np.uint8), pixel_size=pair.fixed_pixel_size)
    io.write_tiff(tmp_path / "lm.tif", lm, pixel_size=pair.moving_pixel_size)
    Registration(fixed_to_moving=pair.fixed_to_moving, fixed_shape=(96, 112), moving_shape=lm.shape,
                 method="truth").save_json(tmp_path / "t.json")
    with socket_closed_port() as dead:
        args = {"em": str(tmp_path / "em.tif"), "lm": str(tmp_path / "lm.tif"), "transform": str(tmp_path / "t.json"),
                "out": str(tmp_path / "w.tif"), "dead": dead, "npz": str(tmp_path / "a.npz"), "url": server_url}
        env = {k: v for k, v in os.environ.items() if k != "CLEM_BRIDGE_FIJI"}
        r = subprocess.run([sys.executable, "-c", PROGRAM, json.dumps(args)], capture_output=True, text=True,
                           timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert out["backend"] == "ij1"
    assert set(fiji.FAST_START) <= set(out["jvm_args"])
    for dt in ("uint8", "uint16", "float32"):
        o = out[dt]
        assert o["same"], dt
        assert o["ps"] == [0.25, 0.5, "µm"]  # ImageJ spells um as µm
        assert o["xy"] == pytest.approx(o["a"]) and o["size"] == [7, 5, 2]  # ImageJ (x, y) = numpy [y, x]
    ref = transforms.warp_image(lm, pair.fixed_to_moving, (96, 112))
    mask = transforms.valid_mask(pair.fixed_to_moving, (96, 112), lm.shape)
    warped = np.load(tmp_path / "a.npz")["warped"]
    assert np.sqrt(np.mean((warped - ref)[mask] ** 2)) < 1e-3 and np.all(warped[~mask] == 0)
    assert out["warped_ps"] == pytest.approx(pair.fixed_pixel_size.x, rel=1e-5)
    assert "device cpu" in out["status"]
    assert out["dead"].startswith("cannot reach the CLEM server") and "\n" not in out["dead"]
    assert out["alive_after_error"]


class socket_closed_port:
    """A URL on 127.0.0.1 where nothing listens."""

    def __enter__(self):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{s.getsockname()[1]}"

    def __exit__(self, *exc):
        return False


@pytest.mark.skipif(not os.environ.get("CLEM_BRIDGE_FIJI"),
                    reason="set CLEM_BRIDGE_FIJI=/path/to/Fiji.app (with PyImageJ installed) to test the PyImageJ backend")
def test_pyimagej_backend(tmp_path):
    code = ("from clem_bridge import fiji; import numpy as np; b = fiji.start(); a = np.arange(12, dtype=np.uint8)"
            ".reshape(3, 4); back, _ = fiji.from_imageplus(fiji.to_imageplus(a)); "
            "assert b == 'pyimagej' and np.array_equal(back, a); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
