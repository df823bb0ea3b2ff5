"""Tests for nl-sql: the real server on an ephemeral port, spoken to over real sockets."""

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


class Query(ServerTest):
    """POST /api/query."""

    def test_known_questions(self) -> None:
        cases = {
            "How many customers are there?": "SELECT COUNT(*) FROM customers;",
            "list all products": "SELECT * FROM products LIMIT 100;",
            "show me orders": "SELECT * FROM orders LIMIT 100;",
            "Top 3 customers by revenue": (
                "SELECT c.name, SUM(o.total) AS revenue FROM customers c JOIN orders o ON o.customer_id = c.id "
                "GROUP BY c.name ORDER BY revenue DESC LIMIT 3;"
            ),
            "orders since 2025-01-01": "SELECT * FROM orders WHERE created_at >= '2025-01-01' ORDER BY created_at;",
            "customers in  Singapore": "SELECT * FROM customers WHERE lower(city) = 'singapore';",
        }
        for question, sql in cases.items():
            with self.subTest(question=question):
                status, body, _ = self.call("POST", "/api/query", body={"question": question})
                self.assertEqual((status, body["sql"]), (200, sql))

    def test_every_documented_example_is_answered(self) -> None:
        for example in app.examples():
            self.assertIsNotNone(app.to_sql(example), example)

    def test_unknown_question_is_422_with_examples(self) -> None:
        status, body, _ = self.call("POST", "/api/query", body={"question": "drop table customers"})
        self.assertEqual(status, 422)
        self.assertEqual(body["examples"], app.examples())

    def test_quotes_never_reach_the_sql(self) -> None:
        self.assertIsNone(app.to_sql("customers in x' or '1'='1"))

    def test_bad_bodies_are_400(self) -> None:
        for body in (b"{not json", json.dumps({"q": 1}), json.dumps(["question"])):
            with self.subTest(body=body):
                status, reply, _ = self.call("POST", "/api/query", body=body)
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
