"""Bounds on recipe input, checked while parsing, before anything is expanded, stored or run.

A recipe arrives as text (the page's editor, a file, a job payload) or as parsed data (a dict or a
list from JSON). Either way it is refused, with a RecipeError naming the limit and its number, when:

- the text is over MAX_RECIPE_CHARS characters, or a file is not UTF-8 text;
- the YAML uses an alias (`*name`, `<<: *name`): an alias bomb of a few hundred bytes expands to
  gigabytes once anything walks it. Aliases are refused as the YAML is composed, before expansion;
- it holds more than MAX_RECIPE_NODES values or nests deeper than MAX_RECIPE_DEPTH (counted while
  composing YAML, or while walking parsed data, which stops at the limit);
- it has more than MAX_STAGES stages, or a stage lists more than MAX_LIST_ITEMS ignore patterns or
  overrides;
- a module-selection regex (`targets`, `ignore`, `overrides[].pattern`) is over MAX_PATTERN_CHARS,
  uses a backreference, repeats a group that holds another quantifier or an alternation (`(a+)+`,
  `(.|.)*`: exponential backtracking), or has more than MAX_PATTERN_REPEATS quantifiers (`.*.*.*Z`
  backtracks polynomially in the name's length). Python's `re` has no time limit, so the syntax is
  bounded instead: `check_pattern` reads the parsed pattern, it never runs it.

Standard library and PyYAML only (the job manager and the page import it before torch).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from compressor.errors import RecipeError

MAX_RECIPE_CHARS = 32_768  # a recipe is a few lines; the largest preset is under 1 KiB
MAX_RECIPE_NODES = 2_000  # scalars, lists and mappings in one recipe
MAX_RECIPE_DEPTH = 8  # recipe > stages > stage > overrides > override > value is 5
MAX_STAGES = 8  # each stage is a full pass over the model; the presets use at most 3
MAX_LIST_ITEMS = 32  # ignore patterns or overrides of one stage
MAX_PATTERN_CHARS = 256
MAX_PATTERN_REPEATS = 2  # quantifiers (*, +, ?, {m,n} with n > 1) in one pattern

try:  # Python 3.11+: the parser `re.compile` itself uses
    from re import _constants as _c
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | ({_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set())
_BACKREFS = {_c.GROUPREF, _c.GROUPREF_EXISTS} | ({_c.GROUPREF_IGNORE} if hasattr(_c, "GROUPREF_IGNORE") else set())


def limits_table() -> dict[str, tuple[int, str]]:
    """The recipe limits: name -> (value, what it bounds)."""
    return {"MAX_RECIPE_CHARS": (MAX_RECIPE_CHARS, "characters of recipe text"),
            "MAX_RECIPE_NODES": (MAX_RECIPE_NODES, "values (scalars, lists, mappings) in one recipe"),
            "MAX_RECIPE_DEPTH": (MAX_RECIPE_DEPTH, "nesting levels in one recipe"),
            "MAX_STAGES": (MAX_STAGES, "stages in one recipe"),
            "MAX_LIST_ITEMS": (MAX_LIST_ITEMS, "ignore patterns, or overrides, of one stage"),
            "MAX_PATTERN_CHARS": (MAX_PATTERN_CHARS, "characters of one module-selection regex"),
            "MAX_PATTERN_REPEATS": (MAX_PATTERN_REPEATS, "quantifiers in one module-selection regex")}


# --- text ----------------------------------------------------------------------------------------


def check_text_size(text: str) -> None:
    if len(text) > MAX_RECIPE_CHARS:
        raise RecipeError("recipe", f"<{len(text):,} characters>", f"a recipe is at most {MAX_RECIPE_CHARS:,} "
                          "characters (MAX_RECIPE_CHARS): give a preset name or a few stages")


def read_recipe_file(path: str | Path) -> str:
    """A recipe file's text: refused when missing, over the size limit, binary or not UTF-8."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RecipeError("recipe", path.name, "is a folder, not a recipe file: give the .yaml or .json file in it")
    if not path.is_file():
        raise RecipeError("recipe", path.name, "no such recipe file: check the path")
    limit = 4 * MAX_RECIPE_CHARS  # UTF-8 is at most 4 bytes a character: larger cannot fit
    with path.open("rb") as f:
        data = f.read(limit + 1)  # never more, even if the file grows after a look at its size
    if len(data) > limit:
        raise RecipeError("recipe", path.name, f"the file is {path.stat().st_size:,} bytes; a recipe is at most "
                          f"{MAX_RECIPE_CHARS:,} characters (MAX_RECIPE_CHARS)")
    if b"\0" in data:
        raise RecipeError("recipe", path.name, "the file is binary (it holds NUL bytes), not YAML or JSON text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecipeError("recipe", path.name, f"the file is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                          f"{e.start}): save it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    check_text_size(text)
    return text


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases and counts nodes and depth while composing."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._nodes, self._depth = 0, 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            raise RecipeError("recipe", f"*{anchor}", "YAML aliases (&name ... *name, <<: *name) are not allowed "
                              "in recipes: write each value out")
        self._nodes += 1
        if self._nodes > MAX_RECIPE_NODES:
            raise _too_many_nodes()
        self._depth += 1
        if self._depth > MAX_RECIPE_DEPTH:
            raise _too_deep()
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_recipe_text(text: str) -> object:
    """YAML or JSON text -> the parsed value (dict, list, or a scalar such as a preset name), within
    the bounds above. RecipeError for text that is too large, not valid YAML/JSON, or out of bounds."""
    if not isinstance(text, str):
        raise RecipeError("recipe", type(text).__name__, "give the recipe as text")
    check_text_size(text)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecipeError:  # a bound passed: its own message
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError("recipe", text[:80], f"not valid JSON or YAML{where} ({problem}): check brackets, "
                          "indentation and 'key: value' pairs") from None
    except ValueError as e:  # a scalar Python cannot hold, e.g. an integer of 5,000 digits
        raise RecipeError("recipe", text[:80], f"holds a value that cannot be read ({str(e)[:120]})") from None


