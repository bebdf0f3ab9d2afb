"""Strict YAML reading for files a user writes: safe_load, plus duplicate keys refused and the
size that anchors and aliases expand to bounded (a few hundred bytes can otherwise stand for
billions of values)."""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.constructor import ConstructorError

from razor.errors import RazorError

MAX_NODES = 100_000  # values a document may expand to, aliases counted each time they are used
MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == MERGE or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise ConstructorError("while reading a mapping", node.start_mark,
                                           f"found the key {key!r} twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """How many values the document stands for once every alias is replaced by its anchor's value;
    stops counting past `limit`. A value that contains itself counts as past the limit."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_:
            return limit + 1  # an anchor used inside itself: infinite
        open_.add(key)
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        else:
            children = []
        total = 1
        for c in children:
            total += size(c)
            if total > limit:
                break
        open_.discard(key)
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(node)


def loads(text: str, source: str, limit: int = MAX_NODES, error: type[RazorError] = RazorError):
    """Parse one YAML document strictly; errors are `RazorError`s naming `source` and the fix."""
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node, limit) > limit:
            raise error(f"{source} expands through YAML anchors/aliases to more than {limit} values (or refers to "
                        f"itself); write the values out instead of aliasing them")
        return loader.construct_document(node)
    except ConstructorError as e:
        if e.problem and e.problem.startswith("found the key"):
            raise error(f"{source} has a duplicate key: {e.problem} (line {e.problem_mark.line + 1}); keep one of "
                        "them") from e
        raise error(f"{source} is not valid YAML ({_first_line(e)}); fix its syntax") from e
    except (yaml.YAMLError, RecursionError) as e:
        raise error(f"{source} is not valid YAML ({_first_line(e)}); fix its syntax") from e
    finally:
        if loader is not None:
            loader.dispose()


def read(path: Path, what: str, max_bytes: int | None = None, error: type[RazorError] = RazorError):
    """Read a YAML file (UTF-8, at most `max_bytes`) strictly; `what` names it in errors."""
    try:
        st = path.stat()
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror}); check the path") from e
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file; give a YAML file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{what} {path} is {st.st_size} bytes; it may be at most {max_bytes} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 YAML") from e
    return loads(text, f"{what} {path}", error=error)


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__
