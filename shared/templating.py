"""The one template environment: campaigns checks templates with it at save
time, the sender renders them with it at send time.

Jinja2's immutable sandbox with a small allow-list of filters and no globals:
a template sees only the merge data it is given and can neither call
methods that mutate it nor reach Python internals. HTML templates
autoescape, so a contact's name can never inject markup. The syntax a
template may use is an allow-list too (shared/template_syntax.py), and what
one render may build is bounded here.

Merge data (see `merge_context`): `email`, `name`, `fields` (custom fields,
`{{ fields.city | default("there") }}`), the same under `contact`, and the
links the sender adds: `unsubscribe_url`, `postal_address`. A missing value
renders empty (or its `default(...)`), it never fails a send.
"""
from __future__ import annotations

import functools
import re
import threading
import time
from functools import lru_cache
from typing import Any, Mapping

from jinja2 import (ChainableUndefined, Environment, Template, TemplateError,
                    TemplateSyntaxError, Undefined, meta, nodes, pass_context,
                    pass_eval_context)
from jinja2.filters import do_replace
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from shared import template_syntax

# Names the sender provides on top of the contact's data.
UNSUBSCRIBE_URL = "unsubscribe_url"
POSTAL_ADDRESS = "postal_address"

ALLOWED_FILTERS = ("default", "d", "upper", "lower", "title", "capitalize", "trim",
                   "truncate", "replace", "escape", "e", "urlencode", "length", "count",
                   "join", "first", "last", "int", "float", "abs", "round", "wordwrap",
                   "striptags")


class TemplateSyntaxProblem(ValueError):
    """A template that does not compile: where and why (for the API's error)."""

    def __init__(self, line: int | None, message: str):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


