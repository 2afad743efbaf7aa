"""Search trees as an expandable HTML page: nested <details> per node with its kind, N, Q, prior, value, reward.

Model text is escaped (it is data); the page has no scripts and no external resources.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from forethought.search.tree import Node, Tree

STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em}details{margin-left:1.2em;border-left:1px solid #ccc;"
         "padding-left:.5em}summary{cursor:pointer}.good{color:#060}.bad{color:#a00}pre{white-space:pre-wrap;"
         "margin:.2em 0 .4em 1.2em;background:#f6f6f6;padding:.3em}")


def _label(node: Node) -> str:
    parts = [node.kind, f"N={node.N}", f"Q={node.Q:+.2f}", f"prior={node.prior:.2f}"]
    if node.value is not None:
        parts.append(f"value={node.value:+.2f}")
    if node.reward is not None:
        parts.append(f"reward={node.reward:+.0f}")
    css = "good" if node.Q > 0 else "bad" if node.Q < 0 else ""
    return f'<span class="{css}">{html.escape(" · ".join(parts))}</span>'


def _node(tree: Tree, node: Node) -> str:
    children = "".join(_node(tree, tree.nodes[c]) for c in node.children)
    text = f"<pre>{html.escape(node.text.strip())}</pre>" if node.text else ""
    return f"<details><summary>{_label(node)}</summary>{text}{children}</details>"


def trees_html(trees: Sequence[Tree], questions: dict[str, str] | None = None, title: str = "CPL search") -> str:
    """One page with every tree, collapsed; the root line gives the question and its statistics."""
    questions = questions or {}
    body = []
    for tree in trees:
        q = html.escape(questions.get(tree.question_id, ""))
        body.append(f"<h3>{html.escape(tree.question_id)}</h3><p>{q}</p>{_node(tree, tree.root)}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
