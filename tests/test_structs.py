"""roargit.structs.NamedTuple behaves as typing.NamedTuple does, for what roargit uses."""

from __future__ import annotations

import copy
import pickle
import typing
from typing import Any

import pytest

from roargit.structs import NamedTuple as FastNamedTuple


def _define(base: typing.Any) -> typing.Any:
    class Ref(base):
        """A file by path and hash."""

        path: str
        hash: str
        size: int = 0
        kind: str = "file"

        @property
        def is_dir(self) -> bool:
            return self.kind == "dir"

        def label(self) -> str:
            return f"{self.path}@{self.hash}"

    return Ref


BOTH = pytest.mark.parametrize("base", [typing.NamedTuple, FastNamedTuple], ids=["typing", "fast"])


@BOTH
def test_fields_defaults_and_methods(base: typing.Any) -> None:
    ref_type = _define(base)
    ref = ref_type("a.csv", "ab12")
    assert ref == ("a.csv", "ab12", 0, "file")
    assert ref.path == "a.csv" and ref[1] == "ab12" and ref.size == 0
    assert ref_type("d/", "cd", kind="dir").is_dir
    assert ref.label() == "a.csv@ab12"
    assert ref_type._fields == ("path", "hash", "size", "kind")
    assert ref_type._field_defaults == {"size": 0, "kind": "file"}
    assert ref_type.__match_args__ == ref_type._fields
    assert ref_type.__doc__ == "A file by path and hash."
    assert isinstance(ref, tuple) and hash(ref) == hash(tuple(ref))
    assert ref_type(path="p", hash="h", size=3) == ("p", "h", 3, "file")
    assert ref_type("p", "h", 1, "dir") == ref_type("p", "h", 1, kind="dir")


@BOTH
def test_replace_make_asdict_repr(base: typing.Any) -> None:
    ref_type = _define(base)
    ref = ref_type("a", "b", 2)
    assert ref._replace(size=5) == ("a", "b", 5, "file")
    assert type(ref._replace(size=5)) is ref_type
    assert ref_type._make(["x", "y", 1, "dir"]) == ("x", "y", 1, "dir")
    assert ref._asdict() == {"path": "a", "hash": "b", "size": 2, "kind": "file"}
    assert repr(ref) == "Ref(path='a', hash='b', size=2, kind='file')"
    with pytest.raises(ValueError):
        ref._replace(colour="red")
    with pytest.raises(TypeError):
        ref_type._make(["x"])


@BOTH
def test_read_only_and_errors(base: typing.Any) -> None:
    ref_type = _define(base)
    ref = ref_type("a", "b")
    with pytest.raises(AttributeError):
        ref.path = "c"
    with pytest.raises(AttributeError):
        ref.colour = "red"
    with pytest.raises(TypeError, match="missing"):
        ref_type("a")
    with pytest.raises(TypeError, match="unexpected keyword"):
        ref_type("a", "b", colour="red")
    with pytest.raises(TypeError, match="multiple values"):
        ref_type("a", "b", path="c")
    with pytest.raises(TypeError, match="positional"):
        ref_type("a", "b", 1, "dir", "extra")


@BOTH
def test_class_definition_rules(base: typing.Any) -> None:
    with pytest.raises(TypeError, match="cannot follow default"):

        class Bad(base):
            a: int = 1
            b: int

    with pytest.raises(AttributeError, match="overwrite"):

        class Worse(base):
            a: int

            def _replace(self) -> None: ...


def test_pickle_copy_and_subclass() -> None:
    ref = Pickled("a", 1)
    assert pickle.loads(pickle.dumps(ref)) == ref
    assert type(pickle.loads(pickle.dumps(ref))) is Pickled
    assert copy.deepcopy(ref) == ref and copy.copy(ref) is not None

    class Sub(Pickled):
        def twice(self) -> int:
            return self.n * 2

    assert Sub("b", 4).twice() == 8 and Sub("b", 4).name == "b"


class Pickled(FastNamedTuple):
    name: str
    n: int


def test_classes_of_every_width_take_their_fields_by_position_and_keyword() -> None:
    """Arities 1 to 20 use the written-out templates; wider ones compile their own."""
    for width in (1, 2, 7, 20, 21, 30):
        names = [f"f{i}" for i in range(width)]
        ns: dict[str, object] = {"__annotations__": dict.fromkeys(names, "int")}
        ns["f" + str(width - 1)] = -1  # the last one has a default
        meta: Any = type(FastNamedTuple)  # the class statement, spelt as a call
        wide = meta(f"W{width}", (FastNamedTuple,), ns)
        full = wide(*range(width))
        assert tuple(full) == tuple(range(width)) and full._fields == tuple(names)
        assert wide(*range(width - 1)) == (*range(width - 1), -1)
        assert wide(**{n: i for i, n in enumerate(names)}) == full
