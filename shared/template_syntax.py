"""What a template may be written with: an allow-list of Jinja's syntax.

Marketing mail needs merge fields, filters, conditions, a simple loop, a
variable; a tenant's template also runs on senders every tenant shares, once
per recipient. Three reviews that tried to make one render cost seconds each
found new ways through features mail has no use for (blocks called through
`self`, `{% with %}` chains, nested list literals repeated, `is in`, int
methods), so the syntax is allowed by name rather than refused by finding.
What is allowed is then bounded at render by shared/templating.py.

`token_problem(tokens)` and `problem(tree)` return (line, message) for the
first thing not allowed, or None.
"""
from __future__ import annotations

from typing import Iterator

from jinja2 import nodes

_ALLOWED_NODES = frozenset({
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.Name,
    nodes.If, nodes.For, nodes.Assign, nodes.CondExpr,
    nodes.Getattr, nodes.Getitem, nodes.Slice, nodes.Filter, nodes.Test, nodes.Call,
    nodes.Keyword, nodes.Compare, nodes.Operand, nodes.Concat,
    nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow,
    nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos,
    nodes.List, nodes.Tuple, nodes.Dict, nodes.Pair,
})

# What the error says for the syntax people try most.
_REFUSED_NAMES = {
    nodes.Macro: "a macro", nodes.CallBlock: "a {% call %} block", nodes.Block: "a block",
    nodes.With: "{% with %}", nodes.AssignBlock: "a {% set %}...{% endset %} block",
    nodes.FilterBlock: "a {% filter %} block",
    nodes.ScopedEvalContextModifier: "{% autoescape %}", nodes.NSRef: "a namespace assignment",
    nodes.Scope: "{% autoescape %}",   # the Scope Jinja wraps an autoescape block in
    nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
}

# Methods of text (that cannot build more than they read), of the merge
# data's dicts, and a loop's cycle(); no other call.
TEXT_METHODS = frozenset({
    "split", "rsplit", "splitlines", "partition", "rpartition", "strip", "lstrip", "rstrip",
    "startswith", "endswith", "find", "rfind", "count", "lower", "upper", "title",
    "capitalize", "casefold", "isdigit", "isalpha", "isalnum", "isspace", "islower",
    "isupper", "istitle", "isnumeric", "isdecimal"})
CALLABLE_METHODS = TEXT_METHODS | {"get", "keys", "values", "items", "cycle"}

ALLOWED_TESTS = frozenset({
    "defined", "undefined", "none", "boolean", "true", "false", "integer", "float",
    "number", "string", "lower", "upper", "odd", "even", "divisibleby",
    "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=",
    "gt", "greaterthan", ">", "ge", ">="})

# Names with a meaning of their own in Jinja (the template, macro arguments).
_SPECIAL_NAMES = frozenset({"self", "caller", "varargs", "kwargs"})

# Nesting, bounded so that compiling never nears Python's recursion limit,
# at save or in a sender deeper in its stack: Jinja's parser takes ~14 frames
# a bracket, its code generator a few a node (and Python's compiler a level
# an elif).
MAX_BRACKET_DEPTH = 10
MAX_NODE_DEPTH = 40
# Compiling costs ~13 us a token, at save and in each sender: 140,000
# {{ a }} took 8.8 s and 1.2 GB. A 115 kB newsletter with 1,400 merge
# fields is ~10,000.
MAX_TOKENS = 20_000
# A number literal of thousands of digits is parsed (quadratically) as it
# compiles, and then divided in a loop.
MAX_NUMBER_LITERAL = 20
MAX_ARGUMENTS = 20   # loop.cycle() of 10,000 arguments, each turn

_SCALARS = (str, int, float, bool, type(None))


def token_problem(tokens: Iterator[tuple[int, str, str]]) -> tuple[int, str] | None:
    """Too many tokens, a number literal too long, or brackets nested past
    MAX_BRACKET_DEPTH: found from the lexer's tokens, before anything that
    costs more (or recurses) reads them."""
    depth = count = 0
    for line, kind, value in tokens:
        if kind == "whitespace":
            continue
        count += 1
        if count > MAX_TOKENS:
            return line, f"more than {MAX_TOKENS} tags, expressions and names"
        if kind in ("integer", "float") and len(value) > MAX_NUMBER_LITERAL:
            return line, f"a number written with more than {MAX_NUMBER_LITERAL} characters"
        if kind != "operator":
            continue
        if value in "([{":
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                return line, f"brackets nested more than {MAX_BRACKET_DEPTH} deep"
        elif value in ")]}":
            depth -= 1
    return None


