"""CPL search: step parsing, PUCT and backup on hand-built trees, pair/path extraction, batched search."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from forethought.engines.base import Completion, Sample
from forethought.jsonl import read_jsonl
from forethought.search import ExtractConfig, SearchConfig, Tree, extract, run_search
from forethought.plans import steps
from forethought.search.extract import pairs, sft_paths, value_targets
from forethought.tasks import get_task
from forethought.tasks.base import Example


def test_parse_steps_solutions_and_malformed():
    step = steps.parse("<step>Plan 1: add the parts</step>"[: -len("</step>")], "stop")
    assert step == steps.Action("step", "\n<step>Plan 1: add the parts</step>")
    sol = steps.parse("\n</plan>\n<solution>3 + 4 = 7. The answer is 7.", "stop")
    assert sol.kind == "solution" and steps.solution_text(sol.text) == "3 + 4 = 7. The answer is 7."
    assert steps.parse("</plan><solution>The answer is 7.", "eos").kind == "solution"  # eos before the tag
    for text, finish in [("<step>Plan 1: half a step", "length"), ("The answer is 7.", "eos"),
                         ("<step></step>", "stop"), ("chatter <solution>7", "stop"),
                         ("</plan><solution>The answer", "length"), ("<step>a <step>b", "stop")]:
        assert steps.parse(text, finish).kind == "malformed", text


def test_demonstrations_render_in_the_step_format():
    task = get_task("synthetic/arithmetic", difficulty=1)
    demo = task.demos(1)[0]
    turns = steps.messages("What is 2 + 2?", "number", [demo])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    text = turns[1]["content"]
    assert text.startswith("<plan>\n<step>Plan 1: ") and text.endswith("</solution>")
    assert text.count("<step>") == len([s for s in demo.plan.splitlines() if s.strip()])


def hand_tree() -> Tree:
    """root -> a (step, prior .5), b (step, prior .9), c (solution, prior .2); visits backed up by hand."""
    tree = Tree("q")
    a = tree.add(0, "step", "\n<step>a</step>", 0.5)
    b = tree.add(0, "step", "\n<step>b</step>", 0.9)
    c = tree.add(0, "solution", "\n</plan>\n<solution>c</solution>", 0.2)
    tree.backup(a, 1.0)
    tree.backup(a, 1.0)
    tree.backup(b, -1.0)
    c.reward = 1.0
    tree.backup(c, 1.0)
    return tree


def test_backup_updates_every_ancestor_and_q_is_w_over_n():
    tree = hand_tree()
    root, a, b, c = tree.nodes
    assert (root.N, root.W) == (4, 2.0)
    assert root.N == sum(n.N for n in (a, b, c))  # every visit went through one child
    assert (a.Q, b.Q, c.Q) == (1.0, -1.0, 1.0)
    d = tree.add(a.id, "step", "\n<step>d</step>", 0.4)
    assert d.depth == 2 and d.Q == 0.0  # unvisited: Q = 0
    tree.backup(d, -0.5)
    assert (d.N, a.N, root.N) == (1, 3, 5) and a.W == 1.5 and root.W == 1.5


def test_puct_selection_matches_hand_computed_scores():
    tree = hand_tree()
    root, a, b, c = tree.nodes
    # Q + 1.5 * prior * sqrt(N(root) = 4) / (1 + N(child))
    expected = {a.id: 1 + 1.5 * 0.5 * 2 / 3, b.id: -1 + 1.5 * 0.9 * 2 / 2, c.id: 1 + 1.5 * 0.2 * 2 / 2}
    for child in (a, b, c):
        assert tree.puct(child, root, 1.5) == pytest.approx(expected[child.id])
    assert tree.select(1.5) is a  # 1.50 beats 1.30 (c) and 0.35 (b); a has no children, so it is the leaf
    d = tree.add(a.id, "step", "\n<step>d</step>", 0.4)
    e = tree.add(a.id, "step", "\n<step>e</step>", 0.1)
    assert tree.select(1.5) is d  # unvisited children: the larger prior wins (0.85 vs 0.21)
    # with no exploration the best Q wins, and a terminal node is returned as it is
    tree.backup(d, -1.0)
    tree.backup(e, -1.0)
    assert tree.select(0.0) is c
    assert Tree.from_json(tree.to_json()).to_json() == tree.to_json()


def extraction_tree() -> Tree:
    tree = Tree("q")
    s1 = tree.add(0, "step", "\n<step>good</step>", 0.6)
    s2 = tree.add(0, "step", "\n<step>bad</step>", 0.6)
    s3 = tree.add(0, "step", "\n<step>so-so</step>", 0.6)
    win = tree.add(s1.id, "solution", "\n</plan>\n<solution>The answer is 7.</solution>", 0.5)
    lose = tree.add(s1.id, "solution", "\n</plan>\n<solution>The answer is 8.</solution>", 0.5)
    junk = tree.add(s1.id, "malformed", "no tags", 0.5)
    for node, value in [(win, 1.0), (win, 1.0), (lose, -1.0), (junk, -1.0), (s2, -1.0), (s3, 0.2)]:
        if node.terminal:
            node.reward = value
        tree.backup(node, value)
    return tree


def test_pairs_paths_and_value_targets_on_a_hand_built_tree():
    tree = extraction_tree()
    root, s1, s2, s3, win, lose, junk = tree.nodes
    assert s1.Q == 0.0 and s2.Q == -1.0 and s3.Q == pytest.approx(0.2)  # s1: +1 +1 -1 -1
    got = [(p.id, w.id, lose_.id, round(qw, 6), round(ql, 6), kind) for p, w, lose_, qw, ql, kind in
           pairs(tree, ExtractConfig())]
    # s1 has Q = 0, so among the root's steps only s3 (Q > 0) vs s2 (Q < 0) pairs; under s1, best vs worst
    # solution (ties on Q broken by the earlier node), Q values scaled by 0.3
    assert got == [(0, s3.id, s2.id, 0.2, -1.0, "step"), (s1.id, win.id, lose.id, 0.3, -0.3, "solution")]
    assert [[n.id for n in p] for p in sft_paths(tree, ExtractConfig())] == [[s1.id, win.id]]
    assert [n.id for n in value_targets(tree)] == [s1.id]
    no_solutions = ExtractConfig(solution_pairs=False, max_sft_paths=0)
    assert len(pairs(tree, no_solutions)) == 1 and sft_paths(tree, no_solutions) == []
    # a path through a node with Q = -1 is not an SFT path
    bad_win = tree.add(s2.id, "solution", "\n</plan>\n<solution>The answer is 7.</solution>", 0.5)
    bad_win.reward = 1.0
    tree.backup(bad_win, 1.0)
    tree.backup(s2, -1.0)
    tree.backup(s2, -1.0)  # s2: (-1 + 1 - 1 - 1) / 4 > -1, so it no longer blocks
    assert len(sft_paths(tree, ExtractConfig())) == 2


def test_extract_rows_follow_the_data_contract():
    tree = extraction_tree()
    ex = Example("q", "What is 3 + 4?", "7")
    sft, pair_rows, value_rows = extract([tree], [ex], "number")
    assert sft[0]["messages"][-1] == {"role": "assistant", "content":
                                      "<plan>\n<step>good</step>\n</plan>\n<solution>The answer is 7.</solution>"}
    assert "What is 3 + 4?" in sft[0]["messages"][0]["content"]
    step_pair = pair_rows[0]
    assert step_pair["prefix"] == "<plan>" and step_pair["chosen"] == "\n<step>so-so</step>"
    assert pair_rows[1]["prefix"] == "<plan>\n<step>good</step>" and pair_rows[1]["kind"] == "solution"
    assert value_rows == [{"messages": sft[0]["messages"][:-1], "prefix": "<plan>\n<step>good</step>", "q": 0.0,
                           "question_id": "q"}]


class StepEngine:
    """Scripted: steps until two are written, then a solution answering 7; one duplicate per expansion."""

    name = "scripted-steps"

    def __init__(self):
        self.calls = []

    def generate(self, requests, *, progress=True):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            prefix = r.messages[-1]["content"]
            depth = steps.step_count(prefix)
            samples = []
            for k in range(r.n):
                if depth < 2:
                    text, finish = f"<step>Plan {depth + 1}: idea {min(k, r.n - 2)}", "stop"  # last two equal
                else:
                    text, finish = ("</plan><solution>The answer is 7.", "stop") if k == 0 else ("oops", "length")
                samples.append(Sample(text, 5, finish, logprob_sum=-0.5 * 5, logprob_mean=-0.5))
            out.append(Completion(samples, prompt_tokens=10))
        return out


def test_batched_search_one_engine_call_per_round_for_all_trees(tmp_path):
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example(f"q{i}", f"Question {i}?", "7" if i % 2 == 0 else "8") for i in range(3)]
    cfg = SearchConfig(iterations=6, root_children=3, children=2)
    engine = StepEngine()
    trees, stats = run_search(engine, task, examples, cfg, out=tmp_path / "trees.jsonl")
    assert stats.engine_calls == len(engine.calls) <= cfg.iterations
    assert all(len(call) <= len(examples) for call in engine.calls)
    assert len(engine.calls[0]) == 3 and {r.n for r in engine.calls[0]} == {3}  # every root, 5->3 children
    assert all(t.iterations == 6 for t in trees)
    for tree in trees:
        root = tree.root
        assert len(root.children) == 2  # three samples, the last two identical: one dropped
        assert all(tree.nodes[c].prior == pytest.approx(math.exp(-0.5)) for c in root.children)
        solutions = [n for n in tree.nodes if n.kind == "solution"]
        assert solutions and all(n.reward == (1.0 if tree.question_id in ("q0", "q2") else -1.0) for n in solutions)
        assert all(n.reward == -1.0 for n in tree.nodes if n.kind == "malformed")
    assert stats.solved == 2 and stats.tokens == 5 * sum(r.n for call in engine.calls for r in call)
    # resume: everything is read back, nothing is generated again
    again = StepEngine()
    trees2, _ = run_search(again, task, examples, cfg, out=tmp_path / "trees.jsonl")
    assert again.calls == [] and [t.to_json() for t in trees2] == [t.to_json() for t in trees]
    # one tree at a time: same trees (seeded per node), one call per expansion
    single = StepEngine()
    trees3, stats3 = run_search(single, task, examples, cfg, batched=False)
    assert [t.to_json() for t in trees3] == [t.to_json() for t in trees]
    assert all(len(call) == 1 for call in single.calls) and stats3.expansions == stats.expansions


def test_value_function_scores_new_steps_and_depth_limit_is_a_failure():
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example("q0", "Question 0?", "7")]
    seen = []

    def value_fn(states):
        seen.extend(states)
        return [0.25] * len(states)

    cfg = SearchConfig(iterations=4, root_children=2, children=2, max_depth=1)
    trees, _ = run_search(StepEngine(), task, examples, cfg, value_fn=value_fn)
    tree = trees[0]
    steps_ = [n for n in tree.nodes if n.kind == "step"]
    assert steps_ and all(n.value == 0.25 for n in steps_) and all(n.depth <= 1 for n in steps_)
    assert all(prefix.startswith("<plan>") for _, prefix in seen)
    too_deep = [n for n in tree.nodes if n.kind == "malformed" and n.text.startswith("\n<step>")]
    assert too_deep and all(n.reward == -1.0 for n in too_deep)  # a second step is deeper than max_depth=1


def test_value_fn_reads_the_zero_shot_state_that_extract_writes_for_the_node():
    """The value model is queried on what it is trained on: the search prompt's demonstrations are left out."""
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example("q0", "Question 0?", "7")]
    seen = []

    def value_fn(states):
        seen.extend(states)
        return [0.25] * len(states)

    engine = StepEngine()
    trees, _ = run_search(engine, task, examples, SearchConfig(iterations=6, root_children=3, children=2, demos=1),
                          value_fn=value_fn)
    assert all(len(r.messages) == 4 for call in engine.calls for r in call)  # the policy still sees the demo
    _, _, value_rows = extract(trees, examples, task.answer_type)
    assert value_rows and seen
    for row in value_rows:
        assert (row["messages"], row["prefix"]) in seen
    assert all(messages == value_rows[0]["messages"] for messages, _ in seen)


