"""An HTTP reverse proxy that answers some requests with a transient error instead of passing
them on: the "S3 has a bad moment" side of the object-store tests.

Usage: flaky_proxy.py LISTEN_PORT UPSTREAM_PORT EVERY COUNT_FILE [KEYS_FILE]

Every EVERY-th request (1-based: EVERY, 2*EVERY, ...) is answered `503 Slow Down` with an S3
error body and not forwarded; all others are forwarded to 127.0.0.1:UPSTREAM_PORT unchanged
(method, path, headers, body) and the upstream's answer is relayed. After each injected failure
the number injected so far is written to COUNT_FILE. With KEYS_FILE, the access key ids the
requests were signed with (SigV4 `Credential=`) are written there, one per line.
"""
import http.client
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

listen, upstream, every, count_file = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                       sys.argv[4])
lock = threading.Lock()
seen = 0
injected = 0
keys_file = sys.argv[5] if len(sys.argv) > 5 else None
keys = set()

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        global seen, injected
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        credential = re.search(r"Credential=([^/]+)/", self.headers.get("Authorization", ""))
        with lock:
            if keys_file and credential and credential.group(1) not in keys:
                keys.add(credential.group(1))
                with open(keys_file, "w") as f:
                    f.write("\n".join(sorted(keys)) + "\n")
            seen += 1
            fail = seen % every == 0
            if fail:
                injected += 1
                with open(count_file, "w") as f:
                    f.write(str(injected))
        if fail:
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server",
                                 "date"):
                self.send_header(k, v)
        # A HEAD's length is the object's, not the (empty) body's.
        length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length if length is not None else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", listen), Proxy).serve_forever()
