"""The openai engine against real OpenAI-compatible servers: llama-cpp-python's server on 127.0.0.1 serving the
embedded SmolLM2 GGUF (started by the test). Chat and completion endpoints, n > 1, stop strings, log-probs,
load balancing over two servers, retries past a dead one, the API key kept out of logs, and engine.launch."""

from __future__ import annotations

import importlib.util
import logging
import urllib.request

import pytest

from forethought.engines import Request, get_engine
from forethought.engines.server import ManagedServer, free_port
from forethought.errors import UserError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python[server] is not installed (make install-test installs it; it compiles for minutes)",
)
SERVE = ("{python} -m llama_cpp.server --model {gguf} --host {host} --port {port} --n_threads 1 --n_ctx 2048 "
         "--logits_all true")  # logits_all: llama-cpp-python gives log-probs only with it
KEY = "sk-forethought-test-0123456789"


def _requests_to(server: ManagedServer) -> int:
    return server.log_path.read_text(errors="replace").count('"POST /v1/')


@pytest.fixture(scope="module")
def servers(smollm2_dir):
    """Two llama.cpp servers on free loopback ports, one thread each."""
    with ManagedServer.from_template(SERVE, "smollm2-135m", ready_timeout=180) as a, \
            ManagedServer.from_template(SERVE, "smollm2-135m", ready_timeout=180) as b:
        yield a, b


@pytest.fixture(scope="module")
def engine(servers):
    return get_engine("openai", "smollm2", base_urls=[servers[0].base_url], max_concurrency=2)


def test_chat_n_samples_logprobs_and_seeds(engine):
    ask = dict(messages=[{"role": "user", "content": "Name a colour."}], n=3, temperature=1.0, max_new_tokens=12,
               seed=7, logprobs=True)
    first, again = engine.generate([Request(**ask), Request(**ask)], progress=False)
    assert len(first.samples) == 3  # llama.cpp ignores n: the engine asked again for the rest
    assert first.prompt_tokens > 5
    for s in first.samples:
        assert 1 <= s.tokens <= 12
        assert s.finish_reason in ("eos", "length")
        assert s.logprob_sum < 0 and s.logprob_mean == pytest.approx(s.logprob_sum / s.tokens)
    assert [s.text for s in first.samples] == [s.text for s in again.samples]  # seeded: reproducible
    assert len({s.text for s in first.samples}) > 1  # each extra sample got its own seed


def test_completion_endpoint_stop_strings_and_length(engine):
    stop, cut = engine.generate([
        Request(prompt="1, 2, 3, 4,", max_new_tokens=16, stop=(" 7",)),
        Request(prompt="1, 2, 3, 4,", max_new_tokens=3),
    ], progress=False)
    assert stop.samples[0].finish_reason == "stop"
    assert stop.samples[0].text.strip().startswith("5, 6") and " 7" not in stop.samples[0].text
    assert stop.samples[0].logprob_sum is None  # not asked for
    assert cut.samples[0].finish_reason == "length" and cut.samples[0].tokens == 3


def test_requests_are_balanced_over_two_servers(servers):
    a, b = servers
    before = _requests_to(a), _requests_to(b)
    engine = get_engine("openai", "smollm2", base_urls=[a.base_url, b.base_url], max_concurrency=4)
    reqs = [Request(prompt=f"{i}, {i + 1}, {i + 2},", max_new_tokens=4, seed=i) for i in range(8)]
    out = engine.generate(reqs, progress=False)
    assert [len(c.samples) for c in out] == [1] * 8
    got = _requests_to(a) - before[0], _requests_to(b) - before[1]
    assert sum(got) == 8 and min(got) >= 2, got
    single = get_engine("openai", "smollm2", base_urls=[a.base_url]).generate(reqs, progress=False)
    assert [c.samples[0].text for c in out] == [c.samples[0].text for c in single]  # results keep input order


def test_a_dead_server_is_retried_on_a_live_one(servers):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engine = get_engine("openai", "smollm2", base_urls=[dead, servers[1].base_url], backoff=0.01, max_retries=2)
    out = engine.generate([Request(prompt="a, b, c,", max_new_tokens=3) for _ in range(4)], progress=False)
    assert all(c.samples[0].tokens == 3 for c in out)
    alone = get_engine("openai", "smollm2", base_urls=[dead], backoff=0.01, max_retries=1)
    with pytest.raises(UserError, match="cannot reach .* after 2 tries"):
        alone.generate([Request(prompt="a", max_new_tokens=2)], progress=False)


def test_api_key_comes_from_the_environment_and_is_never_logged(smollm2_dir, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with ManagedServer.from_template(SERVE + f" --api_key {KEY}", "smollm2-135m", ready_timeout=180) as server:
        monkeypatch.setenv("FT_TEST_KEY", KEY)
        engine = get_engine("openai", "smollm2", base_urls=[server.base_url], api_key_env="FT_TEST_KEY")
        assert engine.generate([Request(prompt="x, y,", max_new_tokens=2)], progress=False)[0].samples[0].tokens
        assert KEY not in repr(engine) and KEY not in str(vars(engine))
        monkeypatch.setenv("FT_TEST_KEY", "sk-wrong")
        with pytest.raises(UserError, match=r"HTTP 401.*FT_TEST_KEY") as refused:
            engine.generate([Request(prompt="x", max_new_tokens=2)], progress=False)
        assert "sk-wrong" not in str(refused.value)
    assert caplog.records and not any(KEY in r.getMessage() for r in caplog.records)
    monkeypatch.delenv("FT_TEST_KEY")
    with pytest.raises(UserError, match=r"\$FT_TEST_KEY, which is not set"):
        get_engine("openai", "smollm2", base_urls=[server.base_url], api_key_env="FT_TEST_KEY")


def test_launch_serves_the_model_and_close_stops_it(smollm2_dir):
    engine = get_engine("openai", "smollm2-135m", launch=SERVE)
    url = engine.base_urls[0]
    try:
        out = engine.generate([Request(messages=[{"role": "user", "content": "Hi"}], max_new_tokens=4)],
                              progress=False)
        assert out[0].samples[0].tokens >= 1
    finally:
        engine.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/models", timeout=5)


def test_cli_eval_through_a_server(servers, tmp_path):
    import json

    from typer.testing import CliRunner

    from forethought.cli import app

    runner = CliRunner()
    args = ["eval", "--task", "synthetic/arithmetic", "--limit", "3", "--max-new-tokens", "8", "--quiet",
            "--engine", "openai", "--engine-opt", f"base_urls=[{servers[0].base_url}]", "--output", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(1 <= r["tokens"] <= 8 for r in records)
    bad = runner.invoke(app, args[:-4] + ["--engine-opt", "batch_size=4", "--output", str(tmp_path / "x")])
    assert isinstance(bad.exception, UserError)  # the entry point prints it as one line and exits with 2
    assert "batch_size does not apply to engine.kind=openai" in str(bad.exception)
