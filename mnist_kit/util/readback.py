"""Reading back the files mnist-kit keeps in its own folders: ``run.json``, ``metrics.jsonl``, a run's
``config.yaml``, checkpoint manifests, an export's ``mnist_kit_model.json``, the data cache's
``prepared.json``, ``sweep.json``, VisualDL records and logs -- and a user's config file.

They are input like any other: a user, a crash or a symbolic link can put anything there. So every read here

- opens a regular file only (a FIFO, a device such as ``/dev/zero``, a folder or a link loop is refused,
  without blocking on the FIFO), and reads at most a size cap;
- decodes UTF-8 strictly;
- parses with bounded nesting: JSON to ``MAX_NESTING`` levels, YAML with ``StrictLoader`` (no aliases, at
  most ``MAX_YAML_DEPTH`` levels, no key given twice, no integer longer than ``MAX_DIGITS``);
- gives back JSON's types only (objects with text keys, lists, text, numbers, true/false, null), checked
  against the shape its reader expects (``shape_problem``);

and reports whatever is wrong as one line: ``Unreadable`` (a ``UserError``), whose ``reason`` a caller can
put in its own words, or ``(value, problem)`` from ``read_json``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from mnist_kit.errors import UserError

MAX_JSON = 16 << 20  # bytes of a JSON file mnist-kit writes (a manifest of 100,000 checkpoints is ~15 MB)
MAX_METRICS = 64 << 20  # bytes of metrics.jsonl (a row per epoch, about 1 KB each)
MAX_YAML = 1 << 20  # bytes of a config file
MAX_NESTING = 32  # levels of JSON nesting; the deepest file mnist-kit writes has 4
MAX_YAML_DEPTH = 8  # levels of a config: sections, keys, lists; far more than any config needs
MAX_DIGITS = 100  # digits of an integer in YAML (Python refuses to parse more than 4,300 at all)
# read only, and without blocking: opening a FIFO for reading otherwise waits for a writer
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class Unreadable(UserError):
    """A file that cannot be read as what it should be. ``str()``: ``PATH: reason``."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; Unreadable otherwise."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Unreadable(path, "it is a symbolic link that leads nowhere (a loop)") from None
        raise Unreadable(path, f"cannot open it: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(path, f"it is {_kind(st.st_mode)}, not a regular file")
        too_big = Unreadable(path, f"it is larger than the {limit:,} bytes such a file may have")
        if st.st_size > limit:
            raise too_big
        chunks, size = [], 0
        while size <= limit:  # bounded also for a file that grows while it is read
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise Unreadable(path, f"cannot read it: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise too_big
    return b"".join(chunks)


def read_text(path: str | os.PathLike[str], limit: int) -> str:
    """``read_bytes`` decoded as UTF-8; Unreadable if it is not."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unreadable(path, f"it is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def tail_text(path: str | os.PathLike[str], limit: int = 64 << 10) -> str:
    """The last ``limit`` bytes of a regular file (a log) as text, undecodable bytes replaced; "" if it cannot
    be read (a log is shown to help, never needed)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        return os.read(fd, limit).decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


# ---------------------------------------------------------------- JSON

def nesting(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (0 for a scalar), counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth + 1)
        if depth + 1 > MAX_NESTING:
            return depth + 1
        stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json(text: str) -> Any:
    """The JSON value of ``text``; ValueError (one line) if it is not JSON or nests more than MAX_NESTING."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"it nests lists or objects more than {MAX_NESTING} levels deep") from None
    except ValueError as e:  # json.JSONDecodeError, and integers of more than 4,300 digits
        raise ValueError(f"it is not valid JSON ({str(e).splitlines()[0][:200]})") from None
    if nesting(value) > MAX_NESTING:
        raise ValueError(f"it nests lists or objects more than {MAX_NESTING} levels deep")
    return value


def load_json(path: str | os.PathLike[str], check=None, limit: int = MAX_JSON) -> Any:
    """The JSON value in ``path``, checked by ``check(value)`` (a reason or None); Unreadable otherwise."""
    text = read_text(path, limit)
    try:
        value = parse_json(text)
    except ValueError as e:
        raise Unreadable(path, str(e)) from None
    problem = check(value) if check is not None else None
    if problem:
        raise Unreadable(path, problem)
    return value


def read_json(path: str | os.PathLike[str], check=None, limit: int = MAX_JSON) -> tuple[Any, str | None]:
    """``load_json`` as (value, None), or (None, what is wrong) for a caller that words the error itself."""
    try:
        return load_json(path, check, limit), None
    except Unreadable as e:
        return None, e.reason


# ---------------------------------------------------------------- YAML

class StrictLoader(yaml.SafeLoader):
    """YAML as a config needs it: no aliases (a few lines of them expand to gigabytes), bounded nesting
    (20,000 ``[`` exhaust the stack), a key given twice is an error, not silently the last one, no integer
    of more than MAX_DIGITS digits, and dates stay text (JSON has no dates)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a config; write the "
                                              "value out", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{_excerpt(key)} is given twice",
                                                        key_node.start_mark)
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key_node))
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        size = len(str(node.value))
        if size > MAX_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, f"an integer of {size:,} digits is longer than any "
                                                    f"setting takes ({MAX_DIGITS})", node.start_mark)
        return super().construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _excerpt(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text is four, with a snippet and caret)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{context + ': ' if context else ''}{problem}{where}".split())


