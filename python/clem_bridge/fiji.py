"""Bridge to ImageJ from Python: numpy ⇄ ImagePlus (with calibration), run our Fiji scripts, get arrays back.

Backends (one JVM per process, started by :func:`start`):

* ``"ij1"`` — scyjava + ImageJ 1 ``ij.jar`` (+ Jython/Groovy jars for the scripts), no Maven,
  no JDK download (``fetch="never"``).  Scripts run like Fiji runs them: the ``#@`` parameter lines
  are parsed, their values bound, the lines blanked and the rest executed by Jython or Groovy.
* ``"pyimagej"`` — ``imagej.init(<Fiji.app>)`` when a Fiji installation is given (or
  ``CLEM_BRIDGE_FIJI`` is set); scripts then run through Fiji's own script service.

Both set the system property ``clem_bridge.raise=true``: a script error raises :class:`InputError` here
and never ends the JVM (the scripts' exit codes are for Fiji's headless command line only).

The ``#@`` parsing here (:func:`script_parameters`, :func:`parse_run_args`) is also what the tests'
headless harness uses to run the scripts as Fiji would.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import InputError
from .fiji_install import scripts_dir
from .schema import PixelSize

JARS = {"ij": "/usr/share/java/ij.jar", "jython": "/usr/share/java/jython.jar",
        "groovy": "/usr/share/java/groovy-all.jar"}
# JVM start-up flags of the ij1 backend (C1 compiler only, serial GC): our scripts are short, and these halve
# the JVM's start-up and first-script CPU time (benchmarks/bench_fiji_warp.py run with them, 2048² Groovy warp on
# 2 busy cores: first call 1.3-2.3 s → 0.4 s, repeated calls 0.19-0.23 → 0.34 s).  Each is left out when an
# option of its kind (the pattern) was set beforehand with ``scyjava.config.add_option``.
FAST_START = {"-XX:TieredStopAtLevel=1": r"Tiered", "-XX:+UseSerialGC": r"-XX:\+Use\w+GC\b"}
_state: dict[str, Any] = {}


# --- SciJava #@ parameters ----------------------------------------------------------------

def _split_top(text: str) -> list[str]:
    """Split at commas outside quotes and braces."""
    parts, cur, depth, quote = [], "", 0, False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quote = not quote
        elif not quote and ch in "{(":
            depth += 1
        elif not quote and ch in "})":
            depth -= 1
        if ch == "," and not quote and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def _value(text: str) -> Any:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] == '"':
        return t[1:-1].replace('\\"', '"')
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def parse_run_args(text: str) -> dict[str, Any]:
    """Fiji's ``--run script 'key="text",n=3,flag=true'`` argument string → dict."""
    out = {}
    for part in _split_top(text or ""):
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"script argument {part.strip()!r} is not key=value")
        out[key.strip()] = _value(val)
    return out


def script_parameters(text: str) -> list[dict[str, Any]]:
    """The ``#@`` parameters of a script: ``[{"io", "type", "name", "attrs"}]`` (``#@script`` skipped)."""
    params = []
    for line in text.splitlines():
        if not line.startswith("#@"):
            continue
        body = line[2:]
        attrs = {}
        if "(" in body and ")" in body:
            inner = body[body.index("(") + 1:body.rindex(")")]
            body = body[:body.index("(")] + " " + body[body.rindex(")") + 1:]
            attrs = {k.strip(): _value(v) for k, _, v in (p.partition("=") for p in _split_top(inner))}
        tokens = body.split()
        if not tokens or tokens[0].lower() == "script":
            continue
        io = tokens.pop(0).lower() if tokens[0].lower() in ("input", "output", "both") else "input"
        if len(tokens) < 2:
            raise InputError(f"cannot parse script parameter line {line!r}")
        params.append({"io": io, "type": tokens[0], "name": tokens[1], "attrs": attrs})
    return params


def strip_parameters(text: str) -> str:
    """The script as the language engine sees it: ``#@`` lines blanked (line numbers kept)."""
    return re.sub(r"(?m)^#@.*$", "", text)


