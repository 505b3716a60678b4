"""roargit: git-native lineage for ML and data pipelines."""

__version__ = "0.1.0"

#: typing.TYPE_CHECKING without importing typing (~2 ms of every `roar run`'s start-up): the
#: modules `roar run` loads import typing's names for annotations only, under `if
#: TYPE_CHECKING:`, which type checkers take as true by its name.
TYPE_CHECKING = False
