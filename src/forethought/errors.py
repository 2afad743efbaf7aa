"""The one exception type for mistakes a user can fix; the CLI prints it without a traceback."""


class UserError(Exception):
    """Bad input a user can fix (unknown task, missing file, malformed row, offline hub id...).

    The message must name what to fix, e.g. "data/train.jsonl line 12: field 'question' is missing".
    """
