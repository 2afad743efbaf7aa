"""Tests of the hf engine's decode loop against transformers' own generate and forward pass."""

from __future__ import annotations

import pytest
import torch

from forethought.engines import Request, get_engine
from forethought.engines.hf import HFEngine
from forethought.errors import UserError

PROMPTS = [
    "Janet has 16 eggs.",
    "def solve(x):",
    "Question: what is the last letter of each word in the phrase",
    "A",
    "Let's plan first: find the total, subtract what is used, then",
]


def reference(engine: HFEngine, ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation ids from plain `model.generate` for one unpadded prompt (eos included if produced)."""
    out = engine.model.generate(
        torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), do_sample=False,
        max_new_tokens=max_new_tokens, eos_token_id=sorted(engine.eos_ids), pad_token_id=engine.pad_id,
    )
    return out[0, len(ids):].tolist()


def capture_tokens(engine: HFEngine, monkeypatch) -> list[list[int]]:
    """Record the generated token ids of every finished row (in completion order)."""
    seen: list[list[int]] = []
    original = engine._finish

    def spy(row):
        seen.append(list(row.tokens))
        return original(row)

    monkeypatch.setattr(engine, "_finish", spy)
    return seen


def test_greedy_equals_generate_in_one_batch(tiny_engine, monkeypatch):
    seen = capture_tokens(tiny_engine, monkeypatch)
    requests = [Request(prompt=p, max_new_tokens=24) for p in PROMPTS]
    out = tiny_engine.generate(requests, progress=False)
    assert len({len(tiny_engine.encode(r)) for r in requests}) == len(PROMPTS)  # really different lengths
    for request, completion in zip(requests, out):
        ids = tiny_engine.encode(request)
        expected = reference(tiny_engine, ids, 24)
        assert expected in seen
        sample = completion.samples[0]
        assert completion.prompt_tokens == len(ids)
        assert sample.text == tiny_engine.tokenizer.decode(expected, skip_special_tokens=True)
        assert sample.tokens == len(expected)


def test_stop_string_cuts_text_and_counts_tokens_to_the_stop(tiny_engine):
    prompt = PROMPTS[2]
    ids = reference(tiny_engine, tiny_engine.encode(Request(prompt=prompt)), 30)
    full = tiny_engine.tokenizer.decode(ids, skip_special_tokens=True)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), "pick a visible stop string"
    cut = full.find(stop)
    needed = next(k for k in range(1, len(ids) + 1) if stop in tiny_engine.tokenizer.decode(ids[:k]))
    sample = tiny_engine.generate([Request(prompt=prompt, max_new_tokens=30, stop=("@@never@@", stop))],
                                  progress=False)[0].samples[0]
    assert sample.finish_reason == "stop"
    assert sample.text == full[:cut]
    assert stop not in sample.text
    assert sample.tokens == needed


def test_n_samples_share_one_prefill(tiny_engine, monkeypatch):
    prefills = []
    forward = tiny_engine.model.forward

    def counting(*args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefills.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_engine.model, "forward", counting)
    out = tiny_engine.generate([Request(prompt=PROMPTS[0], n=5, temperature=1.0, seed=3, max_new_tokens=12)],
                               progress=False)
    assert prefills == [1]
    samples = out[0].samples
    assert len(samples) == 5
    assert len({s.text for s in samples}) > 1
    assert all(s.tokens <= 12 for s in samples)


def test_n_larger_than_batch_size(tiny_engine):
    out = tiny_engine.generate([Request(prompt="A", n=tiny_engine.batch_size + 3, temperature=1.0, seed=1,
                                        max_new_tokens=4)], progress=False)
    assert len(out[0].samples) == tiny_engine.batch_size + 3


def test_seeded_sampling_is_reproducible_and_independent_of_batch(tiny_engine):
    target = Request(prompt=PROMPTS[1], n=3, temperature=0.9, top_p=0.9, seed=11, max_new_tokens=16)
    alone = tiny_engine.generate([target], progress=False)[0]
    others = [Request(prompt=p, n=2, temperature=1.0, seed=i, max_new_tokens=8 + 4 * i) for i, p in enumerate(PROMPTS)]
    crowded = tiny_engine.generate(others[:2] + [target] + others[2:], progress=False)[2]
    assert [s.text for s in alone.samples] == [s.text for s in crowded.samples]
    other_seed = tiny_engine.generate([Request(**{**target.__dict__, "seed": 12})], progress=False)[0]
    assert [s.text for s in other_seed.samples] != [s.text for s in alone.samples]


def test_greedy_and_sampled_rows_in_one_batch(tiny_engine, monkeypatch):
    """A batch mixing greedy and sampled rows: the greedy row equals generate, the sampled rows equal the same
    request sampled alone (an all-sampled batch takes a shorter path)."""
    greedy = Request(prompt=PROMPTS[2], max_new_tokens=12)
    sampled = Request(prompt=PROMPTS[0], n=2, temperature=0.9, seed=4, max_new_tokens=12)
    mixed = tiny_engine.generate([greedy, sampled], progress=False)
    alone = tiny_engine.generate([sampled], progress=False)[0]
    expected = reference(tiny_engine, tiny_engine.encode(greedy), 12)
    assert mixed[0].samples[0].text == tiny_engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert [s.text for s in mixed[1].samples] == [s.text for s in alone.samples]


def test_top_p_tiny_keeps_only_the_most_likely_token(tiny_engine):
    greedy = tiny_engine.generate([Request(prompt=PROMPTS[0], max_new_tokens=10)], progress=False)[0].samples[0]
    nucleus = tiny_engine.generate([Request(prompt=PROMPTS[0], temperature=1.0, top_p=1e-6, seed=5,
                                            max_new_tokens=10)], progress=False)[0].samples[0]
    assert nucleus.text == greedy.text


def test_logprobs_match_a_separate_forward_pass(tiny_engine, monkeypatch):
    seen = capture_tokens(tiny_engine, monkeypatch)
    request = Request(prompt=PROMPTS[3], temperature=0.7, seed=2, max_new_tokens=10, logprobs=True)
    sample = tiny_engine.generate([request], progress=False)[0].samples[0]
    prompt = tiny_engine.encode(request)
    ids = torch.tensor([prompt + seen[0]])
    with torch.no_grad():
        logits = tiny_engine.model(ids).logits[0, len(prompt) - 1: -1]
    expected = torch.log_softmax(logits.float(), -1).gather(1, ids[0, len(prompt):, None]).sum().item()
    assert sample.logprob_sum == pytest.approx(expected, abs=1e-3)
    assert sample.logprob_mean == pytest.approx(expected / sample.tokens, abs=1e-4)
    plain = tiny_engine.generate([Request(prompt=PROMPTS[3], max_new_tokens=3)], progress=False)[0].samples[0]
    assert plain.logprob_sum is None and plain.logprob_mean is None


def test_max_new_tokens_and_finished_rows_leaving_the_batch(tiny_engine):
    requests = [Request(prompt=p, max_new_tokens=m) for p, m in zip(PROMPTS, (3, 25, 1, 9, 17))]
    out = tiny_engine.generate(requests, progress=False)
    for request, completion in zip(requests, out):
        sample = completion.samples[0]
        solo = reference(tiny_engine, tiny_engine.encode(request), request.max_new_tokens)
        assert sample.tokens == len(solo) <= request.max_new_tokens
        assert sample.finish_reason == ("length" if solo[-1] not in tiny_engine.eos_ids else "eos")
        assert sample.text == tiny_engine.tokenizer.decode(solo, skip_special_tokens=True)


def test_chat_prefix_is_continued_without_end_of_turn(tiny_engine):
    messages = [{"role": "user", "content": "How many eggs?"}, {"role": "assistant", "content": "Let's plan first:"}]
    ids = tiny_engine.encode(Request(messages=messages))
    text = tiny_engine.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\nLet's plan first:")
    open_turn = tiny_engine.encode(Request(messages=messages[:1]))
    assert tiny_engine.tokenizer.decode(open_turn).endswith("<|im_start|>assistant\n")
    chat = tiny_engine.generate([Request(messages=messages, max_new_tokens=12)], progress=False)[0]
    raw = tiny_engine.generate([Request(prompt=text, max_new_tokens=12)], progress=False)[0]
    assert chat.samples[0].text == raw.samples[0].text
    assert chat.samples[0].text == tiny_engine.tokenizer.decode(reference(tiny_engine, ids, 12),
                                                                skip_special_tokens=True)


def test_bad_requests_and_unknown_engine_are_user_errors(tiny_model_dir):
    with pytest.raises(UserError, match="exactly one of"):
        Request(prompt="a", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(UserError, match="top_p"):
        Request(prompt="a", top_p=0)
    with pytest.raises(UserError, match="unknown engine 'vllm2'"):
        get_engine("vllm2", str(tiny_model_dir))
    engine = get_engine("hf", str(tiny_model_dir), batch_size=2)
    assert isinstance(engine, HFEngine)
    with pytest.raises(UserError, match="does not fit the model's context of 1024"):
        engine.generate([Request(prompt="step 1, " * 1024)], progress=False)


@pytest.mark.slow
def test_smollm2_greedy_equals_generate(smollm2_dir):
    engine = HFEngine(str(smollm2_dir), device="cpu")
    request = Request(messages=[{"role": "user", "content": "What is 2 + 3? Answer with one number."}],
                      max_new_tokens=40)
    sample = engine.generate([request], progress=False)[0].samples[0]
    expected = reference(engine, engine.encode(request), 40)
    assert sample.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert sample.tokens == len(expected)
    assert sample.finish_reason == ("eos" if expected[-1] in engine.eos_ids else "length")


def test_progress_bar_reports_requests_and_can_be_silenced(tiny_engine, capsys):
    tiny_engine.generate([Request(prompt="A", max_new_tokens=3)] * 2, progress=False)
    assert capsys.readouterr().err == ""
    tiny_engine.generate([Request(prompt="A", max_new_tokens=3)] * 2, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "tok/s" in err


def test_from_loaded_reuses_a_training_model_and_restores_its_mode(tiny_engine):
    model, tokenizer = tiny_engine.model, tiny_engine.tokenizer
    expected = tiny_engine.generate([Request(prompt=PROMPTS[0], max_new_tokens=8)], progress=False)
    engine = HFEngine.from_loaded(model, tokenizer, batch_size=2)
    model.train()
    modes = []
    hook = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    try:
        got = engine.generate([Request(prompt=PROMPTS[0], max_new_tokens=8)], progress=False)
        assert model.training
    finally:
        hook.remove()
        model.eval()
    assert modes and not any(modes)
    assert got[0].samples[0].text == expected[0].samples[0].text


SHARED = "Let's plan first: find the total, subtract what is used, then answer. The answer is 42. Step 1, step 2, step 3. "


def test_shared_prefix_is_encoded_once_and_matches_generate(tiny_engine, monkeypatch):
    requests = [Request(prompt=SHARED + tail, max_new_tokens=20) for tail in ("A", "Janet has 16 eggs.", "def solve(x):")]
    requests.append(Request(prompt=SHARED + "A", max_new_tokens=20))  # a duplicate prompt: encoded once too
    prefix = len(tiny_engine.encode(Request(prompt=SHARED)))
    assert prefix >= 16
    lengths = []
    hook = tiny_engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        seen = capture_tokens(tiny_engine, monkeypatch)
        out = tiny_engine.generate(requests, progress=False)
    finally:
        hook.remove()
    assert lengths[0][0] == 1 and lengths[0][1] >= prefix - 2  # the shared prefix, once
    assert lengths[1][0] == 3  # then the three distinct tails
    for request, completion in zip(requests, out):
        expected = reference(tiny_engine, tiny_engine.encode(request), 20)
        assert expected in seen
        assert completion.samples[0].text == tiny_engine.tokenizer.decode(expected, skip_special_tokens=True)


def forward_shapes(engine: HFEngine) -> tuple[list[tuple], object]:
    """Record the input_ids shape of every forward pass; returns the list and the hook (remove it when done)."""
    shapes: list[tuple] = []
    hook = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    return shapes, hook


@pytest.mark.parametrize("shared", ["", SHARED])
def test_prefill_in_length_sorted_passes_matches_generate(tiny_engine, monkeypatch, shared):
    """With a small prefill budget the prompts are encoded in several passes, each padded only to its own longest
    prompt (longest first), then joined; every output still equals generate and keeps its request's order."""
    requests = [Request(prompt=shared + p, max_new_tokens=16) for p in PROMPTS]
    ids = [tiny_engine.encode(r) for r in requests]
    common = next(k for k in range(len(ids[0])) if len({tuple(i[: k + 1]) for i in ids}) > 1)
    tails = [len(i) - (common if shared else 0) for i in ids]
    budget, tiny_engine.prefill_tokens = tiny_engine.prefill_tokens, max(tails) + 1
    shapes, hook = forward_shapes(tiny_engine)
    try:
        seen = capture_tokens(tiny_engine, monkeypatch)
        out = tiny_engine.generate(requests, progress=False)
    finally:
        hook.remove()
        tiny_engine.prefill_tokens = budget
    prefill = [s for s in shapes if s[1] > 1][1 if shared else 0:]  # after the shared prefix, if any
    assert len(prefill) >= 3 and sum(s[0] for s in prefill) == len(PROMPTS)
    assert all(rows * width <= max(tails) + 1 or rows == 1 for rows, width in prefill)  # each pass within budget
    assert [w for _, w in prefill] == sorted((w for _, w in prefill), reverse=True)  # longest first
    assert sum(r * w for r, w in prefill) < len(PROMPTS) * prefill[0][1]  # less padding than one pass
    for request, completion in zip(requests, out):
        expected = reference(tiny_engine, tiny_engine.encode(request), 16)
        assert expected in seen
        assert completion.samples[0].text == tiny_engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_prefill_passes_give_the_one_pass_cache_in_the_callers_order(tiny_engine, monkeypatch):
    """Prompts not sorted by length: the joined passes give the same logits, mask and cached keys, row for row;
    with the shared prefix kept once the logits are the same too, and the cache holds only the tails."""
    from forethought.engines import hf

    monkeypatch.setattr(hf, "MIN_SHARED_KV", 16)  # the tiny prompts' prefix is shorter than the default
    prompts = [tiny_engine.encode(Request(prompt=SHARED + p)) for p in (PROMPTS[3], PROMPTS[2], PROMPTS[0])]
    shared = next(k for k in range(len(prompts[0])) if len({tuple(p[: k + 1]) for p in prompts}) > 1)
    budget, kept = tiny_engine.prefill_tokens, tiny_engine.shared_kv
    try:
        with torch.inference_mode(), tiny_engine._attention():
            tiny_engine.prefill_tokens, tiny_engine.shared_kv = None, False
            one = tiny_engine._prefill(prompts, 4)
            tiny_engine.prefill_tokens = 1
            split = tiny_engine._prefill(prompts, 4)
        tiny_engine.shared_kv = True
        with torch.inference_mode(), tiny_engine._attention():
            once = tiny_engine._prefill(prompts, 4)
    finally:
        tiny_engine.prefill_tokens, tiny_engine.shared_kv = budget, kept
    assert one[1].sum(-1).tolist() == split[1].sum(-1).tolist() == [len(p) for p in prompts]
    assert once[1].sum(-1).tolist() == [len(p) - shared for p in prompts] and once[2].shared_prefix.length == shared
    assert torch.allclose(one[0], split[0], atol=1e-4) and torch.allclose(one[0], once[0], atol=1e-4)
    for a, b, c in zip(one[2].layers, split[2].layers, once[2].layers):  # each row's attended keys, in order
        for row in range(len(prompts)):
            keys = a.keys[row][:, one[1][row].bool()]
            assert torch.allclose(keys, b.keys[row][:, split[1][row].bool()], atol=1e-4)
            assert torch.allclose(keys[:, shared:], c.keys[row][:, once[1][row].bool()], atol=1e-4)


def test_prefill_passes_split_by_padded_tokens(tiny_engine):
    budget = tiny_engine.prefill_tokens
    try:
        tiny_engine.prefill_tokens = 20
        assert tiny_engine._passes([10, 9, 7, 7, 30, 3]) == [[0, 1], [2, 3], [4], [5]]
        tiny_engine.prefill_tokens = None
        assert tiny_engine._passes([10, 9, 7]) == [[0, 1, 2]]
    finally:
        tiny_engine.prefill_tokens = budget


@pytest.mark.parametrize("share_prefix,preallocate", [(False, False), (True, True)])
def test_seeded_sampling_is_the_same_with_or_without_the_fast_paths(tiny_engine, share_prefix, preallocate):
    requests = [Request(prompt=SHARED + tail, max_new_tokens=16, temperature=0.8, seed=3, n=2)
                for tail in ("A", "Janet has 16 eggs.")]
    fast = [[s.text for s in c.samples] for c in tiny_engine.generate(requests, progress=False)]
    tiny_engine.share_prefix, tiny_engine.preallocate = share_prefix, preallocate
    try:
        plain = [[s.text for s in c.samples] for c in tiny_engine.generate(requests, progress=False)]
    finally:
        tiny_engine.share_prefix = tiny_engine.preallocate = True
    assert fast == plain
    assert fast == [[s.text for s in c.samples] for c in tiny_engine.generate(requests, progress=False)]


def test_growing_cache_writes_in_place_and_keeps_rows(tiny_engine):
    from forethought.engines.kv_cache import GrowingLayer

    layer = GrowingLayer(capacity=4)
    k = torch.arange(2 * 3 * 2 * 1, dtype=torch.float32).reshape(2, 3, 2, 1)
    keys, _ = layer.update(k, k + 100)
    buffer = layer._keys
    keys, values = layer.update(k[:, :, :1] + 1000, k[:, :, :1])
    assert layer._keys is buffer and keys.shape == (2, 3, 3, 1) and layer.get_seq_length() == 3  # no copy
    assert torch.equal(keys[:, :, :2], k) and torch.equal(keys[:, :, 2:], k[:, :, :1] + 1000)
    keys, _ = layer.update(k, k)  # past capacity: grows, keeps what was there
    assert keys.shape[-2] == 5 and torch.equal(keys[:, :, :2], k)
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys[0, :, :2], k[1]) and layer.keys.shape[0] == 1


