# -*- coding: utf-8 -*-
"""The clem-bridge server from Fiji: JSON over HTTP, multipart uploads, job polling, and starting a local
``clem-bridge serve`` when none answers (JDK only).

Local start: when nothing listens at a local URL (host 127.0.0.1, localhost or [::1]), :func:`connect`
runs ``<command> serve --host <host> --port <port>``, where ``<command>`` is read from
``clem_bridge_server.txt`` next to this module (written by ``clem-bridge install-fiji``: UTF-8, one word
of the command per line, normally the absolute path of the ``clem-bridge`` executable; blank lines and
lines starting with ``#`` are ignored).  A token goes to it as ``CLEM_BRIDGE_TOKEN``, its output to
``<tmp>/clem-bridge-serve-<port>.log``; it keeps running after the command ends.  A remote URL that does
not answer stays an error.
"""
import codecs
import json
import os
import re
import time

from java.io import ByteArrayOutputStream, File, IOException
from java.lang import ProcessBuilder, String as JString, System, Thread
from java.net import ConnectException, MalformedURLException, SocketTimeoutException, \
    UnknownHostException, URL
from java.nio.file import Files
from jarray import zeros

from ij import IJ

from clem_bridge_host import ClemError, is_headless, log

SERVER_CONFIG = "clem_bridge_server.txt"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
STARTUP_S = 120  # longest wait for a started server's /v1/health (torch import on a slow laptop)
_HERE = os.path.dirname(os.path.abspath(__file__))


class Unreachable(ClemError):
    """Nothing answers at the server URL."""


