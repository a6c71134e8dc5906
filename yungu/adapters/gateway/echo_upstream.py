"""A fast OpenAI-compatible upstream for benchmarks and tests: it generates no language,
only well-formed responses with exact ``usage``, so the gateway's own cost can be measured.

``python -m yungu.adapters.gateway.echo_upstream --port 8099 [--tokens 16] [--fail] [--delay-ms 0]``

Its "tokenizer" counts whitespace-separated words (of the message contents or the prompt);
a completion is ``min(max_tokens, --tokens)`` words, one per streamed chunk. ``--fail`` answers
every generation with 500 (a broken replica); ``--usage none`` leaves ``usage`` out (a backend
that reports none, whose tokens the gateway must count itself, through ``POST /tokenize``). Pure asyncio + httptools.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httptools
import orjson

WORD = "tok"
STATS = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}  # what was served (GET /stats)


def words(req: dict[str, Any]) -> int:
    if "messages" in req:
        return sum(len(str(m.get("content", "")).split()) for m in req.get("messages") or ())
    inp = req.get("prompt", req.get("input", ""))
    if isinstance(inp, list):
        return sum(len(str(x).split()) for x in inp)
    return len(str(inp).split())


class EchoProtocol(asyncio.Protocol):
    def __init__(self, cfg: argparse.Namespace) -> None:
        self.cfg = cfg
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        path = self.url.split(b"?")[0]
        if path == b"/stats":
            self._send(200, orjson.dumps(STATS))
        elif path == b"/health":
            self._send(200, b'{"status":"ok"}')
        elif path == b"/tokenize":  # vLLM's route: the "tokenizer" counts words
            try:
                req = orjson.loads(body)
            except orjson.JSONDecodeError:
                req = {}
            self._send(200, orjson.dumps({"count": words(req)}))
        elif path == b"/v1/models":
            self._send(200, orjson.dumps({"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]}))
        elif path in (b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings"):
            if self.cfg.fail:
                self._send(500, b'{"error":{"message":"replica is broken (--fail)","type":"server_error"}}')
                return
            try:
                req = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._send(400, b'{"error":{"message":"bad json","type":"invalid_request_error"}}')
                return
            if path == b"/v1/embeddings":
                n = words(req)
                out = {"object": "list", "model": req.get("model"), "data": [{"object": "embedding", "index": 0,
                       "embedding": [0.0] * 8}], "usage": {"prompt_tokens": n, "total_tokens": n}}
                self._send(200, orjson.dumps(out))
                return
            chat = path == b"/v1/chat/completions"
            n_in = words(req)
            STATS["requests"] += 1
            STATS["prompt_tokens"] += n_in
            n_out = min(int(req.get("max_tokens") or req.get("max_completion_tokens") or 1 << 30), self.cfg.tokens)
            if req.get("stream"):
                asyncio.get_running_loop().create_task(self._stream(req, chat, n_in, n_out))
            else:
                STATS["completion_tokens"] += n_out
                text = " ".join([WORD] * n_out)
                choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text},
                                           "finish_reason": "length"} if chat else
                                          {"index": 0, "text": text, "finish_reason": "length"})
                out = {"id": "echo-1", "object": "chat.completion" if chat else "text_completion",
                       "created": int(time.time()), "model": req.get("model"), "choices": [choice]}
                if self.cfg.usage != "none":
                    out["usage"] = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
                self._send(200, orjson.dumps(out))
        else:
            self._send(404, b'{"error":{"message":"no such route","type":"invalid_request_error"}}')

    def _send(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, len(body), body))

    async def _stream(self, req: dict[str, Any], chat: bool, n_in: int, n_out: int) -> None:
        t = self.transport
        assert t is not None
        t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        opts = req.get("stream_options") or {}
        cont = bool(opts.get("continuous_usage_stats")) and self.cfg.usage != "none"
        obj = "chat.completion.chunk" if chat else "text_completion"
        model = req.get("model")

        def chunk(payload: bytes) -> None:
            t.write(b"%x\r\n%s\r\n" % (len(payload), payload))

        for i in range(n_out):
            if self.closed or t.is_closing():
                return
            c: dict[str, Any] = ({"index": 0, "delta": {"content": WORD + " "}, "finish_reason": None} if chat
                                 else {"index": 0, "text": WORD + " ", "finish_reason": None})
            ev: dict[str, Any] = {"id": "echo-1", "object": obj, "model": model, "choices": [c]}
            if cont:
                ev["usage"] = {"prompt_tokens": n_in, "completion_tokens": i + 1, "total_tokens": n_in + i + 1}
            chunk(b"data: " + orjson.dumps(ev) + b"\n\n")
            STATS["completion_tokens"] += 1  # written while the client was connected: served
            if self.cfg.delay_ms:
                await asyncio.sleep(self.cfg.delay_ms / 1000)
            elif i % 8 == 7:
                await asyncio.sleep(0)  # let the loop breathe (and notice a disconnect)
        if self.closed:
            return
        last: dict[str, Any] = {"id": "echo-1", "object": obj, "model": model, "choices": [
            {"index": 0, "delta": {}, "finish_reason": "length"} if chat else
            {"index": 0, "text": "", "finish_reason": "length"}]}
        chunk(b"data: " + orjson.dumps(last) + b"\n\n")
        if opts.get("include_usage") and self.cfg.usage != "none":
            chunk(b"data: " + orjson.dumps({"id": "echo-1", "object": obj, "model": model, "choices": [], "usage": {
                "prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}) + b"\n\n")
        chunk(b"data: [DONE]\n\n")
        t.write(b"0\r\n\r\n")


async def serve(cfg: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EchoProtocol(cfg), cfg.host, cfg.port, backlog=4096)
    print(f"echo upstream on http://{cfg.host}:{cfg.port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fast fake OpenAI upstream (benchmarks, tests)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="echo")
    ap.add_argument("--tokens", type=int, default=16, help="completion tokens per response (at most)")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="pause between streamed tokens")
    ap.add_argument("--fail", action="store_true", help="answer every generation with HTTP 500")
    ap.add_argument("--usage", choices=["report", "none"], default="report")
    cfg = ap.parse_args(argv)
    import uvloop

    uvloop.run(serve(cfg))


if __name__ == "__main__":
    main()