class TemplateRenderProblem(ValueError):
    """A template that compiled but cannot render (e.g. the sandbox refused
    an operation). Permanent for that template version."""

    def __init__(self, message: str, line: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.line = line
        self.message = message
        self.kind = kind  # the error's type, when the message is the error's own text

    def without_values(self) -> str:
        """What went wrong, without an error's own text: that may quote the
        merge data (a name, a field value) of the contact it was rendered for."""
        if self.kind is None:  # one of ours (a limit): no data in it
            return f"cannot render: {self.message}"
        where = f" at template line {self.line}" if self.line else ""
        return f"cannot render: {self.kind}{where}"


# What one template may cost, whoever wrote it: the sender renders every
# tenant's templates on the same workers, so none may hold one for long.
MAX_RENDERED_CHARS = 4_000_000
MAX_REPEAT = 10_000   # "ab" * n
MAX_EXPONENT = 64
MAX_ROUND_PRECISION = 15  # round(1, 10000000, 'floor') computes 10 ** 10000000


_SEQUENCES = (str, list, tuple)


class RenderLimit(SecurityError):
    """One of the bounds below: its message holds no merge data, and says
    which bound (a compose error records it as it is)."""


def _too_long(length: int) -> None:
    if length > MAX_RENDERED_CHARS:
        raise RenderLimit(f"a value of over {MAX_RENDERED_CHARS} characters")
    _charge(length)


# What one render may build (repetitions, joins) and feed to the filters
# whose cost grows with their text, all together. Each value was bounded
# alone, and a template repeating a costly one took seconds a recipient:
# ("x "*10000*200)|wordwrap took 1.8 s, a loop building 4,000,000
# characters a turn 5 s. A render building 250,000 is still ~0.1 s.
MAX_BUILT_PER_RENDER = 250_000
_render_budget = threading.local()

# And the CPU one render may take, whatever it spends it on: the bounds
# above are per operation, and every review found an operation they did not
# count. Loops are the one multiplier a template has (no macros, no nesting):
# each turn ticks as many times as its body has nodes, and each call,
# operator, test and filter ticks once; every 32 ticks the thread's CPU
# clock is read (~0.5 us). An ordinary template renders in ~20 us.
MAX_RENDER_SECONDS = 0.2
_TICKS_BETWEEN_CLOCK_READS = 32


def _tick(weight: int = 1) -> None:
    ticks = getattr(_render_budget, "ticks", None)
    if ticks is None:
        return
    if ticks > weight:
        _render_budget.ticks = ticks - weight
        return
    _render_budget.ticks = _TICKS_BETWEEN_CLOCK_READS
    if time.thread_time() > _render_budget.deadline:
        raise RenderLimit(f"takes over {MAX_RENDER_SECONDS} s of CPU in one render")


def _most_affordable() -> int:
    """The most one value may still hold: what the render's budget has left,
    and never over MAX_RENDERED_CHARS."""
    left = getattr(_render_budget, "left", None)
    return MAX_RENDERED_CHARS if left is None else min(MAX_RENDERED_CHARS, left)


def _affordable(length: int) -> None:
    """Refuse, without charging, work on `length` characters or items that the
    render's budget could not pay for: checked before the work is done,
    where what it builds is charged after."""
    if length > _most_affordable():
        raise RenderLimit(f"builds over {MAX_BUILT_PER_RENDER} characters in one render")


def _charge(length: int) -> None:
    """Count what the render being made builds; outside a render (Jinja
    folding constants as it compiles) only each value's own bound holds."""
    left = getattr(_render_budget, "left", None)
    if left is None:
        return
    _tick()
    _render_budget.left = left - length
    if _render_budget.left < 0:
        raise RenderLimit(f"builds over {MAX_BUILT_PER_RENDER} characters in one render")


def _charged(text_filter):
    """The filter, its text counted against the render's budget first."""
    takes_context = hasattr(text_filter, "jinja_pass_arg")

    @functools.wraps(text_filter)
    def charged(*args, **kwargs):
        _charge(len(str(args[1] if takes_context else args[0])))
        return text_filter(*args, **kwargs)
    return charged


# Loop turns in one render, all loops together: nested loops are refused,
# but one loop over a 300 kB literal testing `in` another took 4.7 s.
MAX_LOOP_TURNS = 10_000


@pass_context  # never called at compile: Jinja folds a filter of a constant there
def _turns(_context, items, body_nodes=1):
    """A loop's items, each turn counted against the render's, and ticking
    for every node of the loop's body."""
    for item in items:
        left = getattr(_render_budget, "turns", None)
        if left is not None:
            if left <= 0:
                raise RenderLimit(f"over {MAX_LOOP_TURNS} loop turns in one render")
            _render_budget.turns = left - 1
            _tick(body_nodes)
        yield item


@pass_context
def _searched(_context, text):
    """What an `in` test searches, counted: its cost is the text's length."""
    if isinstance(text, _SEQUENCES):
        _charge(len(text))
    return text


@pass_context
def _compared(_context, value):
    """A list or tuple compared (`==`, `<`), counted: item by item, in
    Python. Text compares in C, in one pass."""
    if isinstance(value, (list, tuple)):
        _charge(len(value))
    else:
        _tick()
    return value


@pass_context
def _tested(_context, value):
    """What a test (`is lower`, `is eq(y)`) reads, counted: it may scan text
    or compare lists item by item."""
    _charge(_size(value))
    return value


def _count_work(tree: nodes.Template, env: Environment) -> nodes.Template:
    """The template with each loop's turns, each `in` test's text and each
    list compared counted at render (the sandbox has no hook for these)."""
    def counted(expr: nodes.Expr, name: str, *args: nodes.Expr) -> nodes.Filter:
        return nodes.Filter(expr, name, list(args), [], None, None, lineno=expr.lineno)

    for loop in tree.find_all(nodes.For):
        body_nodes = sum(1 + sum(1 for _ in node.find_all(nodes.Node)) for node in loop.body)
        loop.iter = counted(loop.iter, "_turns", nodes.Const(max(body_nodes, 1)))
    for compare in tree.find_all(nodes.Compare):
        compare.expr = counted(compare.expr, "_compared")
        for operand in compare.ops:
            operand.expr = counted(operand.expr,
                                   "_searched" if operand.op in ("in", "notin") else "_compared")
    for test in tree.find_all(nodes.Test):
        test.node = counted(test.node, "_tested")
        test.args = [counted(arg, "_tested") for arg in test.args]
    tree.set_environment(env)
    return tree


def _charged_wordwrap(wordwrap):
    """wordwrap, what it will build counted first: the text and a wrapstring
    for every line (a 10,000-character one at width 1 is 100 MB), and the
    copies it makes of a word longer than a line (the rest of the word,
    once a line: 249,000 characters at width 1 took 0.8 s). Refused while
    Jinja folds constants at compile too, which then leaves the call to the
    render."""
    @functools.wraps(wordwrap)
    def charged(environment, s, width=79, break_long_words=True, wrapstring=None,
                break_on_hyphens=True):
        text = str(s)
        joint = str(environment.newline_sequence if wrapstring is None else wrapstring)
        line = max(int(width), 1)
        _too_long(len(text) + (len(text) // line + 1) * len(joint))
        _too_long(sum(len(word) ** 2 // (2 * line) for word in text.split() if len(word) > line))
        return wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)
    return charged


def _charged_join(join):
    """join, what it will build counted first: its items and every separator
    (20,000 items joined by a 50,000-character one is 1 GB)."""
    @functools.wraps(join)
    def charged(eval_ctx, value, d="", attribute=None):
        if attribute is not None:  # a lookup per item and dotted part: 30 million took 1.4 s
            raise RenderLimit("join(attribute=...) is not allowed")
        if isinstance(value, _SEQUENCES):
            _affordable(len(value))  # before list() copies it item by item
        items = list(value)
        _too_long(sum(len(str(item)) for item in items) + len(str(d)) * max(len(items) - 1, 0))
        return join(eval_ctx, items, d, attribute)
    return charged


MAX_NUMBER_BITS = 4096
MAX_TEXT_ARGUMENT = 100   # a separator, a prefix, characters to strip


def _size(value) -> int:
    """The characters (or items) a value holds, its strings' and its nested
    lists' and dicts' among them (template_syntax bounds their nesting)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(_size(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(_size(key) + _size(item) for key, item in value.items())
    return 0


def _product_bits(operator: str, left: int, right: int) -> int:
    """How many bits the product or power would have, without making it."""
    if operator == "*":
        return abs(left).bit_length() + abs(right).bit_length()
    if right <= 0 or abs(left) <= 1:
        return 1
    return abs(left).bit_length() * right


_COSTLY_FILTERS = ("striptags", "urlencode", "title", "capitalize", "truncate",
                   "replace", "upper", "lower", "trim", "escape", "e")
# str.format and format_map build to any width their format asks
# ("{:>300000000}"), before anything can count what they built.
_UNBOUNDED_METHODS = frozenset({"format", "format_map"})


class _BudgetedCodeGenerator(CodeGenerator):
    """`a ~ b` is compiled to a join of its parts, and a slice (`a[::-1]`)
    to Python's own subscript: no hook of the sandbox sees either, so each
    is counted against the render's budget here (a join before it is made:
    2,000 parts of a 300 kB value built 570 MB first)."""

    def visit_Concat(self, node, frame):
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.measured((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")

    def visit_Getitem(self, node, frame):
        if not isinstance(node.arg, nodes.Slice):
            return super().visit_Getitem(node, frame)
        self.write("environment.counted(")
        super().visit_Getitem(node, frame)
        self.write(")")


def _is_missing_merge_data(value) -> bool:
    """An attribute or key the merge data lacks (`fields.bio`, and what is
    read from it): calling it is missing too, as the value was. Not a name
    that exists nowhere (`range`), nor an attribute the sandbox hid (its
    undefined raises SecurityError)."""
    return (isinstance(value, Undefined) and value._undefined_obj is not missing
            and value._undefined_exception is not SecurityError)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the arithmetic that can build something huge from a
    short template bounded (`{{ 9 ** 999999999 }}` took a worker for
    minutes, at save, since Jinja folds constants when it compiles). A
    repetition is bounded by what it builds, not by its count alone:
    ("ab" * 10000 * 10000 * 10) passed a count check and built 2*10**9."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BudgetedCodeGenerator

    @staticmethod
    def counted(value):
        _too_long(_size(value))
        return value

    @staticmethod
    def measured(parts: tuple) -> tuple:
        parts = tuple(_printable(part) for part in parts)
        limit = _most_affordable()
        total = 0
        for part in parts:  # measuring is work too: stop once past what may be built
            total += _size(part)
            if total > limit:
                break
        _too_long(total)
        return parts

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own names)
        """A method call (`name.center(9)`): no number over MAX_REPEAT in it
        (`'x'.center(300000000)` allocated 300 MB first), no str.format; the
        text it reads and what it returns counted against the render's
        budget (`a.isdigit()` over a 300 kB literal, 10,000 times, took 12 s
        and returned a bool; `a.partition(..)` three strings, counted as 3)."""
        _tick()
        if _is_missing_merge_data(__obj):  # fields.bio.split(), without a bio
            return __obj
        if getattr(__obj, "__name__", None) in _UNBOUNDED_METHODS:  # the sandbox wraps them
            raise RenderLimit("str.format is not allowed; use ~ and filters")
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and abs(arg) > MAX_REPEAT:
                raise RenderLimit(f"a number over {MAX_REPEAT} in a call")
            if isinstance(arg, str) and len(arg) > MAX_TEXT_ARGUMENT:
                # rfind, rsplit and strip cost the text times the argument
                raise RenderLimit(f"text of over {MAX_TEXT_ARGUMENT} characters in a call")
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, _SEQUENCES):
            _charge(len(receiver))
        result = super().call(__context, __obj, *args, **kwargs)
        _too_long(_size(result))
        return result


    def getattr(self, obj, attribute):
        """Merge data's own keys before a dict's methods: a custom field
        named "copy" or "update" rendered empty (Jinja tries the attribute
        first, and found the method). Not before the methods a template may
        call (get, keys, values, items): `fields.get('city')` must not
        become a call of a contact's "get" field; such a field is
        `fields['items']`."""
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj \
                and attribute not in template_syntax.CALLABLE_METHODS:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj, attr, value):
        """Of any value, only the methods template_syntax allows: of text,
        those that cannot build more than they read (encode() made bytes no
        bound counted, expandtabs(), center() or a literal's join() a
        hundred times the text, allocated before any count; int.to_bytes()
        and from_bytes() a number of millions of bits). The syntax check
        refuses any other call before it runs; this holds whatever reaches
        an attribute."""
        if callable(value) and attr not in template_syntax.CALLABLE_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise RenderLimit(f"an exponent over {MAX_EXPONENT}")
        if operator in ("**", "*") and isinstance(left, int) and isinstance(right, int) \
                and _product_bits(operator, left, right) > MAX_NUMBER_BITS:
            raise RenderLimit(f"a number over {MAX_NUMBER_BITS} bits")  # ((9**64)**64)**64
        if operator == "*" and any(isinstance(a, (list, tuple)) for a in (left, right)):
            # [[name] * 10000] * 10000 is 10,000 items twice, and printed 3 GB
            raise RenderLimit("a list cannot be repeated")
        if operator == "*" and any(isinstance(a, str) for a in (left, right)) \
                and any(isinstance(a, int) for a in (left, right)):
            count = left if isinstance(left, int) else right
            sequence = right if isinstance(left, int) else left
            if count > MAX_REPEAT:
                raise RenderLimit(f"a repetition over {MAX_REPEAT}")
            _too_long(len(sequence) * count)
        if operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            _too_long(len(left) + len(right))
        if operator == "%" and isinstance(left, str):
            _check_format(left, right)
        return super().call_binop(context, operator, left, right)


# "%.2f" % price, "%05d" % number: conversions of one number or short text
# each, widths and precisions of two digits ("%999999999s" % x built 1 GB).
# Possessive (*+): the plain form kept a backtracking record for every
# character, 114 MB for a 1 MB format.
_SIMPLE_FORMAT = re.compile(r"(?:[^%]|%%|%[-+ 0#]?\d{0,2}(?:\.\d{1,2})?[sdifeEgGxXo])*+",
                            re.DOTALL)
_FORMAT_VALUES = (str, int, float, bool, type(None))


def _check_format(text: str, values) -> None:
    values = values if isinstance(values, tuple) else (values,)
    _affordable(len(text))
    if not _SIMPLE_FORMAT.fullmatch(text):
        raise RenderLimit("only simple % conversions: %s, %d, %.2f, %5.1f...")
    if not all(isinstance(value, _FORMAT_VALUES) for value in values):
        raise RenderLimit("% formats text and numbers only")
    _too_long(len(text) + sum(len(v) if isinstance(v, str) else 100 for v in values))


@pass_eval_context
def _bounded_replace(eval_ctx, s, old, new, count=None):
    """replace, refused before it builds more than a render may hold: a
    chain of them took 1 GB at save (Jinja folds constant filter calls
    when it compiles; a refusal there just leaves the call to the render)."""
    text, old_text, new_text = str(s), str(old), str(new)
    found = text.count(old_text) if old_text else len(text) + 1
    if count is not None:
        found = min(found, max(count, 0))
    _too_long(len(text) + found * (len(new_text) - len(old_text)))
    return do_replace(eval_ctx, s, old, new, count)


def _bounded_round(do_round):
    """round, its precision bounded: 'floor' and 'ceil' compute 10 ** precision."""
    @functools.wraps(do_round)
    def bounded(value, precision=0, method="common"):
        if isinstance(precision, int) and abs(precision) > MAX_ROUND_PRECISION:
            raise RenderLimit(f"a precision over {MAX_ROUND_PRECISION} digits in round")
        return do_round(value, precision, method)
    return bounded


MAX_NUMBER_TEXT = 1_200   # digits: about 4,000 bits


def _number_of_short_text(convert, name: str):
    """int or float, of text of at most MAX_NUMBER_TEXT characters: int's
    parsing is quadratic, and a number of millions of bits divides for
    seconds; a failing float copied all of a 300 kB text into its error."""
    @functools.wraps(convert)
    def bounded(value, *args, **kwargs):
        if isinstance(value, str) and len(value) > MAX_NUMBER_TEXT:
            raise RenderLimit(f"{name} of text over {MAX_NUMBER_TEXT} characters")
        return convert(value, *args, **kwargs)
    return bounded


def _bounded_trim(do_trim):
    """trim, its characters to strip bounded: the cost is the text times them."""
    @functools.wraps(do_trim)
    def bounded(value, chars=None):
        if chars is not None and len(str(chars)) > MAX_TEXT_ARGUMENT:
            raise RenderLimit(f"trim of over {MAX_TEXT_ARGUMENT} characters")
        return do_trim(value, chars)
    return bounded


def _ticking(template_filter):
    """The filter, ticking the render's CPU clock (see _tick)."""
    @functools.wraps(template_filter)
    def ticking(*args, **kwargs):
        _tick()
        return template_filter(*args, **kwargs)
    return ticking


def _printable(value):
    """What `{{ ... }}` prints: nothing for a method (`{{ fields.get }}`
    printed its address)."""
    return "" if callable(value) and not isinstance(value, Undefined) else value


def make_environment(html: bool) -> Environment:
    env = _BoundedEnvironment(autoescape=html, undefined=ChainableUndefined,
                              auto_reload=False, cache_size=0, finalize=_printable)
    # Jinja's optimizer tries to fold every sub-expression at every level:
    # 250 chains of 37 filters took 4.6 s to compile, at save and in each
    # sender. Constant output is still folded as it is written.
    env.optimized = False
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS}
    env.tests = {name: env.tests[name] for name in template_syntax.ALLOWED_TESTS}
    env.filters["replace"] = _bounded_replace
    env.filters["round"] = _bounded_round(env.filters["round"])
    for name in ("int", "float"):
        env.filters[name] = _number_of_short_text(env.filters[name], name)
    for name in _COSTLY_FILTERS:
        env.filters[name] = _charged(env.filters[name])
    env.filters["join"] = _charged_join(env.filters["join"])
    env.filters["wordwrap"] = _charged_wordwrap(env.filters["wordwrap"])
    env.filters["trim"] = _bounded_trim(env.filters["trim"])
    env.filters = {name: _ticking(f) for name, f in env.filters.items()}
    env.filters.update(_turns=_turns, _searched=_searched, _compared=_compared,
                       _tested=_tested)  # see _count_work
    env.globals.clear()
    return env


_ENVIRONMENTS = {True: make_environment(True), False: make_environment(False)}


@lru_cache(maxsize=256)
def compile_template(source: str, html: bool) -> Template:
    """The compiled template (cached: a campaign compiles each part once)."""
    env = _ENVIRONMENTS[html]
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): no message can carry it
        raise TemplateSyntaxProblem(None, "not valid Unicode text") from None
    try:
        problem = template_syntax.token_problem(env.lex(source))
        tree = None if problem else env.parse(source)
        problem = problem or template_syntax.problem(tree)
        if problem:
            raise TemplateSyntaxProblem(*problem)
        # Jinja folds constant expressions as it compiles, outside any
        # render: they are charged to a budget of their own (a refusal
        # there leaves the expression to each render, and its budget).
        _render_budget.left = MAX_BUILT_PER_RENDER
        return env.from_string(_count_work(tree, env))
    except TemplateSyntaxProblem:
        raise
    except TemplateSyntaxError as exc:  # includes unknown filters (TemplateAssertionError)
        message = exc.message or str(exc)
        if message.startswith("No filter named"):
            message += " The filters are: " + ", ".join(sorted(ALLOWED_FILTERS)) + "."
        raise TemplateSyntaxProblem(exc.lineno, message) from None
    except TemplateError as exc:
        raise TemplateSyntaxProblem(None, str(exc)) from None
    except (RecursionError, SyntaxError, MemoryError, ValueError) as exc:  # Python's own
        raise TemplateSyntaxProblem(None, f"too large or too deeply nested to compile "
                                          f"({type(exc).__name__})") from None
    finally:
        _render_budget.left = None


# Template text Jinja does not render as markup: a raw block is output as it
# stands, its {{ }} unfilled, and a comment not at all. An unclosed one runs
# to the end (the template then fails to compile, and is refused at save).
_UNRENDERED = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}.*?(?:\{%[-+]?\s*endraw\s*[-+]?%\}|\Z)"
                         r"|\{#.*?(?:#\}|\Z)", re.DOTALL)


