"""qvserver.py: starts and stops a real `quiver serve` for the system tests,
and `Base`, the unittest class they share (one server per class).

Standard library only. The server binary is `$QV_CLI serve` when that
command accepts `serve`, else `$QV_TEST_BIN/helper_serve` (the same
server_main). Each Server gets a free loopback port (bind port 0, read it,
close) and, unless given one, a fresh temporary data directory. stderr goes
to a file that the tests read (the ready line, sanitizer reports).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest


def server_command():
    cli = os.environ.get("QV_CLI")
    if cli and os.path.exists(cli):
        probe = subprocess.run([cli, "serve", "--help"], capture_output=True)
        if probe.returncode == 0:
            return [cli, "serve"]
    base = os.environ.get("QV_TEST_BIN")
    if not base:
        raise RuntimeError("set QV_TEST_BIN (the build's tests/ directory) or QV_CLI")
    return [os.path.join(base, "helper_serve")]


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, args=(), data_dir=None, env=None, port=None):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="qv-srv-")
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.port = port or free_port()
        self.proc = None
        self.log_path = os.path.join(tempfile.gettempdir(),
                                     "qv-srv-%d-%d.log" % (os.getpid(), self.port))
        self.api_key = None

    def start(self, wait=True):
        cmd = server_command() + ["--host", "127.0.0.1", "--port", str(self.port),
                                  "--data-dir", self.data_dir] + self.args
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, limit=60.0):
        # Waiting for readiness is not a timing assertion: the loop only ends
        # early, and a server that never answers fails the test.
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %d:\n%s" % (self.proc.returncode,
                                                                  self.stderr()))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                c.close()
                # The ready line is printed once the daemon runs, which
                # can be just after it answers the first probe.
                if r.status == 200 and "listening on" in self.stderr():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready:\n" + self.stderr())

    def stderr(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops the server; returns its exit status (None if already gone)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.log.close()
        return rc

    def cleanup(self):
        self.stop(signal.SIGKILL)
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    # ---- requests --------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, raw=None, conn=None):
        """Returns (status, headers dict with lower-case names, body bytes)."""
        h = {}
        if self.api_key:
            h["api-key"] = self.api_key
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            payload = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, payload
        finally:
            if own:
                c.close()

    def call(self, method, path, body=None, **kw):
        """Returns (status, parsed JSON body)."""
        status, _, payload = self.request(method, path, body, **kw)
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode("utf-8", "replace")


def assert_sanitizer_clean(tc, srv):
    log = srv.stderr()
    tc.assertNotIn("AddressSanitizer", log, log[-4000:])
    tc.assertNotIn("runtime error:", log, log[-4000:])
    tc.assertNotIn("LeakSanitizer", log, log[-4000:])


class Base(unittest.TestCase):
    """One server shared by the tests of a class; each test uses its own
    collections (named after the test)."""

    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(cls.server_args).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        try:
            if rc != 0:
                raise AssertionError("server exit status %r:\n%s" % (rc, cls.srv.stderr()[-4000:]))
            log = cls.srv.stderr()
            for bad in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
                if bad in log:
                    raise AssertionError(log[-4000:])
        finally:
            cls.srv.cleanup()

    def call(self, method, path, body=None, **kw):
        return self.srv.call(method, path, body, **kw)

    def ok(self, method, path, body=None):
        status, r = self.call(method, path, body)
        self.assertEqual(status, 200, r)
        self.assertEqual(r["status"], "ok", r)
        self.assertIsInstance(r["time"], (int, float))
        return r["result"]

    def err(self, status, method, path, body=None, contains=None, raw=None):
        code, _, payload = self.srv.request(method, path, body, raw=raw)
        self.assertEqual(code, status, payload)
        r = json.loads(payload)
        self.assertNotIn("result", r)
        self.assertIsInstance(r["time"], (int, float))
        msg = r["status"]["error"]
        if contains:
            self.assertIn(contains, msg)
        return msg

    def coll(self, name=None, size=4, distance="Cosine", **extra):
        name = name or self._testMethodName
        self.call("DELETE", "/collections/" + name)
        body = {"vectors": {"size": size, "distance": distance}}
        body.update(extra)
        self.assertIs(self.ok("PUT", "/collections/" + name, body), True)
        return "/collections/" + name

    def upsert(self, c, points, wait=True):
        return self.ok("PUT", c + "/points" + ("?wait=true" if wait else ""), {"points": points})
