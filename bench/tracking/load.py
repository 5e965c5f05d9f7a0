"""Load generator (its own process): keep-alive connections on threads,
each cycling through a list of paths; prints a JSON summary.

    python bench/tracking/load.py --port 9000 --paths-file p.txt --connections 8 --seconds 5
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time


def worker(port, paths, offset, stop_at, warm_until, latencies, errors, statuses):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = offset
    while True:
        start = time.perf_counter()
        if start >= stop_at:
            break
        try:
            connection.request("GET", paths[i % len(paths)],
                               headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) "
                                        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 "
                                        "Safari/537.36"})
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            errors.append(1)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        end = time.perf_counter()
        if start >= warm_until:
            latencies.append(end - start)
            statuses[status] = statuses.get(status, 0) + 1
        i += 1
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths-file", required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    paths = open(args.paths_file).read().split()
    now = time.perf_counter()
    warm_until, stop_at = now + args.warmup, now + args.warmup + args.seconds
    latencies, errors, statuses = [], [], {}
    threads = [threading.Thread(target=worker, args=(args.port, paths, n * 997, stop_at,
                                                     warm_until, latencies, errors, statuses))
               for n in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0

    print(json.dumps({"requests": len(latencies), "rps": len(latencies) / args.seconds,
                      "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": len(errors),
                      "statuses": statuses}))


if __name__ == "__main__":
    main()
