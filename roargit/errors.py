"""Conditions roargit reports to users.

Every error a user can cause or meet in normal use is a `RoarError`: the CLI prints its
message on one line and exits 1. Anything else is a bug and gets a short report plus a log.
"""

from __future__ import annotations


class RoarError(Exception):
    """A known condition with a one-line, user-facing message."""


class NotAGitRepo(RoarError):
    """roargit keeps its records in the user's git repository, so it needs one."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"not a git repository (or any parent up to /): {path}; run `git init` first"
        )


class GitMissing(RoarError):
    """No `git` executable on PATH."""

    def __init__(self) -> None:
        super().__init__("git was not found on PATH: roar needs git (2.36 or newer) installed")


class GitFailed(RoarError):
    """The `git` subprocess failed; carries everything needed to understand why."""

    def __init__(self, cmd: list[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.decode(errors="replace").strip().splitlines()
        last = detail[-1] if detail else f"exit status {returncode}"
        super().__init__(f"git {' '.join(cmd[1:3])} failed: {last}")


class RecordCorrupt(RoarError):
    """A record (or manifest) that cannot be used: bytes that are not a record, bytes that do
    not hash to the id they are stored under, or a field that breaks the schema.

    `field` is the dotted path of the offending field (`environment.os`, `inputs[3].hash`) and
    `why` then says what it must be; `source` names the remote the record was fetched from.
    """

    def __init__(
        self, name: str, why: str, *, source: str | None = None, field: str | None = None
    ) -> None:
        self.name = name
        self.why = why
        self.source = source
        self.field = field
        where = f"record {name}" + (f" from {source}" if source else "")
        if field is None:
            super().__init__(f"{where} is corrupt: {why}")
        else:
            super().__init__(f"{where} is malformed: {field} {why}")


class RecordTooNew(RoarError):
    def __init__(self, name: str, version: int, supported: int, source: str | None = None) -> None:
        self.name = name
        self.source = source
        where = f"record {name}" + (f" from {source}" if source else "")
        super().__init__(
            f"{where} has schema version {version}; this roargit reads up to "
            f"{supported}: upgrade roargit"
        )


class NoMatch(RoarError):
    def __init__(self, ref: str, hint: str = "") -> None:
        said = f"no artifact, run or step matches '{ref}'"
        super().__init__(f"{said} ({hint})" if hint else said)


class AmbiguousPrefix(RoarError):
    def __init__(self, prefix: str, candidates: list[str]) -> None:
        self.candidates = candidates
        shown = ", ".join(c[:16] for c in candidates[:10])
        more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
        super().__init__(f"'{prefix}' is ambiguous: it matches {shown}{more}")


class PrefixTooShort(RoarError):
    def __init__(self, prefix: str) -> None:
        super().__init__(f"'{prefix}' is too short: give at least 6 hex characters")


class BlobMissing(RoarError):
    def __init__(self, digest: str, where: str) -> None:
        super().__init__(f"blob {digest[:16]} is not in {where}")


class BlobCorrupt(RoarError):
    def __init__(self, digest: str, where: str, actual: str) -> None:
        super().__init__(
            f"blob {digest[:16]} in {where} is corrupt (its content hashes to {actual[:16]}); "
            "it was not used"
        )


class ConfigError(RoarError):
    pass


class TracerUnavailable(RoarError):
    pass


class RunElsewhere(BaseException):
    """A run the resident recorder's child cannot take, raised before its command starts:
    the `roar` front end then runs roar the slow way (roargit/recorder.py). A BaseException,
    so that no handler for failures takes it for one. `retire`: no run of this user can be
    taken by a recorder (ptrace is refused here), so the recorder ends."""

    def __init__(self, why: str, retire: bool = False) -> None:
        super().__init__(why)
        self.retire = retire


class FileChanged(RoarError):
    """Files that kept changing while they were hashed: their digests name no real state."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
        super().__init__(f"{paths[0]} changed while it was being hashed{more}")


class DigestMismatch(RoarError):
    """Content offered to a blob store under a name (digest) that is not its hash."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{what} hashes to {actual[:16]}, not {expected[:16]} as claimed; it was not stored"
        )
