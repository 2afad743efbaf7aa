"""Training data from finished CPL trees: SFT paths, Step-APO preference pairs, value-model targets.

Rows use the zero-shot step prompt (no demonstrations), as evaluation does. Pair and value rows carry `messages`
and `prefix` (the assistant text before the step); learners render them with the chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

from pydantic import Field

from forethought.config import StrictModel
from forethought.plans import steps
from forethought.search.tree import Node, Tree
from forethought.tasks.base import Example


class ExtractConfig(StrictModel):
    """Which data the trees yield (CPL's defaults)."""

    max_sft_paths: int = Field(4, ge=0)  # per question
    step_pairs: bool = True  # every (Q > 0, Q < 0) pair among sibling plan steps
    solution_pairs: bool = True  # one best-vs-worst pair among sibling solutions
    solution_q_scale: float = Field(0.3, ge=0)  # solution pairs' Q values are scaled by this


def _visited(tree: Tree, node: Node) -> list[Node]:
    return [tree.nodes[c] for c in node.children if tree.nodes[c].N > 0]


def sft_paths(tree: Tree, cfg: ExtractConfig) -> list[list[Node]]:
    """Root-to-solution paths whose solution has Q = +1 and no node with Q = -1 on the way, best first."""
    paths = []
    for node in tree.nodes:
        if node.kind == "solution" and node.N and node.Q == 1.0:
            path = tree.path(node)
            if all(not (n.N and n.Q == -1.0) for n in path):
                paths.append(path)
    paths.sort(key=lambda p: (-sum(n.Q for n in p) / len(p), p[-1].id))
    return paths[: cfg.max_sft_paths]


def pairs(tree: Tree, cfg: ExtractConfig) -> list[tuple[Node, Node, Node, float, float, str]]:
    """(parent, chosen, rejected, q_chosen, q_rejected, kind) for sibling actions with Q > 0 vs Q < 0."""
    out = []
    for node in tree.nodes:
        children = _visited(tree, node)
        if cfg.step_pairs:
            good = [c for c in children if c.kind == "step" and c.Q > 0]
            bad = [c for c in children if c.kind == "step" and c.Q < 0]
            out += [(node, w, lose, w.Q, lose.Q, "step") for w, lose in product(good, bad)]
        terminal = [c for c in children if c.terminal]
        if cfg.solution_pairs and terminal:
            best = max(terminal, key=lambda c: (c.Q, -c.id))
            worst = min(terminal, key=lambda c: (c.Q, c.id))
            if best.Q > 0 > worst.Q:
                scale = cfg.solution_q_scale
                out.append((node, best, worst, best.Q * scale, worst.Q * scale, "solution"))
    return out


def value_targets(tree: Tree) -> list[Node]:
    """Every plan step on a path that reached a visited solution, once each."""
    seen: dict[int, Node] = {}
    for node in tree.nodes:
        if node.kind == "solution" and node.N:
            for n in tree.path(node):
                if n.kind == "step":
                    seen.setdefault(n.id, n)
    return sorted(seen.values(), key=lambda n: n.id)


def extract(trees: Sequence[Tree], examples: Sequence[Example], answer_type: str,
            cfg: ExtractConfig = ExtractConfig()) -> tuple[list[dict], list[dict], list[dict]]:
    """(sft rows, Step-APO pair rows, value rows) from finished trees; `examples` give each tree's question."""
    by_id = {e.id: e for e in examples}
    sft, pair_rows, value_rows = [], [], []
    root = steps.root_prefix()
    for tree in trees:
        messages = steps.messages(by_id[tree.question_id].question, answer_type)
        for path in sft_paths(tree, cfg):
            text = root + "".join(n.text for n in path)
            sft.append({"messages": messages + [{"role": "assistant", "content": text}],
                        "question_id": tree.question_id})
        for parent, chosen, rejected, qw, ql, kind in pairs(tree, cfg):
            pair_rows.append({"messages": messages, "prefix": tree.prefix(parent, root), "chosen": chosen.text,
                              "rejected": rejected.text, "q_chosen": qw, "q_rejected": ql, "kind": kind,
                              "question_id": tree.question_id})
        for node in value_targets(tree):
            value_rows.append({"messages": messages, "prefix": tree.prefix(node, root), "q": node.Q,
                               "question_id": tree.question_id})
    return sft, pair_rows, value_rows