class SeededEngine(StepEngine):
    """StepEngine whose step texts depend on each request's seed; raises on call `fail_at` (a killed search)."""

    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.fail_at = fail_at

    def generate(self, requests, *, progress=True):
        if len(self.calls) == self.fail_at:
            raise RuntimeError("killed")
        out = super().generate(requests, progress=progress)
        for r, completion in zip(requests, out):
            for s in completion.samples:
                if s.text.startswith("<step>"):
                    s.text += f" (seed {r.seed % 97})"
        return out


def test_a_search_killed_mid_batch_resumes_to_the_uninterrupted_result(tmp_path):
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example(f"q{i}", f"Question {i}?", "7") for i in range(5)]
    cfg = SearchConfig(iterations=5, root_children=3, children=2, trees_per_batch=2)
    whole, _ = run_search(SeededEngine(), task, examples, cfg, seed=3)
    out = tmp_path / "trees.jsonl"
    # 5 rounds per batch of 2 trees: call 7 is inside the second batch, after the first was written
    with pytest.raises(RuntimeError, match="killed"):
        run_search(SeededEngine(fail_at=7), task, examples, cfg, out=out, seed=3)
    assert [t["question_id"] for _, t in read_jsonl(out)] == ["q0", "q1"]
    resumed_engine = SeededEngine()
    resumed, stats = run_search(resumed_engine, task, examples, cfg, out=out, seed=3)
    assert {r.messages[-2]["content"] for call in resumed_engine.calls for r in call}.isdisjoint(
        {m["content"] for e in examples[:2] for m in steps.messages(e.question, task.answer_type)})
    assert [t.to_json() for t in resumed] == [t.to_json() for t in whole]
    assert [t["question_id"] for _, t in read_jsonl(out)] == [e.id for e in examples]
    assert stats.tokens == sum(t.tokens for t in whole)