def parse_recipe_json(text: str) -> object:
    """JSON text -> the parsed value, within the size bound (then `check_recipe_data` bounds its shape)."""
    check_text_size(text)
    try:
        return json.loads(text)
    except RecursionError:
        raise _too_deep() from None


# --- parsed data ---------------------------------------------------------------------------------


def _too_many_nodes() -> RecipeError:
    return RecipeError("recipe", f"<more than {MAX_RECIPE_NODES:,} values>", f"a recipe holds at most "
                       f"{MAX_RECIPE_NODES:,} values (MAX_RECIPE_NODES): give fewer stages or overrides")


def _too_deep() -> RecipeError:
    return RecipeError("recipe", f"<nested deeper than {MAX_RECIPE_DEPTH}>", f"a recipe nests at most "
                       f"{MAX_RECIPE_DEPTH} levels (MAX_RECIPE_DEPTH): stages > stage > overrides > override")


def check_shape(data: object) -> None:
    """Counts values and depth of parsed data without recursion; stops at the first limit passed, so
    shared references (what a YAML alias becomes) cannot make it walk long."""
    stack, nodes = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_RECIPE_NODES:
            raise _too_many_nodes()
        if depth > MAX_RECIPE_DEPTH:
            raise _too_deep()
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def check_recipe_data(stages: list) -> None:
    """Bounds of a recipe's stage list: stage count, list lengths and every selection regex."""
    if len(stages) > MAX_STAGES:
        raise RecipeError("stages", f"<{len(stages)} stages>", f"a recipe has at most {MAX_STAGES} stages "
                          "(MAX_STAGES): each stage is a full pass over the model")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            continue  # the stage parser says what a stage must be
        where = f"stage {i}"
        for key in ("ignore", "overrides"):
            items = stage.get(key)
            if isinstance(items, list | tuple) and len(items) > MAX_LIST_ITEMS:
                raise RecipeError(key, f"<{len(items)} entries>", f"a stage has at most {MAX_LIST_ITEMS} "
                                  f"{key} entries (MAX_LIST_ITEMS)", where)
        patterns = [("targets", stage.get("targets"))]
        ignore = stage.get("ignore")
        patterns += [("ignore", p) for p in (ignore if isinstance(ignore, list | tuple) else [ignore])]
        overrides = stage.get("overrides")
        patterns += [("overrides.pattern", o.get("pattern")) for o in (overrides or [])
                     if isinstance(overrides, list | tuple) and isinstance(o, dict)]
        for field, pattern in patterns:
            if isinstance(pattern, str):
                check_pattern(field, pattern, where)


# --- regular expressions -------------------------------------------------------------------------


def check_pattern(field: str, pattern: str, where: str | None = None) -> None:
    """Refuses a module-selection regex whose matching time could explode (see the module docstring).
    Reads the parsed pattern only; a pattern that does not parse is left to `re.compile`'s message."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RecipeError(field, pattern[:40] + "...", f"a pattern is at most {MAX_PATTERN_CHARS} characters "
                          "(MAX_PATTERN_CHARS)", where)
    try:
        parsed = _sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return  # the stage config compiles it and names the syntax error
    repeats = _walk(list(parsed), False, field, pattern, where)
    if repeats > MAX_PATTERN_REPEATS:
        raise RecipeError(field, pattern, f"has {repeats} quantifiers (*, +, ?, {{m,n}}); at most "
                          f"{MAX_PATTERN_REPEATS} are allowed (MAX_PATTERN_REPEATS), as several in a row make "
                          "matching slow: anchor on literal parts instead, e.g. 'layers\\.\\d+\\.mlp'", where)


def _walk(items: list, in_repeat: bool, field: str, pattern: str, where: str | None) -> int:
    """Quantifiers (max > 1) in `items`; RecipeError for a backreference, or a quantifier or an
    alternation inside a repeated group."""
    count = 0
    for op, arg in items:
        if op in _REPEATS:
            lo, hi, sub = arg
            loops = hi > 1
            if loops and in_repeat:
                raise RecipeError(field, pattern, "repeats a group that holds another quantifier ('(a+)+', "
                                  "'(x*y)*'): matching can take exponential time; write it without nesting", where)
            count += loops + _walk(list(sub), in_repeat or loops, field, pattern, where)
        elif op is _c.BRANCH:
            if in_repeat:
                raise RecipeError(field, pattern, "repeats a group that holds an alternation ('(a|b)*', '(.|.)*'):"
                                  " matching can take exponential time; use a character class such as "
                                  "[ab]*, or list the names without repetition", where)
            count += sum(_walk(list(alt), in_repeat, field, pattern, where) for alt in arg[1])
        elif op in _BACKREFS:
            raise RecipeError(field, pattern, "backreferences (\\1, (?P=name), (?(1)...)) are not allowed in "
                              "module patterns", where)
        elif op is _c.SUBPATTERN:
            count += _walk(list(arg[-1]), in_repeat, field, pattern, where)
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            count += _walk(list(arg[1]), in_repeat, field, pattern, where)
        elif hasattr(_c, "ATOMIC_GROUP") and op is _c.ATOMIC_GROUP:
            count += _walk(list(arg), in_repeat, field, pattern, where)
    return count
