"""Ray replicas on this machine: 2 actors (1 thread each) return exactly what one engine returns, in input order,
and a dead replica's work is redone on the other."""

from __future__ import annotations

import pytest

from forethought.engines import Request, get_engine
from forethought.errors import UserError

ray = pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _requests() -> list[Request]:
    chat = [Request(messages=[{"role": "user", "content": f"Question {i}: plan, then answer."}], n=2,
                    temperature=1.0, max_new_tokens=10, seed=100 + i, logprobs=True) for i in range(8)]
    greedy = [Request(prompt=f"def solve(x):\n    return x * {i}", max_new_tokens=8, stop=("\n",)) for i in range(4)]
    return [r for pair in zip(chat, greedy + greedy) for r in pair]


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.prompt_tokens == y.prompt_tokens
        assert [(s.text, s.tokens, s.finish_reason) for s in x.samples] == \
               [(s.text, s.tokens, s.finish_reason) for s in y.samples]
        for s, t in zip(x.samples, y.samples):
            assert (s.logprob_sum is None) == (t.logprob_sum is None)
            if s.logprob_sum is not None:
                assert s.logprob_sum == pytest.approx(t.logprob_sum, rel=1e-4, abs=1e-4)


@pytest.fixture(scope="module")
def single(tiny_model_dir):
    return get_engine("hf", str(tiny_model_dir), device="cpu", batch_size=8).generate(_requests(), progress=False)


def test_two_replicas_match_one_engine_in_order(tiny_model_dir, local_ray, single):
    engine = get_engine("hf", str(tiny_model_dir), replicas=2, device="cpu", batch_size=8, chunk_size=3)
    try:
        out = engine.generate(_requests(), progress=False)
        stats = engine.stats()
    finally:
        engine.close()
    _same(out, single)
    assert len({s["pid"] for s in stats}) == 2
    assert all(s["served"] > 0 for s in stats), stats  # both replicas did part of the work
    assert sum(s["served"] for s in stats) == len(_requests())
    assert engine.actors == []


def test_dead_replica_work_is_retried_elsewhere(tiny_model_dir, local_ray, single):
    engine = get_engine("hf", str(tiny_model_dir), replicas=2, device="cpu", batch_size=8, chunk_size=2)
    try:
        ray.kill(engine.actors[0])
        out = engine.generate(_requests(), progress=False)
        assert engine.alive == [1]
        assert engine.stats()[0]["served"] == len(_requests())
        _same(out, single)
        ray.kill(engine.actors[1])
        with pytest.raises(RuntimeError, match="every engine replica has failed"):
            engine.generate(_requests()[:2], progress=False)
    finally:
        engine.close()


def test_user_error_inside_a_replica_is_a_user_error(tiny_model_dir, local_ray):
    engine = get_engine("hf", str(tiny_model_dir), replicas=2, device="cpu", batch_size=8)
    try:
        with pytest.raises(UserError, match="does not fit the model's context"):
            engine.generate([Request(prompt="plan " * 1500, max_new_tokens=2)], progress=False)
    finally:
        engine.close()
