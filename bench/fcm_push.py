"""Benchmark of the FCM HTTP v1 backend's fan-out (issue #8): one request per device token, a bounded thread pool.

    .venv/bin/python bench/fcm_push.py [--messages 500] [--latency-ms 40] [--concurrency 1 10 20]

A local HTTP server stands in for ``fcm.googleapis.com`` and answers every ``messages:send`` after
``--latency-ms`` (FCM's usual round trip from Korea is 30–60 ms); the OAuth2 token is fixed, so only the fan-out is
measured. Prints requests/s per pool size and checks every token got exactly one request. No database is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--tokens-per-contact", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=40.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 20])
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from campaigns.channels import Message, push

    seen: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen[body["message"]["token"]] += 1
            time.sleep(args.latency_ms / 1000)
            answer = json.dumps({"name": "projects/bench/messages/1"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    push.SEND_URL = f"http://127.0.0.1:{server.server_port}/v1/projects/{{project}}/messages:send"
    push.account = lambda: push._Account(source="bench", project="bench", credentials=None, lock=threading.Lock())
    push.access_token = lambda acct, http, force=False: "bench-token"

    messages = [
        Message(
            send_id=i,
            channel="push",
            contact_id=i,
            to=[f"tok-{i}-{d}" for d in range(args.tokens_per_contact)],
            subject="장바구니",
            body="담아두신 상품이 곧 품절돼요",
        )
        for i in range(args.messages)
    ]
    requests_total = args.messages * args.tokens_per_contact
    print(f"{args.messages} messages × {args.tokens_per_contact} tokens, {args.latency_ms:.0f} ms per request")
    for concurrency in args.concurrency:
        settings.LOOP_FCM_CONCURRENCY = concurrency
        seen.clear()
        started = time.perf_counter()
        results = push.FcmBackend().send_batch(messages)
        elapsed = time.perf_counter() - started
        if not all(r.ok for r in results):
            raise SystemExit("a message was not sent")
        if len(seen) != requests_total or set(seen.values()) != {1}:
            raise SystemExit("not exactly one request per token")
        print(
            f"concurrency {concurrency:>3}: {elapsed:6.2f} s, {requests_total / elapsed:7.0f} requests/s, "
            f"{args.messages / elapsed:7.0f} messages/s"
        )
    server.shutdown()


if __name__ == "__main__":
    main()