def unrendered_spans(source: str) -> list[tuple[int, int]]:
    """(start, end) of the template's raw blocks and comments."""
    return [m.span() for m in _UNRENDERED.finditer(source)] if "{" in source else []


def refers_to(source: str, name: str, html: bool) -> bool:
    """Whether the template reads the merge variable `name`: in a comment,
    as text, or as fields.<name> it does not ("unsubscribe_url" in the
    source said yes to all three, and such mail went out without a link)."""
    try:
        return name in meta.find_undeclared_variables(_ENVIRONMENTS[html].parse(source))
    except TemplateSyntaxError:
        return False


def check(source: str, html: bool) -> None:
    """Raise TemplateSyntaxProblem unless `source` compiles in the sandbox
    and uses nothing the sandbox refuses or hides."""
    compile_template(source, html)


def render(source: str, context: Mapping[str, Any], html: bool) -> str:
    return render_compiled(compile_template(source, html), context)


def render_compiled(template: Template, context: Mapping[str, Any]) -> str:
    """The rendered text; TemplateRenderProblem for whatever stops it (the
    sandbox's refusals, `"a" + 1`, output over MAX_RENDERED_CHARS): the
    same version fails the same way for every recipient, so retrying it
    would only hold its partition."""
    _render_budget.left, _render_budget.turns = MAX_BUILT_PER_RENDER, MAX_LOOP_TURNS
    _render_budget.ticks = _TICKS_BETWEEN_CLOCK_READS
    _render_budget.deadline = time.thread_time() + MAX_RENDER_SECONDS
    try:
        parts, size = [], 0
        for part in template.generate(context):
            size += len(part)
            if size > MAX_RENDERED_CHARS:
                raise TemplateRenderProblem(f"renders to over {MAX_RENDERED_CHARS} characters")
            parts.append(part)
        return "".join(parts)
    except TemplateRenderProblem:
        raise
    except RenderLimit as exc:
        raise TemplateRenderProblem(str(exc), _template_line(exc.__traceback__)) from None
    except Exception as exc:  # SecurityError, TypeError, RecursionError, ...
        raise TemplateRenderProblem(f"{type(exc).__name__}: {exc}"[:300],
                                    _template_line(exc.__traceback__),
                                    type(exc).__name__) from None
    finally:
        _render_budget.left = _render_budget.turns = _render_budget.ticks = None


def _template_line(traceback) -> int | None:
    """The template line a render stopped at: Jinja rewrites the traceback
    so that the template's frames carry its own line numbers."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def html_with_preheader(html: str, preheader: str) -> str:
    """The HTML part's source as the sender compiles it: the preheader in a
    hidden block first in the body, one template with it (so campaigns'
    trial render at save sees what every recipient's render will)."""
    if not preheader:
        return html
    hidden = ('<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
              f"{preheader}</div>")
    match = _BODY_OPEN.search(html)
    return html[:match.end()] + hidden + html[match.end():] if match else hidden + html


def merge_context(email: str, name: str | None, fields: Mapping[str, Any] | None,
                  **extra: Any) -> dict[str, Any]:
    """An absent name or field is left undefined, so `default(...)` applies."""
    contact: dict[str, Any] = {"email": email, "fields": {k: v for k, v in (fields or {}).items()
                                                          if v is not None and v != ""}}
    if name:
        contact["name"] = name
    return {**contact, "contact": contact, **extra}
