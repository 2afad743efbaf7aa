"""Tokenize a chat and mark its assistant tokens, so the loss falls on plans and solutions, never on prompts."""

from __future__ import annotations

from forethought.errors import UserError


def _ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of the chat template rendered for `messages` (the template supplies any BOS itself)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _check_messages(messages: list[dict]) -> None:
    """Refuse chats that are not a list of {role, content} dicts with at least one assistant turn."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise UserError("'messages' must be a list of {'role': str, 'content': str} dicts")
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError("a chat to train on has no assistant turn; each row needs at least one")


def tokenize_chat(tokenizer, messages: list[dict], max_length: int) -> dict:
    """Return {"input_ids", "assistant_masks"}: 1 on each assistant turn's tokens including its end-of-turn token.

    Turn i's tokens are render(messages[:i+1]) minus render(messages[:i], add_generation_prompt=True); whitespace
    tokens the template writes after the end-of-turn token stay unmasked. Truncates to `max_length` tokens.
    """
    _check_messages(messages)
    input_ids = _ids(tokenizer, messages)
    mask = [0] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _ids(tokenizer, messages[:i], add_generation_prompt=True) if i else []
        turn = _ids(tokenizer, messages[: i + 1])
        if input_ids[: len(turn)] != turn or turn[: len(prompt)] != prompt:
            raise UserError(
                f"the tokenizer's chat template does not render chat prefixes consistently (assistant turn {i}): "
                "the tokens of a shorter chat plus its generation prompt must begin the longer chat's tokens. "
                "Use a model whose template renders earlier turns the same way whatever follows (e.g. ChatML)"
            )
        start, end = len(prompt), len(turn)
        while end > start and not tokenizer.decode(turn[end - 1 : end]).strip():
            end -= 1
        mask[start:end] = [1] * (end - start)
    return {"input_ids": input_ids[:max_length], "assistant_masks": mask[:max_length]}
