"""Random-weight copy of a checkpoint (same config, shapes and tokenizer): for throughput runs on a machine that
has no copy of the weights (the offline GPU machine). Text from it is meaningless.
Run: python bench/random_copy.py SRC_DIR DST_DIR   (SRC_DIR needs config.json and the tokenizer files only)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main(src: Path, dst: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.suffix in (".json", ".jinja") and f.name != "config.json":
            shutil.copy(f, dst / f.name)
    print(f"{dst}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, random weights")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
