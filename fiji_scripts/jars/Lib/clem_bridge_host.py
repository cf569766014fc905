# -*- coding: utf-8 -*-
"""How a clem-bridge Fiji command behaves in its host: log lines, one-line errors, dialogs, exit codes.

Exit codes end the JVM (``System.exit``) only when the JVM was started to run this very script from
the command line: headless, and its command line holds ``--run <.../this script>`` (Fiji's
``ImageJ-linux64 --headless --run script.py 'key="value"'``).  Then an error exits with 2 and a
registration whose status is ``failed`` with 3.  In every other host (a running Fiji, PyImageJ, a
headless Fiji running a macro, the Python bridge) the JVM is never ended: the GUI shows a dialog, a
headless host gets an ``error:`` line on stderr, and with the system property ``clem_bridge.raise=true``
(set by clem_bridge.fiji) the error is raised to the caller.  ``-Dclem_bridge.exit=true|false`` overrides
the detection (for a launcher whose command line the JVM cannot see).
"""
from java.awt import GraphicsEnvironment
from java.io import File, IOException
from java.lang import Exception as JException, String as JString, System
from java.nio.file import Files

from ij import IJ

STATUSES = ("ok", "uncertain", "failed")
EXIT_ERROR, EXIT_FAILED = 2, 3
_script = [None]  # file name of the menu command being run (set by run_command)


class ClemError(Exception):
    """A user-facing problem; the message is one sentence."""


def message(e):
    """The text of an exception as unicode (str() of a non-ASCII message fails in Jython 2)."""
    arg = e.args[0] if getattr(e, "args", None) else None
    return arg if isinstance(arg, basestring) else unicode(e)


def is_headless():
    return GraphicsEnvironment.isHeadless()


def log(msg):
    """A line in the Log window (GUI) or on stdout (headless)."""
    if is_headless():
        System.out.println(msg)
        System.out.flush()
    else:
        IJ.log(msg)


def command_line():
    """The words of this process's command line (Linux /proc, else the java launcher's property)."""
    proc = File("/proc/self/cmdline")
    if proc.isFile():
        text = JString(Files.readAllBytes(proc.toPath()), "UTF-8").toString()
        return [w for w in text.split("\0") if w]
    return (System.getProperty("sun.java.command") or "").split()


def launched_to_run(script_name, words=None):
    """True when the command line is ``... --run <path ending in script_name> ...``."""
    words = command_line() if words is None else words
    return any(w == "--run" and i + 1 < len(words) and words[i + 1].replace("\\", "/").split("/")[-1] == script_name
               for i, w in enumerate(words))


def exit_codes_allowed():
    forced = System.getProperty("clem_bridge.exit")
    if forced in ("true", "false"):
        return forced == "true"
    if System.getProperty("clem_bridge.raise") == "true" or not is_headless() or _script[0] is None:
        return False
    return launched_to_run(_script[0])


def run_command(script_name, command, on_error=None):
    """Run ``command()`` for the menu script ``script_name``; returns its value, or ``on_error`` after an
    error was reported (dialog, ``error:`` line + exit 2, or raised; see the module docstring)."""
    _script[0] = script_name
    try:
        return command()
    except ClemError as e:
        _fail(message(e))
    except IOException as e:
        _fail("I/O error: %s" % e.getMessage())
    except (Exception, JException) as e:  # a bug or an unforeseen case: still one line
        _fail(u"unexpected %s: %s (please report it)" % (type(e).__name__, message(e)))
    return on_error


def _fail(msg):
    IJ.showStatus("")
    IJ.showProgress(1.0)
    if System.getProperty("clem_bridge.raise") == "true":  # run from Python (clem_bridge.fiji)
        raise ClemError(msg)
    if not is_headless():
        IJ.error("CLEM", msg)
        return
    System.err.println(u"error: " + msg)
    System.err.flush()
    if exit_codes_allowed():
        System.exit(EXIT_ERROR)


def outcome(record):
    """``(status, warnings)`` of a transform record; a record without ``status`` is ``uncertain`` when it
    has warnings (as clem_bridge.result.Registration.outcome)."""
    record = record or {}
    warnings = [unicode(w) for w in record.get("warnings") or []]
    status = record.get("status") or ("uncertain" if warnings else "ok")
    if status not in STATUSES:
        raise ClemError("the server answered an unknown registration status '%s'" % status)
    return status, warnings


def worst(statuses):
    return max(list(statuses) or ["ok"], key=STATUSES.index)


def report(status, reasons, label):
    """Log the status and its reasons; a dialog in the GUI unless ok; exit 3 for ``failed`` on the
    headless command line (after every file was written)."""
    for reason in reasons:
        log("warning: " + reason)
    log("%s: status %s" % (label, status))
    if status == "ok":
        return
    text = "%s: the result is %s.\n\n%s" % (label, status.upper(), "\n".join("- " + r for r in reasons)
                                            or "(no reason given)")
    if not is_headless():
        IJ.showMessage("CLEM: result " + status, text)
    elif status == "failed" and exit_codes_allowed():
        System.out.flush()
        System.exit(EXIT_FAILED)
