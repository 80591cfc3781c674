"""YAML for configs and grids that refuses a key given twice in one mapping.

Why: PyYAML keeps the last of two equal keys without a word, so `epochs: 40` further down a file silently
replaces `epochs: 3` above it, and the run trains another recipe than the one its author reads at the top.
"""

from __future__ import annotations

import os
from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """A mapping of a YAML file holds the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises DuplicateKeyError (naming the key and both lines) on a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are YAML's own way to repeat keys
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"line {line}: key {key!r} given twice (first on line {seen[key]}); "
                                        "YAML would keep only the last value: delete one")  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def load_unique(text: str, source: str | os.PathLike) -> Any:
    """yaml.safe_load of `text`, but a key given twice in one mapping is a ValueError naming `source` and the key.
    Other YAML errors propagate as yaml.YAMLError (callers already word those)."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKeyError as exc:
        raise DuplicateKeyError(f"{source}: {exc}") from None
