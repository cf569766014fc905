"""Jython side of tests/fiji_utils.run_script: bind the inputs like SciJava, run the script text."""
import json
import sys

from java.io import File
from java.lang import System

bindings, script = sys.argv[1], sys.argv[-2]  # argv: bindings.json [--headless --run] script args
sys.dont_write_bytecode = False  # keep compiled library modules ($py.class) as Fiji's Jython does
sys.path.insert(0, System.getProperty("imagej.dir") + "/jars/Lib")
CONVERT = {"File": lambda v: File(v), "Integer": int, "int": int, "Long": int, "Double": float, "double": float,
           "Float": float, "Boolean": bool, "boolean": bool, "String": lambda v: v}
ns = {"__name__": "__main__", "__file__": script}
for name, (type_, value) in json.load(open(bindings)).items():
    ns[name] = None if value is None else CONVERT.get(type_, lambda v: v)(value)
sys.argv = [script]
exec(compile(open(script).read(), script, "exec"), ns)
print("HOST_STILL_RUNNING")