@pytest.mark.slow
def test_smollm2_batched_greedy_equals_generate(smollm2_dir):
    """The embedded model, a batch of chat prompts (shared system-prompt prefix, different lengths), token for token."""
    engine = HFEngine(str(smollm2_dir), device="cpu")
    questions = ["What is 2 + 3? Answer with one number.", "Name a colour.",
                 "Tom has 3 apples and buys 4 more. How many apples does he have now?"]
    requests = [Request(messages=[{"role": "user", "content": q}], max_new_tokens=24) for q in questions]
    for request, completion in zip(requests, engine.generate(requests, progress=False)):
        expected = reference(engine, engine.encode(request), 24)
        assert completion.samples[0].text == engine.tokenizer.decode(expected, skip_special_tokens=True)


@pytest.mark.slow
def test_smollm2_shared_prefix_attention_and_prefill_passes_equal_generate(smollm2_dir):
    """The embedded model with a long shared prefix (two worked demonstrations, kept once) and the prompts' tails
    prefilled in several passes: greedy tokens equal generate, prompt by prompt."""
    from forethought import plans
    from forethought.engines import hf
    from forethought.tasks import get_task

    engine = HFEngine(str(smollm2_dir), device="cpu")
    task = get_task("synthetic/arithmetic", difficulty=2)
    demos = plans.demo_messages(task.demos(2), "natural", "number")
    work = task.demos(5)[2:]
    requests = [Request(messages=demos + plans.solve_with_plan_messages(d.question, d.plan, "number"),
                        max_new_tokens=20) for d in work]
    ids = [engine.encode(r) for r in requests]
    shared = next(k for k in range(min(map(len, ids))) if len({i[k] for i in ids}) > 1)
    assert shared >= hf.MIN_SHARED_KV and engine.shared_kv
    engine.prefill_tokens = max(len(i) for i in ids) - shared  # one tail per pass
    calls = []
    hook = engine.model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(module.config._attn_implementation), with_kwargs=True)
    try:
        out = engine.generate(requests, progress=False)
    finally:
        hook.remove()
    assert hf.shared_prefix.NAME in calls
    for request, completion in zip(requests, out):
        expected = reference(engine, engine.encode(request), 20)
        assert completion.samples[0].text == engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_shared_prefix_attention_equals_sdpa_over_the_whole_sequence():
    """The split softmax over (prefix kept once, each row's masked tail) equals plain attention over prefix + tail."""
    from types import SimpleNamespace

    from forethought.engines.shared_prefix import SharedPrefix, attention

    torch.manual_seed(0)
    batch, heads, kv_heads, queries, prefix, tail, dim = 3, 6, 2, 4, 7, 5, 8
    q = torch.randn(batch, heads, queries, dim)
    head_k, head_v = torch.randn(kv_heads, prefix, dim), torch.randn(kv_heads, prefix, dim)
    k, v = torch.randn(batch, kv_heads, tail, dim), torch.randn(batch, kv_heads, tail, dim)
    mask = torch.rand(batch, 1, queries, tail) > 0.4
    mask[0, 0, 0] = False  # a query that sees no tail key at all (a padding position) still sees the prefix
    module = SimpleNamespace(layer_idx=1, num_key_value_groups=heads // kv_heads)
    shared = SharedPrefix([torch.zeros_like(head_k), head_k], [torch.zeros_like(head_v), head_v], prefix)
    out, _ = attention(module, q, k, v, mask, scaling=0.3, shared_prefix=shared)
    whole_k = torch.cat([head_k.expand(batch, -1, -1, -1), k], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    whole_v = torch.cat([head_v.expand(batch, -1, -1, -1), v], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    whole_mask = torch.cat([torch.ones(batch, 1, queries, prefix, dtype=torch.bool), mask], dim=-1)
    expected = torch.nn.functional.scaled_dot_product_attention(q, whole_k, whole_v, attn_mask=whole_mask, scale=0.3)
    assert out.shape == (batch, queries, heads, dim)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-5)


def test_shared_kv_keeps_the_prefix_once_and_matches_generate(tiny_engine, monkeypatch):
    """Decoding with the shared prefix kept once: the attention sees only the rows' tails as keys, outputs equal
    generate, and seeded samples equal those with a copy of the prefix per row."""
    from transformers import AttentionInterface

    from forethought.engines import hf, shared_prefix

    monkeypatch.setattr(hf, "MIN_SHARED_KV", 16)  # the tiny prompts' prefix is shorter than the default
    calls = []

    def spy(module, query, key, value, mask, **kwargs):
        if kwargs.get("shared_prefix") is not None:
            calls.append((key.shape[2], kwargs["shared_prefix"].length))
        return shared_prefix.attention(module, query, key, value, mask, **kwargs)

    greedy = [Request(prompt=SHARED + tail, max_new_tokens=12) for tail in ("A", "Janet has 16 eggs.")]
    sampled = [Request(prompt=SHARED + "def solve(x):", max_new_tokens=12, temperature=0.8, seed=5, n=4)]
    AttentionInterface.register(shared_prefix.NAME, spy)
    try:
        seen = capture_tokens(tiny_engine, monkeypatch)
        out = tiny_engine.generate(greedy, progress=False)
        once = [s.text for s in tiny_engine.generate(sampled, progress=False)[0].samples]
    finally:
        AttentionInterface.register(shared_prefix.NAME, shared_prefix.attention)
    assert calls and all(keys < prefix for keys, prefix in calls)  # tails only: the prefix is not in the cache
    assert tiny_engine.model.config._attn_implementation == "sdpa"  # restored after the call
    for request, completion in zip(greedy, out):
        expected = reference(tiny_engine, tiny_engine.encode(request), 12)
        assert expected in seen
        assert completion.samples[0].text == tiny_engine.tokenizer.decode(expected, skip_special_tokens=True)
    tiny_engine.shared_kv = False
    try:
        copied = [s.text for s in tiny_engine.generate(sampled, progress=False)[0].samples]
    finally:
        tiny_engine.shared_kv = True
    assert once == copied and len(set(once)) > 1


def test_shared_kv_reaches_a_peft_wrapped_model(tiny_model_dir, monkeypatch):
    """A learner's LoRA model wrapped by from_loaded: the shared-prefix attention is switched on where the attention
    layers read it (their config), and samples equal those with a copy of the prefix per row."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forethought.engines import hf

    monkeypatch.setattr(hf, "MIN_SHARED_KV", 16)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    engine = HFEngine.from_loaded(model, AutoTokenizer.from_pretrained(tiny_model_dir), batch_size=8)
    seen = []
    hook = base.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(module.config._attn_implementation), with_kwargs=True)
    requests = [Request(prompt=SHARED + "def solve(x):", max_new_tokens=10, temperature=0.8, seed=2, n=3)]
    try:
        once = [s.text for s in engine.generate(requests, progress=False)[0].samples]
        engine.shared_kv = False
        copied = [s.text for s in engine.generate(requests, progress=False)[0].samples]
    finally:
        hook.remove()
    assert hf.shared_prefix.NAME in seen and once == copied


def test_recipe_engine_settings_reach_the_hf_engine(tiny_model_dir):
    from forethought.config import validate
    from forethought.engines.settings import EngineSettings

    settings = validate(EngineSettings, {"prefill_tokens": 512, "shared_kv": False, "continuous": True}, "r.yaml")
    engine = get_engine(settings.kind, str(tiny_model_dir), **settings.options())
    assert (engine.prefill_tokens, engine.shared_kv, engine.continuous) == (512, False, True)
    default = get_engine("hf", str(tiny_model_dir), device="cpu")
    assert (default.prefill_tokens, default.shared_kv, default.continuous) == (1024, True, False)


def test_the_kv_cache_goes_by_the_argument_the_installed_transformers_names(tiny_engine):
    import inspect
    import warnings

    from forethought.engines.hf import cache_argument

    expected = "cache" if "cache" in inspect.signature(tiny_engine.model.forward).parameters else "past_key_values"
    assert cache_argument(tiny_engine.model) == expected
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*deprecated")  # removed in transformers 5.40
        out = tiny_engine.generate([Request(prompt=PROMPTS[0], max_new_tokens=4, temperature=0.0)], progress=False)
    assert 1 <= out[0].samples[0].tokens <= 4
