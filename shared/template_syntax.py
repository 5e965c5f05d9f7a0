"""What a template may be written with: an allow-list of Jinja's syntax.

Marketing mail needs merge fields, filters, conditions, a simple loop, a
variable; a tenant's template also runs on senders every tenant shares, once
per recipient. Three reviews that tried to make one render cost seconds each
found new ways through features mail has no use for (blocks called through
`self`, `{% with %}` chains, nested list literals repeated, `is in`, int
methods), so the syntax is allowed by name rather than refused by finding.
What is allowed is then bounded at render by shared/templating.py.

`problem(source, tree)` returns (line, message) for the first thing not
allowed, or None.
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
    nodes.List, nodes.Tuple,
})

# What the error says for the syntax people try most.
_REFUSED_NAMES = {
    nodes.Macro: "a macro", nodes.CallBlock: "a {% call %} block", nodes.Block: "a block",
    nodes.With: "{% with %}", nodes.AssignBlock: "a {% set %}...{% endset %} block",
    nodes.FilterBlock: "a {% filter %} block", nodes.Dict: "a dict literal ({...})",
    nodes.ScopedEvalContextModifier: "{% autoescape %}", nodes.NSRef: "a namespace assignment",
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
# a bracket, its code generator a few a node.
MAX_BRACKET_DEPTH = 10
MAX_NODE_DEPTH = 40

_SCALARS = (str, int, float, bool, type(None))


def bracket_depth_problem(tokens: Iterator[tuple[int, str, str]]) -> tuple[int, str] | None:
    """Brackets nested past MAX_BRACKET_DEPTH, found from the lexer's tokens
    before anything recursive reads them."""
    depth = 0
    for line, kind, value in tokens:
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
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NODE_DEPTH:
            return node.lineno, f"expressions or tags nested more than {MAX_NODE_DEPTH} deep"
        found = _node_problem(node)
        if found:
            return node.lineno, found
        # reversed: popped in the template's order, so the first problem is reported
        stack.extend(reversed([(child, depth + 1) for child in node.iter_child_nodes()]))
    return _multiplying_structure(tree)


def _node_problem(node: nodes.Node) -> str | None:
    kind = type(node)
    if kind not in _ALLOWED_NODES:
        return f"{_REFUSED_NAMES.get(kind, kind.__name__)} is not allowed"
    if kind in (nodes.List, nodes.Tuple):
        return _literal_problem(node)
    if kind is nodes.Call:
        if not (isinstance(node.node, nodes.Getattr) and node.node.attr in CALLABLE_METHODS) \
                or node.dyn_args is not None or node.dyn_kwargs is not None:
            return ("only these methods can be called: "
                    + ", ".join(sorted(CALLABLE_METHODS)))
    if kind is nodes.Test and node.name not in ALLOWED_TESTS:
        return f"the test {node.name!r} is not allowed"
    if kind is nodes.Name and node.ctx == "load" and node.name in _SPECIAL_NAMES:
        return f"{node.name!r} is not allowed"
    if kind is nodes.For and node.recursive:
        return "recursive loops are not allowed"
    return None


def _literal_problem(node: nodes.List | nodes.Tuple) -> str | None:
    """A list or tuple holds literal values ("pro", 3): one built from other
    values ([[name] * 10000] * 10000) printed as 3 GB. A loop or assignment
    target (`for key, value in ...`) holds names."""
    if getattr(node, "ctx", "load") == "store":
        return None if all(isinstance(item, nodes.Name) for item in node.items) else \
            "only names can be assigned"
    if all(isinstance(item, nodes.Const) and isinstance(item.value, _SCALARS)
           for item in node.items):
        return None
    return "a list or tuple may hold only literal values, such as ('gold', 'silver')"


def _names(node: nodes.Node) -> list[nodes.Name]:
    """The names in `node`, itself included (find_all leaves it out)."""
    return ([node] if isinstance(node, nodes.Name) else []) + list(node.find_all(nodes.Name))


def _multiplying_structure(tree: nodes.Template) -> tuple[int | None, str] | None:
    """A loop inside a loop (text of 500 characters looped three deep is
    10**8 turns), and a variable set from another one set in the template
    (each {% set b = a ~ a %} doubles what the last built, 2**n in n lines)."""
    assignments = list(tree.find_all(nodes.Assign))
    assigned = {name.name for node in assignments for name in _names(node.target)}
    for node in assignments:
        used = {name.name for name in _names(node.node) if name.ctx == "load"}
        if used & assigned:
            return node.lineno, "a {% set %} may not build on a variable another {% set %} made"
    for loop in tree.find_all(nodes.For):
        inner = [n for part in (loop.body, loop.else_) for node in part
                 for n in ([node] if isinstance(node, nodes.For) else node.find_all(nodes.For))]
        if inner:
            return loop.lineno, "a loop inside a loop is not allowed"
    return None