class Server(object):
    """A clem-bridge server at ``url`` (e.g. http://127.0.0.1:8765), optional bearer ``token``."""

    def __init__(self, url, token=None, timeout_s=30):
        url = (url or "").strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ClemError("invalid server URL '%s'; expected e.g. http://127.0.0.1:8765" % url)
        self.url, self.token, self.timeout_ms = url, token or None, int(timeout_s * 1000)

    def is_local(self):
        return URL(self.url).getHost().lower() in LOCAL_HOSTS

    def request(self, method, path, payload=None, content_type=None, read_timeout_s=None, connect_timeout_s=None,
                raw=False):
        """One HTTP request; returns the JSON answer (``raw``: the body's bytes). Every failure is a
        one-sentence ClemError."""
        try:
            conn = URL(self.url + path).openConnection()
        except MalformedURLException:
            raise ClemError("invalid server URL %s" % self.url)
        conn.setRequestMethod(method)
        conn.setConnectTimeout(int(connect_timeout_s * 1000) if connect_timeout_s else self.timeout_ms)
        conn.setReadTimeout(int(read_timeout_s * 1000) if read_timeout_s else self.timeout_ms)
        conn.setRequestProperty("Accept", "application/json")
        if self.token:
            conn.setRequestProperty("Authorization", "Bearer " + self.token)
        try:
            if payload is not None:
                conn.setRequestProperty("Content-Type", content_type)
                conn.setDoOutput(True)
                conn.setFixedLengthStreamingMode(len(payload))
                out = conn.getOutputStream()
                out.write(payload)
                out.close()
            status = conn.getResponseCode()
        except ConnectException as e:
            raise Unreachable(_unreachable(self.url, e))
        except (UnknownHostException, SocketTimeoutException) as e:
            raise ClemError(_unreachable(self.url, e))
        except IOException as e:
            raise ClemError("cannot talk to the CLEM server at %s: %s" % (self.url, e.getMessage()))
        stream = conn.getInputStream() if status < 400 else conn.getErrorStream()
        body = _read_all(stream) if stream is not None else ""
        if status >= 400:
            raise ClemError(_http_error(status, path, body, self.url))
        if raw:
            return body
        try:
            return json.loads(JString(body, "UTF-8").toString()) if body else {}
        except ValueError:
            raise ClemError("the server at %s did not answer JSON for %s" % (self.url, path))

    def get_json(self, path):
        return self.request("GET", path)

    def download(self, job, name, folder):
        """Save the artifact ``name`` of a finished ``job`` into ``folder``; returns its path."""
        data = self.request("GET", "/v1/jobs/%s/artifacts/%s" % (job["id"], name), read_timeout_s=900, raw=True)
        path = File(folder, name)
        Files.write(path.toPath(), data)
        return path.getPath()

    def post_multipart(self, path, fields, files):
        """POST form ``fields`` {name: text} and ``files`` [(name, filename, byte[])] as multipart/form-data."""
        boundary = "----clem-bridge-%d" % System.nanoTime()
        buf = ByteArrayOutputStream()

        def put(text):
            buf.write(JString(text).getBytes("UTF-8"))
        for name, value in fields.items():
            put('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, name, value))
        for name, filename, data in files:
            put('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                'Content-Type: image/tiff\r\n\r\n' % (boundary, name, filename))
            buf.write(data)
            put("\r\n")
        put("--%s--\r\n" % boundary)
        return self.request("POST", path, buf.toByteArray(), "multipart/form-data; boundary=" + boundary,
                            read_timeout_s=900)

    def post_json(self, path, obj):
        """POST ``obj`` as a JSON body; returns the JSON answer."""
        return self.request("POST", path, JString(json.dumps(obj)).getBytes("UTF-8"), "application/json",
                            read_timeout_s=900)

    def wait_job(self, job_id, label="CLEM", timeout_s=24 * 3600, job=None):
        """Long-poll /v1/jobs/{id} until it ends (``job``: its last known state), showing stage and progress
        in the status bar."""
        t0 = time.time()
        while True:
            if not is_headless() and IJ.escapePressed():
                self.request("DELETE", "/v1/jobs/%s" % job_id)
                raise ClemError("cancelled: the server job %s was cancelled (Esc)" % job_id)
            if job is None or job.get("status") not in ("done", "failed", "cancelled", "interrupted"):
                job = self.get_json("/v1/jobs/%s?wait=1" % job_id)
            state = job.get("status")
            IJ.showProgress(float(job.get("progress") or 0.0))
            IJ.showStatus("%s: %s %s" % (label, state, job.get("stage") or ""))
            if state == "done":
                IJ.showProgress(1.0)
                IJ.showStatus("%s: done" % label)
                return job
            if state in ("failed", "cancelled", "interrupted"):
                raise ClemError("the server's %s job %s: %s" % (label, state, _job_error(job)))
            if time.time() - t0 > timeout_s:
                raise ClemError("the server's job %s did not finish within %d s" % (job_id, timeout_s))
            job = None

    def submit_and_wait(self, endpoint, files, params, label, wait_s=0):
        """POST a job (multipart ``files`` [(field, filename, byte[])] + JSON ``params``; ``?wait=wait_s``
        lets a short job answer finished), wait for it; returns (its result record, the job)."""
        IJ.showStatus("%s: uploading" % label)
        path = endpoint + ("?wait=%d" % wait_s if wait_s else "")
        job = self.post_multipart(path, {"params": json.dumps(params)}, files)
        job = self.wait_job(job["id"], label, job=job)
        return self.get_json("/v1/jobs/%s/result" % job["id"]), job


def connect(url, token=None, timeout_s=30):
    """A Server that answers /v1/health; starts a local ``clem-bridge serve`` when none answers there."""
    server = Server(url, token, timeout_s)
    try:
        server.get_json("/v1/health")
    except Unreachable:
        if not server.is_local():
            raise
        start_local(server)
    return server


def recorded_command(config=None):
    """The command recorded by install-fiji in clem_bridge_server.txt (one word per line)."""
    f = File(config or os.path.join(_HERE, SERVER_CONFIG))
    if not f.isFile():
        return None
    with codecs.open(f.getPath(), "r", "utf-8") as fh:
        words = [ln.strip() for ln in fh.read().splitlines()]
    return [w for w in words if w and not w.startswith("#")] or None


def start_local(server, wait_s=STARTUP_S):
    """Start ``clem-bridge serve`` for the local ``server`` URL and wait for its /v1/health."""
    config = os.path.join(_HERE, SERVER_CONFIG)
    command = recorded_command(config)
    if command is None:
        raise ClemError("cannot reach the CLEM server at %s (connection refused), and no clem-bridge executable is "
                        "recorded in %s to start one; run 'clem-bridge install-fiji' again or start 'clem-bridge "
                        "serve' yourself" % (server.url, config))
    u = URL(server.url)
    host = "127.0.0.1" if u.getHost().lower() == "localhost" else u.getHost().strip("[]")
    port = u.getPort() if u.getPort() > 0 else u.getDefaultPort()
    args = command + ["serve", "--host", host, "--port", str(port)]
    logfile = File(System.getProperty("java.io.tmpdir"), "clem-bridge-serve-%d.log" % port)
    builder = ProcessBuilder(args).redirectErrorStream(True).redirectOutput(logfile)
    if server.token:
        builder.environment().put("CLEM_BRIDGE_TOKEN", server.token)
    log("CLEM: no server answers at %s; starting %s (log: %s)" % (server.url, " ".join(args), logfile))
    try:
        proc = builder.start()
    except IOException as e:
        raise ClemError("cannot start %s: %s; run 'clem-bridge install-fiji' again" % (command[0], e.getMessage()))
    proc.getOutputStream().close()
    t0 = time.time()
    while True:
        IJ.showStatus("CLEM: starting the server (%d s)" % (time.time() - t0))
        try:
            server.request("GET", "/v1/health", connect_timeout_s=2, read_timeout_s=5)
            log("CLEM: started clem-bridge serve (pid %s) at %s in %.1f s" % (_pid(proc), server.url, time.time() - t0))
            return proc
        except Unreachable:
            pass
        if not proc.isAlive():
            raise ClemError("clem-bridge serve stopped with exit code %d: %s" % (proc.exitValue(), _last_line(logfile)))
        if time.time() - t0 > wait_s or (not is_headless() and IJ.escapePressed()):
            proc.destroy()
            raise ClemError("the clem-bridge server started for %s did not answer /v1/health within %d s; see %s"
                            % (server.url, wait_s, logfile))
        Thread.sleep(250)


def _pid(proc):
    try:
        return proc.pid()  # Java 9+
    except AttributeError:
        return "?"


def _last_line(path):
    try:
        with codecs.open(str(path), "r", "utf-8") as fh:
            lines = [ln.strip() for ln in fh.read().splitlines() if ln.strip()]
    except IOError:
        lines = []
    return lines[-1] if lines else "no output (see %s)" % path


def _unreachable(url, e):
    why = {"ConnectException": "connection refused", "UnknownHostException": "unknown host",
           "SocketTimeoutException": "no answer in time"}.get(e.getClass().getSimpleName(), e.getMessage())
    return "cannot reach the CLEM server at %s (%s); is 'clem-bridge serve' running?" % (url, why)


def _job_error(job):
    err = job.get("error") or job.get("detail") or job.get("message") or "no details"
    if isinstance(err, dict):
        err = err.get("message") or err.get("detail") or json.dumps(err)
    return err


def _read_all(stream):
    buf = ByteArrayOutputStream()
    chunk = zeros(65536, "b")
    while True:
        n = stream.read(chunk)
        if n < 0:
            break
        buf.write(chunk, 0, n)
    stream.close()
    return buf.toByteArray()


def _http_error(status, path, body, url):
    detail = ""
    try:
        obj = json.loads(JString(body, "UTF-8").toString())
        detail = obj.get("detail") or obj.get("error") or obj.get("message") or ""
        if isinstance(detail, dict):
            detail = detail.get("message") or detail.get("detail") or json.dumps(detail)
        elif isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    except (ValueError, AttributeError, TypeError):
        pass
    if status in (401, 403):
        return "the CLEM server at %s rejected the token (HTTP %d)" % (url, status)
    if status == 404:
        return "the CLEM server at %s has no %s (HTTP 404)%s" % (url, path.split("?")[0],
                                                                  ": " + detail if detail else "")
    return "the CLEM server answered HTTP %d for %s%s" % (status, path.split("?")[0], ": " + detail if detail else "")