def bind_inputs(params: list[dict[str, Any]], given: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """``{name: (type, value)}`` for every input: the given value, else the ``value=`` default."""
    unknown = set(given) - {p["name"] for p in params if p["io"] != "output"}
    if unknown:
        raise InputError(f"the script has no input parameter {sorted(unknown)[0]!r}")
    out = {}
    for p in params:
        if p["io"] == "output":
            continue
        v = given.get(p["name"], p["attrs"].get("value"))
        if v is None and p["attrs"].get("required", True) is not False and p["type"] in ("File",):
            raise InputError(f"the script needs the parameter {p['name']!r} ({p['type']})")
        out[p["name"]] = (p["type"], v)
    return out


# --- JVM and conversions --------------------------------------------------------------------

def start(fiji_dir: Optional[str] = None) -> str:
    """Start the JVM once: PyImageJ on ``fiji_dir`` (or ``$CLEM_BRIDGE_FIJI``) if given, else scyjava + ij.jar."""
    if "backend" in _state:
        return _state["backend"]
    import scyjava
    fiji_dir = fiji_dir or os.environ.get("CLEM_BRIDGE_FIJI")
    if fiji_dir:
        try:
            import imagej
        except ImportError:
            raise InputError("a Fiji.app was given but PyImageJ is not installed (pip install pyimagej)") from None
        _state["ij"] = imagej.init(str(fiji_dir), mode="headless")
        scyjava.jimport("java.lang.System").setProperty("clem_bridge.raise", "true")  # errors raise, never exit
        _state["fiji_dir"] = str(fiji_dir)
        _state["backend"] = "pyimagej"
        return "pyimagej"
    missing = [p for p in JARS.values() if not Path(p).is_file()]
    if missing:
        raise InputError(f"ImageJ 1 / Jython / Groovy not found ({missing[0]}); install the Debian packages "
                         "imagej, jython and groovy, or give a Fiji.app")
    scyjava.config.set_java_constraints(fetch="never")
    scyjava.config.add_classpath(*JARS.values())
    scyjava.config.add_option("-Djava.awt.headless=true")
    scyjava.config.add_options(fast_start_options(scyjava.config.get_options()))
    scyjava.start_jvm()
    scyjava.jimport("java.lang.System").setProperty("clem_bridge.raise", "true")
    _state["backend"] = "ij1"
    return "ij1"


def fast_start_options(given: list[str]) -> list[str]:
    """The :data:`FAST_START` flags that do not clash with the JVM options already ``given``."""
    text = " ".join(given)
    return [o for o, same_kind in FAST_START.items() if not re.search(same_kind, text)]


def to_imageplus(array, pixel_size: Optional[PixelSize] = None, title: str = "image"):
    """numpy ``(H, W)`` or ``(C, H, W)`` → ImagePlus (uint8/uint16 kept, anything else float32) with calibration."""
    import jpype
    from scyjava import jimport
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or 0 in a.shape:
        raise InputError(f"expected a non-empty (H, W) or (C, H, W) array, got shape {a.shape}")
    ImagePlus, ImageStack = jimport("ij.ImagePlus"), jimport("ij.ImageStack")
    Byte, Short, Float = (jimport(f"ij.process.{n}Processor") for n in ("Byte", "Short", "Float"))
    c, h, w = a.shape
    stack = ImageStack(w, h)
    for k in range(c):
        ch = np.ascontiguousarray(a[k])
        if ch.dtype == np.uint8:
            ip = Byte(w, h, jpype.JArray(jpype.JByte)(ch.view(np.int8).ravel()))
        elif ch.dtype == np.uint16:
            ip = Short(w, h, jpype.JArray(jpype.JShort)(ch.view(np.int16).ravel()), None)
        else:
            ip = Float(w, h, jpype.JArray(jpype.JFloat)(ch.astype(np.float32).ravel()))
        stack.addSlice(f"C{k}", ip)
    imp = ImagePlus(title, stack)
    if c > 1:
        imp.setDimensions(c, 1, 1)
    if pixel_size is not None:
        cal = imp.getCalibration()
        cal.pixelWidth, cal.pixelHeight = float(pixel_size.x), float(pixel_size.y)
        cal.setUnit(pixel_size.unit)
    return imp


def from_imageplus(imp) -> tuple[np.ndarray, Optional[PixelSize]]:
    """ImagePlus → (``(H, W)`` or ``(C, H, W)`` array, PixelSize or None when uncalibrated)."""
    w, h = int(imp.getWidth()), int(imp.getHeight())
    stack = imp.getStack()
    chans = []
    for k in range(int(stack.getSize())):
        ip = stack.getProcessor(k + 1)
        px = np.array(ip.getPixels())
        if ip.getBitDepth() == 8:
            px = px.view(np.uint8)
        elif ip.getBitDepth() == 16:
            px = px.view(np.uint16)
        elif ip.getBitDepth() == 24:
            rgb = px.astype(np.int64)
            chans.extend(((rgb >> s) & 255).astype(np.uint8).reshape(h, w) for s in (16, 8, 0))
            continue
        chans.append(px.reshape(h, w))
    arr = chans[0] if len(chans) == 1 else np.stack(chans)
    cal = imp.getCalibration()
    ps = (PixelSize(x=float(cal.pixelWidth), y=float(cal.pixelHeight), unit=str(cal.getUnit()))
          if cal.scaled() else None)
    return arr, ps


def _java_value(type_: str, value):
    from scyjava import jimport
    if value is None:
        return None
    if type_ == "File":
        return jimport("java.io.File")(str(value))
    if type_ in ("Integer", "int", "Long", "long"):
        return int(value)
    if type_ in ("Double", "double", "Float", "float"):
        return float(value)
    if type_ in ("Boolean", "boolean"):
        return bool(value)
    if type_ == "String":
        return str(value)
    return value


def script_path(name: str) -> Path:
    """A menu command of ours by file name (e.g. ``Apply_CLEM_Transform.groovy``)."""
    p = scripts_dir() / "scripts" / "Plugins" / "CLEM" / name
    if not p.is_file():
        raise InputError(f"no clem-bridge Fiji script named {name!r}")
    return p


def run_script(script, args: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """Run one of our scripts (path or file name) with inputs; returns its ``#@output`` values.

    ImagePlus outputs come back as ``(array, PixelSize|None)``; numpy inputs for ImagePlus
    parameters are converted with :func:`to_imageplus`.  Script errors raise :class:`InputError`.
    """
    path = Path(script) if Path(script).is_file() else script_path(str(script))
    given = parse_run_args(args) if isinstance(args, str) else dict(args or {})
    text = path.read_text()
    params = script_parameters(text)
    backend = start()
    bound = bind_inputs(params, given)
    inputs = {n: (to_imageplus(v) if t == "ImagePlus" and isinstance(v, np.ndarray) else _java_value(t, v))
              for n, (t, v) in bound.items()}
    outputs = [p["name"] for p in params if p["io"] in ("output", "both")]
    if backend == "pyimagej":
        from scyjava import to_java
        if not (Path(_state["fiji_dir"]) / "jars" / "Lib" / "clem_bridge_fiji.py").is_file():
            raise InputError(f"clem-bridge is not installed in {_state['fiji_dir']}; run: clem-bridge install-fiji "
                             f"{_state['fiji_dir']}")
        import jpype
        try:
            module = _state["ij"].script().run(str(path), text, True, to_java(inputs)).get()
        except jpype.JException as e:
            raise InputError(_script_message(e)) from None
        values = {n: module.getOutput(n) for n in outputs}
    else:
        values = _run_ij1(path, strip_parameters(text), inputs, outputs)
    return {n: _to_python(v) for n, v in values.items()}


def _to_python(v):
    from scyjava import jimport
    if v is not None and isinstance(v, jimport("ij.ImagePlus")):
        return from_imageplus(v)
    return str(v) if v is not None and not isinstance(v, (int, float, bool, str)) else v


def _run_ij1(path: Path, code: str, inputs: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    from scyjava import jimport
    import jpype
    lib = str(scripts_dir() / "jars" / "Lib")
    System = jimport("java.lang.System")
    if System.getProperty("imagej.dir") is None:
        System.setProperty("imagej.dir", str(scripts_dir()))
    try:
        if path.suffix == ".py":
            interp = jimport("org.python.util.PythonInterpreter")()
            interp.exec_(f"import sys\nif {lib!r} not in sys.path: sys.path.insert(0, {lib!r})")
            for n, v in inputs.items():
                interp.set(n, v)
            interp.exec_(code)
            return {n: interp.get(n) for n in outputs}
        binding = jimport("groovy.lang.Binding")()
        for n, v in inputs.items():
            binding.setVariable(n, v)
        jimport("groovy.lang.GroovyShell")(binding).evaluate(code, path.name)
        return {n: binding.getVariable(n) if binding.hasVariable(n) else None for n in outputs}
    except jpype.JException as e:
        raise InputError(_script_message(e)) from None


def _script_message(e) -> str:
    """The one-line message of a script failure (our ClemError text when there is one)."""
    text = str(e.getMessage() or e)
    m = re.search(r"ClemError: (.+)", text)
    return (m.group(1) if m else text).strip().splitlines()[0]