def problem(tree: nodes.Template) -> tuple[int | None, str] | None:
    """The first thing in `tree` the allow-list does not hold."""
    # '%s from %s' % (name, fields.city): a tuple of values, to be formatted
    format_values = {id(node.right) for node in tree.find_all(nodes.Mod)
                     if isinstance(node.right, nodes.Tuple)}
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NODE_DEPTH:
            return node.lineno, f"expressions or tags nested more than {MAX_NODE_DEPTH} deep"
        found = None if id(node) in format_values else _node_problem(node)
        if found:
            return _line_of(node), found
        # Python nests each elif a level deeper than the one before
        elif_depth = {id(e): n for n, e in enumerate(getattr(node, "elif_", None) or ())}
        children = [(child, depth + 1 + elif_depth.get(id(child), 0))
                    for child in node.iter_child_nodes()]
        # reversed: popped in the template's order, so the first problem is reported
        stack.extend(reversed(children))
    return _nested_loop(tree)


def _line_of(node: nodes.Node) -> int | None:
    """A node's line, or its first descendant's: Jinja gives an autoescape
    block's Scope none."""
    if getattr(node, "lineno", None):
        return node.lineno
    return next((child.lineno for child in node.find_all(nodes.Node)
                 if getattr(child, "lineno", None)), None)


def _node_problem(node: nodes.Node) -> str | None:
    kind = type(node)
    if kind not in _ALLOWED_NODES:
        return f"{_REFUSED_NAMES.get(kind, kind.__name__)} is not allowed"
    if kind in (nodes.List, nodes.Tuple, nodes.Dict):
        return _literal_problem(node)
    if kind in (nodes.Getattr, nodes.Getitem):
        return _underscore_problem(node)
    if kind in (nodes.Call, nodes.Filter, nodes.Test):
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            return "*args and **kwargs are not allowed"
        if len(node.args) + len(node.kwargs) > MAX_ARGUMENTS:
            return f"more than {MAX_ARGUMENTS} arguments"
    if kind is nodes.Call and not (isinstance(node.node, nodes.Getattr)
                                   and node.node.attr in CALLABLE_METHODS):
        return "only these methods can be called: " + ", ".join(sorted(CALLABLE_METHODS))
    if kind is nodes.Test and node.name == "in":
        return "the test 'in' is not allowed; write x in ('a', 'b')"
    if kind is nodes.Test and node.name not in ALLOWED_TESTS:
        return f"the test {node.name!r} is not allowed; the tests are: " + \
            ", ".join(sorted(t for t in ALLOWED_TESTS if t.isalpha()))
    if kind is nodes.Name and node.ctx == "load" and node.name in _SPECIAL_NAMES:
        return f"{node.name!r} is not allowed"
    if kind is nodes.For and node.recursive:
        return "recursive loops are not allowed"
    return None


MAX_LITERAL_NESTING = 3   # a list of products, each a dict, one of them a list


def _is_literal(node: nodes.Node, depth: int = 0) -> bool:
    """A value written out in full: text, a number (-5 too), or a list,
    tuple or dict of such values, nested at most MAX_LITERAL_NESTING deep."""
    if isinstance(node, nodes.Const):
        return isinstance(node.value, _SCALARS)
    if isinstance(node, (nodes.Neg, nodes.Pos)):
        return isinstance(node.node, nodes.Const) and isinstance(node.node.value, (int, float))
    if depth >= MAX_LITERAL_NESTING:
        return False
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return all(_is_literal(item, depth + 1) for item in node.items)
    if isinstance(node, nodes.Dict):
        return all(_is_literal(pair.key, depth + 1) and _is_literal(pair.value, depth + 1)
                   for pair in node.items)
    return False


def _literal_problem(node: nodes.List | nodes.Tuple | nodes.Dict) -> str | None:
    """A list, tuple or dict is written out in full (its values are literals,
    or lists and dicts of them): one built from other values
    ([[name] * 10000] * 10000) printed as 3 GB. A loop or assignment target
    (`for key, value in ...`) holds names."""
    if getattr(node, "ctx", "load") == "store":
        return None if all(isinstance(item, nodes.Name) for item in node.items) else \
            "only names can be assigned"
    if _is_literal(node):
        return None
    return ("a list, tuple or dict may hold only values written out, such as "
            "[{'title': 'Mug', 'price': 9.5}] (nested at most "
            f"{MAX_LITERAL_NESTING} deep); not merge data or other variables: "
            "use them where the value is printed or compared")


def _underscore_problem(node: nodes.Getattr | nodes.Getitem) -> str | None:
    """An attribute or key starting with "_": the sandbox hides them
    (`''.__class__` only ever renders empty), so it is a mistake or a probe."""
    if isinstance(node, nodes.Getattr):
        key = node.attr
    else:
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
    if isinstance(key, str) and key.startswith("_"):
        return f"{key!r}: a name starting with _ is not allowed"
    return None


def _nested_loop(tree: nodes.Template) -> tuple[int | None, str] | None:
    """A loop inside a loop: text of 500 characters looped three deep is
    10**8 turns."""
    for loop in tree.find_all(nodes.For):
        # a loop's expressions hold no tags: any For under it is in its body or else
        if next(loop.find_all(nodes.For), None) is not None:
            return loop.lineno, "a loop inside a loop is not allowed"
    return None