def test_the_run_seed_feeds_every_request_seed():
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example("q0", "Question 0?", "7"), Example("q1", "Question 1?", "7")]
    cfg = SearchConfig(iterations=3, root_children=3, children=2)
    seeds = {}
    for seed in (0, 1, 1):
        engine = StepEngine()
        run_search(engine, task, examples, cfg, seed=seed)
        seeds.setdefault(seed, []).append([r.seed for call in engine.calls for r in call])
    assert seeds[1][0] == seeds[1][1]  # same run seed, same request seeds
    assert len(set(seeds[0][0])) == len(seeds[0][0])  # one seed per (question, node)
    assert set(seeds[0][0]).isdisjoint(seeds[1][0])
    with pytest.raises(ValidationError):
        SearchConfig(seed=1)  # one seed per run: the recipe's top-level seed, passed to run_search


def test_eval_with_the_steps_format_reads_the_solution():
    from forethought.evaluate import evaluate

    class Fixed:
        name = "fixed"

        def generate(self, requests, *, progress=True):
            assert all(r.messages[-1] == {"role": "assistant", "content": "<plan>"} for r in requests)
            texts = ["\n<step>Plan 1: add</step>\n</plan>\n<solution>The answer is 7.", "The answer is 7.",
                     "\n<step>Plan 1: 7 is the answer</step>\n</plan>\n<solution>The answer is 8."]
            return [Completion([Sample(t, 3, "stop")], 5) for t in texts]

    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example(f"q{i}", f"Question {i}?", "7") for i in range(3)]
    result = evaluate(Fixed(), task, examples, model_name="m", plan_format="steps")
    assert [r["correct"] for r in result.records] == [True, True, False]  # the plan's 7 is not read in the third
    assert result.records[0]["plan"].endswith("</plan>\n") and result.records[1]["plan"] is None


def test_tree_page_nests_escapes_and_shows_values():
    from forethought.report.tree import trees_html

    tree = extraction_tree()
    tree.nodes[1].text = "\n<step><script>alert(1)</script></step>"
    tree.nodes[3].value = 0.25
    page = trees_html([tree], {"q": "What is 3 < 4?"})
    assert "<script>" not in page and "&lt;script&gt;" in page and "What is 3 &lt; 4?" in page
    assert page.count("<details>") == len(tree.nodes)  # one per node, nested under its parent
    assert "value=+0.25" in page and "reward=+1" in page and "N=2" in page and "Q=+1.00" in page
