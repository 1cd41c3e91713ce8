"""A minimal OpenAI-compatible chat server, written apart from the project's simulator, for
tests and ``bench/llm_cap.py``: the client is measured against a server it was not built with.

In: ``--cap N`` (requests in flight at once; 0 = no cap) and ``--latency S``. Out: for
``POST /v1/chat/completions``, a fixed chat completion after ``S`` seconds, or at once a 429
``{"error": {...}}`` with ``Retry-After: 1`` while ``N`` requests are being answered (the refused
one is never counted in flight); a request whose last message contains ``UNUSABLE`` gets the
content ``"unusable"``. ``GET /stats``: ``served``, ``refused``, ``max_in_flight``.

    python tests/cap_server.py --cap 16 --latency 0.5   # prints CAP_SERVER_READY <base url>; ends at EOF on stdin
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request

from aiohttp import web

READY = "CAP_SERVER_READY"


def app(cap: int, latency: float) -> web.Application:
    stats = {"served": 0, "refused": 0, "in_flight": 0, "max_in_flight": 0}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        if cap and stats["in_flight"] >= cap:
            stats["refused"] += 1
            error = {"message": f"too many requests in flight (limit {cap})", "type": "rate_limit_error",
                     "param": None, "code": "429"}
            return web.json_response({"error": error}, status=429, headers={"Retry-After": "1"})
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(latency)
        finally:
            stats["in_flight"] -= 1
        stats["served"] += 1
        content = "unusable" if "UNUSABLE" in str(body["messages"][-1].get("content")) else "a fixed answer"
        return web.json_response({
            "id": f"chatcmpl-{stats['served']}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    application = web.Application()
    application.add_routes([web.post("/v1/chat/completions", chat), web.get("/stats", get_stats)])
    return application


class CapServer:
    """The server in a child process: ``with CapServer(cap=16, latency=0.5) as server: server.base_url``."""

    def __init__(self, cap: int = 0, latency: float = 0.5) -> None:
        self.args = ["--cap", str(cap), "--latency", str(latency)]

    def __enter__(self) -> "CapServer":
        self.proc = subprocess.Popen([sys.executable, __file__, *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if line[:1] != [READY]:
            self.proc.kill()
            raise RuntimeError(f"cap server did not start: {line}")
        self.base_url = line[1]
        return self

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/stats") as resp:
            return json.load(resp)

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()  # the server ends at EOF
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


async def _serve(cap: int, latency: float) -> None:
    runner = web.AppRunner(app(cap, latency), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(READY, f"http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes away


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(_serve(args.cap, args.latency))
