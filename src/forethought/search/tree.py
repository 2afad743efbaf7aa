"""A search tree over plan steps: nodes with prior, visit count N, value sum W; PUCT selection and backup.

Nodes live in a flat list (a node's parent and children are indices), which keeps JSON round trips exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Node:
    """One state: the action text that led here from the parent, and the statistics search keeps for it."""

    id: int
    parent: int | None
    kind: str  # "root" | "step" | "solution" | "malformed"
    text: str = ""
    prior: float = 1.0  # exp(mean token log-prob) of `text`; not normalised over siblings
    depth: int = 0  # plan steps from the root to here
    N: int = 0
    W: float = 0.0
    reward: float | None = None  # terminal nodes: +1 correct, -1 wrong or malformed
    value: float | None = None  # non-terminal nodes: the value model's estimate, when one was used
    tokens: int = 0  # tokens generated for `text`
    children: list[int] = field(default_factory=list)

    @property
    def Q(self) -> float:
        return self.W / self.N if self.N else 0.0

    @property
    def terminal(self) -> bool:
        return self.kind in ("solution", "malformed")


@dataclass
class Tree:
    """The search tree of one question."""

    question_id: str
    nodes: list[Node] = field(default_factory=lambda: [Node(0, None, "root")])
    iterations: int = 0
    tokens: int = 0  # every token generated for this tree, dropped duplicates included

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: int, kind: str, text: str, prior: float, tokens: int = 0) -> Node:
        node = Node(len(self.nodes), parent, kind, text, prior, self.nodes[parent].depth + (kind == "step"),
                    tokens=tokens)
        self.nodes.append(node)
        self.nodes[parent].children.append(node.id)
        return node

    def puct(self, child: Node, parent: Node, c_puct: float) -> float:
        """Q(s,a) + c_puct * prior(a) * sqrt(N(s)) / (1 + N(a))."""
        return child.Q + c_puct * child.prior * math.sqrt(parent.N) / (1 + child.N)

    def select(self, c_puct: float) -> Node:
        """Walk from the root by the highest PUCT score (first child on ties) to a leaf or terminal node."""
        node = self.root
        while node.children and not node.terminal:
            node = max((self.nodes[c] for c in node.children), key=lambda c: self.puct(c, node, c_puct))
        return node

    def backup(self, node: Node, value: float) -> None:
        """Add one visit with `value` to `node` and every ancestor."""
        current: Node | None = node
        while current is not None:
            current.N += 1
            current.W += value
            current = self.nodes[current.parent] if current.parent is not None else None

    def path(self, node: Node) -> list[Node]:
        """Nodes from the root's first child down to `node`."""
        out = []
        while node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def prefix(self, node: Node, root_prefix: str) -> str:
        """The assistant text of the state at `node`."""
        return root_prefix + "".join(n.text for n in self.path(node))

    def to_json(self) -> dict:
        return {"question_id": self.question_id, "iterations": self.iterations, "tokens": self.tokens,
                "nodes": [{**asdict(n), "Q": n.Q} for n in self.nodes]}

    @classmethod
    def from_json(cls, data: dict) -> Tree:
        nodes = [Node(**{k: v for k, v in n.items() if k != "Q"}) for n in data["nodes"]]
        return cls(data["question_id"], nodes, data.get("iterations", 0), data.get("tokens", 0))
