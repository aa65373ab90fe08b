"""Captioning with any OpenAI-compatible chat-completions endpoint that takes images (vLLM,
Ollama, LM Studio, ...): each Bedrock request record is translated to a chat request, sent with
bounded concurrency and retries, and the answers are written in the same `.jsonl.out` format
Bedrock batch writes (`modelOutput` = the chat-completion response)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from carsearch.captioning import formats
from carsearch.captioning.cache import answer_files
from carsearch.captioning.parse import CaptionError
from carsearch.core.schema import Caption


@dataclass
class OpenAISettings:
    base_url: str  # e.g. http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama)
    model: str  # the served model name, e.g. Qwen/Qwen2.5-VL-7B-Instruct
    api_key: str | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    max_attempts: int = 4
    backoff_s: float = 1.0


def settings_from_cfg(cfg: Caption, env: dict | None = None) -> OpenAISettings:
    import os

    env = os.environ if env is None else env
    o = cfg.openai
    base = o.base_url or env.get("OPENAI_BASE_URL")
    if not base:
        raise CaptionError(
            "caption.openai.base_url: not set (e.g. http://localhost:8000/v1 for vLLM, "
            "http://localhost:11434/v1 for Ollama; or $OPENAI_BASE_URL)"
        )
    model = o.model
    if not model:
        raise CaptionError("caption.openai.model: not set (the model name the server serves)")
    key = (env.get(o.api_key_env) if o.api_key_env else None) or None
    conc = int(o.concurrency)
    if conc < 1:
        raise CaptionError(f"caption.openai.concurrency: {conc} (must be >= 1)")
    return OpenAISettings(
        base_url=str(base).rstrip("/"),
        model=model,
        api_key=key,
        concurrency=conc,
        timeout_s=float(o.timeout_s),
        max_attempts=int(o.max_attempts),
        backoff_s=float(o.backoff_s),
    )


def chat_request(record: dict, model: str) -> dict:
    """A chat-completions body from a Claude-format request record (image inline as base64)."""
    body = record["modelInput"]
    if "schemaVersion" in body:
        raise CaptionError(
            f"record {record['recordId']!r}: Nova requests reference images on S3; "
            "the openai backend needs caption.family=claude (images inline)"
        )
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    for msg in body["messages"]:
        parts = []
        for block in msg["content"]:
            if block["type"] == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif block["type"] == "image":
                src = block["source"]
                parts.append(
                    {"type": "image_url", "image_url": {"url": f"data:{src['media_type']};base64,{src['data']}"}}
                )
        messages.append({"role": msg["role"], "content": parts})
    req = {"model": model, "messages": messages, "max_tokens": body.get("max_tokens", 512), "user": record["recordId"]}
    if body.get("temperature") is not None:
        req["temperature"] = body["temperature"]
    return req


def _post(url: str, payload: dict, s: OpenAISettings) -> dict:
    data = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if s.api_key:
        headers["Authorization"] = f"Bearer {s.api_key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=s.timeout_s) as r:
        return json.loads(r.read())


def answer(record: dict, s: OpenAISettings, sleep: Callable[[float], None] = time.sleep) -> dict:
    """The `.jsonl.out` line for one record; HTTP errors after retries become a record error."""
    rid, url = record["recordId"], f"{s.base_url}/chat/completions"
    payload = chat_request(record, s.model)
    last = ""
    for i in range(s.max_attempts):
        try:
            out = _post(url, payload, s)
            if not isinstance(out, dict) or not out.get("choices"):
                raise ValueError("response has no choices")
            return formats.output_record(rid, record["modelInput"], model_output=out)
        except urllib.error.HTTPError as e:
            code = e.code
            try:
                last = json.loads(e.read()).get("error", {}).get("message", "") or e.reason
            except Exception:  # noqa: BLE001
                last = str(e.reason)
            if code in (400, 401, 403, 404, 413, 422):
                return formats.output_record(
                    rid, record["modelInput"], error={"errorCode": code, "errorMessage": f"{url}: {last}"}
                )
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as e:
            code, last = 0, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if i < s.max_attempts - 1:
            sleep(s.backoff_s * (2**i))
    return formats.output_record(
        rid,
        record["modelInput"],
        error={"errorCode": code or 503, "errorMessage": f"{url}: gave up after {s.max_attempts} attempts: {last}"},
    )


def run_openai(
    input_files: list[Path],
    out_dir: Path,
    s: OpenAISettings,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    cache=None,
) -> dict:
    """Caption every input file into `out_dir/<name>.out` + `manifest.json.out`, at most
    `s.concurrency` requests in flight. With a `caption_cache.CaptionCache`, records answered
    before are replayed and only the rest are requested; each successful answer is stored as it
    arrives (an interrupted run keeps what it paid for). Totals count the requested records."""
    with ThreadPoolExecutor(max_workers=s.concurrency) as pool:
        return answer_files(
            input_files, out_dir, cache, lambda recs: pool.map(lambda r: answer(r, s, sleep), recs), progress
        )
