"""Split strings as the configs write them, TFDS style: a split name with an optional slice (`train`, `test[:256]`,
`train[10%:]`). Read without any data, so that the analyzer's rules and config validation can use them."""

import re

SPLIT = re.compile(r"^(\w+)(\[[^\]]*\])?$")


def split_name(split: str) -> str:
    """The split that `split` reads from: `test` for `test[:256]` and for `test` ('' when it starts with no name)."""
    return re.match(r"\w*", split).group(0)


def sliced_from(split: str) -> str | None:
    """The whole split that `split` is a slice of (`test` for `test[:256]`); None for a whole split."""
    match = SPLIT.match(split)
    return match.group(1) if match and match.group(2) else None
