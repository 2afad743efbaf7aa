"""CPL's plan-step tree search: the step format (steps.py), trees with PUCT and backup (tree.py), batched MCTS
across questions (mcts.py: `run_search`), and training data from finished trees (extract.py: `extract`)."""

from forethought.search.extract import ExtractConfig, extract
from forethought.search.mcts import SearchConfig, SearchStats, run_search
from forethought.search.tree import Node, Tree

__all__ = ["ExtractConfig", "Node", "SearchConfig", "SearchStats", "Tree", "extract", "run_search"]
