"""Tests for pr-review: the real server on an ephemeral port, spoken to over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import unittest
from pathlib import Path

import app

HERE = Path(__file__).resolve().parent


class ServerTest(unittest.TestCase):
    """Starts one server for the class; each test gets its own keep-alive connection."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = app.make_server(0, access_log=False)
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, kwargs={"poll_interval": 0.05})
        cls.thread.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join()

    def setUp(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def tearDown(self) -> None:
        self.conn.close()

    def call(self, method: str, path: str, body: object = None, headers: dict | None = None):
        """(status, parsed JSON or raw bytes, response) for one request on self.conn."""
        headers = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if method != "HEAD":
            self.assertEqual(resp.getheader("Content-Length"), str(len(data)))
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(data), resp
        return resp.status, data, resp


class CommonEndpoints(ServerTest):
    """The five smoke-test stages every skill answers."""

    def test_health(self) -> None:
        status, body, _ = self.call("GET", "/health")
        self.assertEqual((status, body), (200, {"status": "healthy"}))

    def test_metadata(self) -> None:
        status, body, _ = self.call("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(body["name"], app.NAME)
        self.assertEqual(body["version"], (HERE / "VERSION").read_text().strip())
        self.assertTrue(body["description"])

    def test_docs_lists_every_route(self) -> None:
        status, body, _ = self.call("GET", "/docs")
        self.assertEqual(status, 200)
        paths = {e["path"] for e in body["endpoints"]}
        self.assertEqual(paths, set(app.ROUTES))

    def test_unknown_path_is_404_json(self) -> None:
        status, body, _ = self.call("GET", "/no/such/thing")
        self.assertEqual(status, 404)
        self.assertEqual(body["error"], "not found")

    def test_wrong_method_is_405_with_allow(self) -> None:
        status, body, resp = self.call("POST", "/health", body={})
        self.assertEqual(status, 405)
        self.assertEqual(resp.getheader("Allow"), "GET, HEAD, OPTIONS")
        self.assertEqual(body["error"], "method not allowed")

    def test_head_has_length_and_no_body(self) -> None:
        self.conn.request("HEAD", "/health")
        resp = self.conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.read(), b"")
        self.assertEqual(resp.getheader("Content-Length"), str(len(b'{"status": "healthy"}')))

    def test_keep_alive_serves_several_requests_on_one_connection(self) -> None:
        self.call("GET", "/health")
        sock = self.conn.sock
        for path in ("/", "/missing", "/docs"):
            self.call("GET", path)
        self.call("POST", "/health", body={"ignored": True})  # a refused body is still consumed
        self.call("GET", "/health")
        self.assertIs(self.conn.sock, sock)

    def test_chunked_request_body_is_consumed(self) -> None:
        self.conn.putrequest("POST", "/health")
        self.conn.putheader("Transfer-Encoding", "chunked")
        self.conn.endheaders()
        for part in (b'{"a": ', b"1}"):
            self.conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        self.conn.send(b"0\r\n\r\n")
        resp = self.conn.getresponse()
        resp.read()
        self.assertEqual(resp.status, 405)
        status, body, _ = self.call("GET", "/health")  # the same connection still works
        self.assertEqual((status, body), (200, {"status": "healthy"}))

    def test_every_route_has_a_working_example(self) -> None:
        for path, methods in app.ROUTES.items():
            for method, route in methods.items():
                if route.example is not None:
                    with self.subTest(path=path):
                        status, _, _ = self.call(method, path, body=route.example)
                        self.assertEqual(status, 200)


class Review(ServerTest):
    """POST /api/review."""

    DIFF = """\
diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -10,4 +10,5 @@ def handler():
 context line
-removed = True
+added = True  # TODO: remove the flag
+other = 2
 context line
@@ -40,2 +41,3 @@
 context
+    raise SystemExit  # FIXME before release
--- a/README.md
+++ b/README.md
@@ -1 +1 @@
-old title
+new title with the word TODOS in it
"""

    def test_counts_lines_and_finds_markers_with_line_numbers(self) -> None:
        status, body, _ = self.call("POST", "/api/review", body={"diff": self.DIFF})
        self.assertEqual(status, 200)
        self.assertEqual(body["files"], ["app.py", "README.md"])
        self.assertEqual((body["added"], body["removed"]), (4, 2))
        self.assertEqual(body["todos"], 3)
        self.assertEqual(
            [(f["file"], f["line"], f["marker"]) for f in body["findings"]],
            [("app.py", 11, "TODO"), ("app.py", 42, "FIXME"), ("README.md", 1, "TODO")],
        )
        self.assertEqual(body["verdict"], "comment")

    def test_clean_diff_is_approved(self) -> None:
        diff = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"
        status, body, _ = self.call("POST", "/api/review", body={"diff": diff})
        self.assertEqual((status, body["todos"], body["verdict"]), (200, 0, "approve"))

    def test_removed_todos_do_not_count(self) -> None:
        diff = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-# TODO old\n+# done\n"
        self.assertEqual(app.review(diff)["todos"], 0)

    def test_deleted_file(self) -> None:
        diff = "--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x = 1\n"
        self.assertEqual(app.review(diff)["files"], [])

    def test_bad_bodies_are_400(self) -> None:
        for body in (b"{not json", json.dumps({"patch": ""}), json.dumps({"diff": 3})):
            with self.subTest(body=body):
                status, reply, _ = self.call("POST", "/api/review", body=body)
                self.assertEqual(status, 400)
                self.assertIn("error", reply)


class Process(unittest.TestCase):
    """The real `python3 app.py` process: PORT from the environment, clean exit on SIGTERM."""

    def test_sigterm_stops_cleanly(self) -> None:
        env = dict(os.environ, PORT="0", LOG_LEVEL="warning")
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "app.py")], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            banner = proc.stdout.readline()
            self.assertIn("listening on http://127.0.0.1:", banner)
            conn = http.client.HTTPConnection("127.0.0.1", int(banner.rsplit(":", 1)[1]), timeout=5)
            conn.request("GET", "/health")
            self.assertEqual(conn.getresponse().status, 200)  # left open: an idle keep-alive client
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=5), 0)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


if __name__ == "__main__":
    unittest.main()