def parse_yaml(text: str) -> Any:
    """The value of a YAML text under ``StrictLoader``; ValueError ("not valid YAML: why, where") if it is not."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {yaml_problem(e)}") from None
    except RecursionError:  # pragma: no cover - compose_node bounds the depth first
        raise ValueError(f"not valid YAML: nested more than {MAX_YAML_DEPTH} levels deep") from None
    except ValueError as e:  # an integer in another base beyond Python's limit, say
        raise ValueError(f"not valid YAML: {str(e).splitlines()[0][:200]}") from None


def load_yaml(path: str | os.PathLike[str], check=None, limit: int = MAX_YAML) -> Any:
    """The YAML value in ``path`` (an empty file: None) checked to hold JSON's types only and by
    ``check(value)``; Unreadable otherwise."""
    text = read_text(path, limit)
    try:
        value = parse_yaml(text)
    except ValueError as e:
        raise Unreadable(path, f"it is {e}") from None
    problem = plain_problem(value) or (check(value) if check is not None else None)
    if problem:
        raise Unreadable(path, problem)
    return value


def plain_problem(value: Any) -> str | None:
    """What in ``value`` is not one of JSON's types (a set, bytes, a non-text key...), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            bad = next((k for k in item if not isinstance(k, str)), None)
            if bad is not None:
                return f"it has a key that is not text: {_excerpt(bad)}"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not (item is None or isinstance(item, (str, int, float, bool))):
            return f"it holds a value of a kind mnist-kit never writes ({type(item).__name__})"
    return None


# ---------------------------------------------------------------- the shape of what was read

class Optional:
    """In a ``shape_problem`` mapping: this key may be missing (or null)."""

    def __init__(self, shape):
        self.shape = shape


class Each:
    """In ``shape_problem``: an object of any keys, each value of ``shape``."""

    def __init__(self, shape):
        self.shape = shape


def shape_problem(value: Any, shape, where: str = "") -> str | None:
    """What in ``value`` differs from ``shape``, or None. A shape is a type or tuple of types (an int is not
    a bool; a float takes an int), ``[shape]`` (a list of such), ``{key: shape}`` (an object with these keys,
    ``Optional(shape)`` ones may be missing, others allowed), or ``Each(shape)``."""
    name = where or "the file"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{name} is {_json_excerpt(value)}, not an object"
        for key, inner in shape.items():
            optional = isinstance(inner, Optional)
            inner = inner.shape if optional else inner
            if key not in value or value[key] is None and optional:
                if optional:
                    continue
                return f"{name} has no {key}"
            problem = shape_problem(value[key], inner, f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    if isinstance(shape, Each):
        if not isinstance(value, dict):
            return f"{name} is {_json_excerpt(value)}, not an object"
        return next((p for k, v in value.items() if (p := shape_problem(v, shape.shape, f"{where}[{k[:40]!r}]"))),
                    None)
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{name} is {_json_excerpt(value)}, not a list"
        return next((p for i, v in enumerate(value) if (p := shape_problem(v, shape[0], f"{where}[{i}]"))), None)
    kinds = shape if isinstance(shape, tuple) else (shape,)
    if float in kinds:
        kinds = (*kinds, int)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        wanted = " or ".join({bool: "true/false", int: "an integer", float: "a number", str: "text", list: "a list",
                              dict: "an object"}.get(k, k.__name__) for k in dict.fromkeys(kinds) if k is not int
                             or float not in kinds)
        return f"{name} is {_json_excerpt(value)}, not {wanted}"
    return None


def _json_excerpt(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
