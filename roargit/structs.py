"""`NamedTuple` for roargit's records, made without `typing`'s cost at import.

`typing.NamedTuple` spends 100-190 µs making each class: it checks every annotation (each a
string here, so a ForwardRef apiece) and compiles a `__new__` with `exec`. `roar run` defines
some fifty such classes before it starts the command: 5-9 ms of a fixed cost whose whole
budget beyond the interpreter is about 25 ms (benchmarks/bench_run.py, `fixed_cost`).

This one builds the same kind of class, a tuple subclass with named read-only fields,
trailing defaults, `_fields`, `_field_defaults`, `_make`, `_replace`, `_asdict`, a `repr`,
pickling and the class's own methods and properties, in about 10 µs and with no code
compiled but one `__new__` per number of fields. Instances cost what typing's do.
Type checkers see `typing.NamedTuple`, whose behaviour this mirrors (tests/test_structs.py
holds both to the same checks).
"""

from __future__ import annotations

import collections
import sys
from operator import itemgetter
from types import CodeType, FunctionType

from roargit import TYPE_CHECKING


def _field_property(index: int, doc: str) -> Any:
    return property(itemgetter(index), doc=doc)


# What collections.namedtuple uses where it has it: a field read with no Python-level call.
_tuplegetter = getattr(collections, "_tuplegetter", _field_property)
_tuple_new = tuple.__new__

# What a class body may not define: the class's own machinery (as typing.NamedTuple refuses).
_RESERVED = frozenset(
    {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults",
     "_make", "_replace", "_asdict", "_source"}
)  # fmt: skip


# `__new__` of each arity: a class's own is this code with its field names put in place of
# a, b, c, …, so that it takes them by position and by keyword, with defaults, at the speed of
# the `__new__` collections.namedtuple compiles for every class. Written out rather than
# compiled at start-up (1.8 ms of `roar run`): their bytecode comes from this module's cache.
# fmt: off
def _n1(_, a):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a,))


def _n2(_, a, b):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b))


def _n3(_, a, b, c):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c))


def _n4(_, a, b, c, d):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d))


def _n5(_, a, b, c, d, e):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e))


def _n6(_, a, b, c, d, e, f):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f))


def _n7(_, a, b, c, d, e, f, g):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g))


def _n8(_, a, b, c, d, e, f, g, h):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h))


def _n9(_, a, b, c, d, e, f, g, h, i):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i))


def _n10(_, a, b, c, d, e, f, g, h, i, j):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j))


def _n11(_, a, b, c, d, e, f, g, h, i, j, k):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k))


def _n12(_, a, b, c, d, e, f, g, h, i, j, k, m):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m))


def _n13(_, a, b, c, d, e, f, g, h, i, j, k, m, n):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n))


def _n14(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o))


def _n15(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o, p):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p))


def _n16(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q))


def _n17(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r))


def _n18(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s))


def _n19(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t))


def _n20(_, a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t, u):  # type: ignore[no-untyped-def]
    return _tuple_new(_, (a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t, u))


# fmt: on
_WRITTEN = (
    _n1,
    _n2,
    _n3,
    _n4,
    _n5,
    _n6,
    _n7,
    _n8,
    _n9,
    _n10,
    _n11,
    _n12,
    _n13,
    _n14,
    _n15,
    _n16,
    _n17,
    _n18,
    _n19,
    _n20,
)  # fmt: skip
_TEMPLATES: dict[int, CodeType] = {n: f.__code__ for n, f in enumerate(_WRITTEN, start=1)}


def _new_code(count: int) -> CodeType:
    """The template of `count` fields (compiled here for an arity not written out above)."""
    code = _TEMPLATES.get(count)
    if code is None:
        names = ", ".join(f"a{i}" for i in range(count))
        values = names + ("," if count == 1 else "")
        source = f"def __new__(_cls, {names}):\n    return _tuple_new(_cls, ({values}))\n"
        scope: dict[str, Any] = {}
        exec(compile(source, "<roargit.structs>", "exec"), {}, scope)
        code = _TEMPLATES[count] = scope["__new__"].__code__
    return code


def _new(name: str, qualname: str, fields: tuple[str, ...], defaults: tuple[Any, ...]) -> Any:
    names: dict[str, Any] = {"co_varnames": ("_cls", *fields), "co_name": "__new__"}
    if sys.version_info >= (3, 11):
        names["co_qualname"] = f"{qualname}.__new__"
    code = _new_code(len(fields)).replace(**names)
    new = FunctionType(code, {"_tuple_new": _tuple_new}, "__new__", defaults or None)
    new.__doc__ = f"Create new instance of {name}({', '.join(fields)})"
    return new


def _build(name: str, ns: dict[str, Any]) -> type:
    annotations = ns.get("__annotations__", {})
    fields = tuple(annotations)
    defaults: dict[str, Any] = {}
    for field in fields:
        if field in ns:
            defaults[field] = ns[field]
        elif defaults:
            raise TypeError(
                f"Non-default namedtuple field {field} cannot follow default field"
                f"{'s' if len(defaults) > 1 else ''} {', '.join(defaults)}"
            )
        if field.startswith("_"):
            raise ValueError(f"Field names cannot start with an underscore: {field!r}")
    for key in ns:
        if key in _RESERVED:
            raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
    count = len(fields)
    __new__ = _new(name, ns.get("__qualname__", name), fields, tuple(defaults.values()))

    def _make(cls: type, iterable: Any) -> Any:
        values = tuple(iterable)
        if len(values) != count:
            raise TypeError(f"Expected {count} arguments, got {len(values)}")
        return _tuple_new(cls, values)

    def _replace(self: tuple[Any, ...], **changes: Any) -> Any:
        pairs = zip(fields, self, strict=True)
        values = tuple(changes.pop(f) if f in changes else v for f, v in pairs)
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return _tuple_new(type(self), values)

    def _asdict(self: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(fields, self, strict=True))

    def __repr__(self: tuple[Any, ...]) -> str:
        shown = ", ".join(f"{f}={v!r}" for f, v in zip(fields, self, strict=True))
        return f"{type(self).__name__}({shown})"

    def __getnewargs__(self: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self)

    attrs = {k: v for k, v in ns.items() if k not in defaults}
    attrs.update(
        __slots__=(),
        __new__=__new__,
        _make=classmethod(_make),
        _replace=_replace,
        _asdict=_asdict,
        __getnewargs__=__getnewargs__,
        _fields=fields,
        _field_defaults=defaults,
        __match_args__=fields,
    )
    attrs.setdefault("__repr__", __repr__)
    if attrs.get("__doc__") is None:
        attrs["__doc__"] = f"{name}({', '.join(fields)})"
    for index, field in enumerate(fields):
        attrs[field] = _tuplegetter(index, f"Alias for field number {index}")
    return type(name, (tuple,), attrs)


class _NamedTupleMeta(type):
    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        if ns.get("_root_"):
            return super().__new__(mcls, name, bases, ns)
        if bases != (_Root,):
            raise TypeError("a NamedTuple class can only have NamedTuple as its base")
        return _build(name, ns)


class _Root(metaclass=_NamedTupleMeta):
    _root_ = True


if TYPE_CHECKING:
    from typing import Any
    from typing import NamedTuple as NamedTuple
else:
    NamedTuple = _Root
