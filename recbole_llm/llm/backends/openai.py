"""Any OpenAI-compatible chat-completions server: OpenAI, a vLLM or llama.cpp server, Ollama.

Requests run concurrently (bounded) and each answer is reported as it arrives, so the response cache
keeps finished work when a later request fails. Rate limits, server errors and dropped connections are
retried with exponential backoff; other client errors fail at once with what to fix.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from recbole_llm.llm.backend import Backend, Completion, LLMError, Prompt


@dataclass
class OpenAIBackend(Backend):
    """`model_id` as served at `base_url` (e.g. "http://127.0.0.1:8000/v1"), greedy (temperature 0).

    The API key is read from the environment variable named `api_key_env` at each call and never
    stored; when it is unset (local servers) no Authorization header is sent. Servers have no common
    way to read next-token logits, so `label_logits` is not supported.
    """

    kind = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 4
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0  # first retry delay; doubles on each retry
    max_backoff_s: float = 60.0

    def __post_init__(self):
        if self.max_concurrency < 1:
            raise LLMError(f"max_concurrency must be at least 1, not {self.max_concurrency}.")
        self.base_url = self.base_url.rstrip("/")
        # One model id behind two servers may be two models (quantization, revision): keep them apart.
        self.settings = {"base_url": self.base_url, **self.settings}

    def generate(
        self,
        prompts: list[Prompt],
        max_new_tokens: int,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        try:
            import httpx
        except ImportError as err:
            raise LLMError("The openai backend needs httpx: pip install 'recbole-llm[api]'.") from err
        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        results: list[Completion | None] = [None] * len(prompts)
        failure: BaseException | None = None
        stop = threading.Event()  # set by the first failure: prompts not yet sent are skipped

        def task(prompt: Prompt) -> Completion | None:
            if stop.is_set():
                return None
            try:
                return self._complete(client, prompt, max_new_tokens)
            except BaseException:
                stop.set()
                raise

        with httpx.Client(timeout=self.timeout_s, headers=headers) as client:
            pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
            try:
                futures = {pool.submit(task, prompt): i for i, prompt in enumerate(prompts)}
                for future in as_completed(futures):
                    try:
                        completion = future.result()
                    except Exception as err:
                        failure = failure or err
                        continue
                    if completion is not None:  # requests in flight at a failure still count
                        results[futures[future]] = completion
                        if on_result is not None:
                            on_result(futures[future], completion)
            finally:
                stop.set()  # Ctrl-C: send nothing more
                pool.shutdown(cancel_futures=True)
        if failure is not None:
            raise failure
        return results

    def _complete(self, client, prompt: Prompt, max_new_tokens: int) -> Completion:
        # An assistant message holding the answer prefix is not portable across servers: it ends the user
        # message instead.
        user = prompt.chat_user_text()
        system = [{"role": "system", "content": prompt.system}] if prompt.system else []
        body = {
            "model": self.model_id,
            "messages": [*system, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": max_new_tokens,
        }
        data = self._post(client, body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
            prompt_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise LLMError(f"{self._url} answered without choices[0].message.content: {data!s:.200}") from err
        return Completion(text, int(prompt_tokens or 0), int(output_tokens or 0))

    @property
    def _url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _post(self, client, body: dict) -> dict:
        """The response's JSON, retrying rate limits, server errors and network failures."""
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                response = client.post(self._url, json=body)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as err:
                problem, wait = f"{type(err).__name__}: {err}", None
            except httpx.HTTPError as err:
                raise LLMError(f"Could not send a request to {self._url} ({err}); check base_url.") from err
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return self._json(response)
                problem, wait = f"HTTP {status}: {self._detail(response)}", _retry_after(response)
            if attempt < self.max_retries:
                time.sleep(min(self.backoff_s * 2**attempt if wait is None else wait, self.max_backoff_s))
        raise LLMError(
            f"{self._url} still failing after {self.max_retries + 1} attempts ({problem}). Check that the "
            "server is up, or lower max_concurrency; with the response cache on, a rerun resumes here."
        )

    def _json(self, response) -> dict:
        if not response.is_success:
            raise self._refusal(response)
        try:
            return response.json()
        except ValueError as err:
            raise LLMError(f"{self._url} answered with invalid JSON: {response.text[:200]}") from err

    def _refusal(self, response) -> LLMError:
        """The error for a client error that retrying cannot fix, saying what to change."""
        status = response.status_code
        if status in (401, 403):
            state = "set" if os.environ.get(self.api_key_env) else "not set"
            fix = f"check the API key in the environment variable {self.api_key_env} (now {state})"
        elif status == 404:
            fix = f"check base_url ({self.base_url}, usually ending in /v1) and the model ({self.model_id})"
        else:
            fix = "the server rejected the request"
        return LLMError(f"HTTP {status} from {self._url}: {fix}. The server said: {self._detail(response)}")

    def _detail(self, response) -> str:
        """The server's error message, short, with the API key blanked should the server echo it."""
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text
        message = message[:300]
        key = os.environ.get(self.api_key_env)
        return message.replace(key, "<redacted>") if key else message


def _retry_after(response) -> float | None:
    """Seconds the server asks to wait (Retry-After as seconds or an HTTP date), if it says."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
