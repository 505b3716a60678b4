"""Content-addressed blob stores: a local folder, `memory://`, `s3://…`, any fsspec URL.

A blob is stored at `<root>/blake3/ab/cd/<64 hex>`, named by the BLAKE3-256 of its bytes.

- Writes are atomic and never replace a blob: a local store writes a temp file in the
  blob's own folder and `link()`s it into place (link fails if the name exists, where
  rename would silently replace); S3 uploads straight to the final key with
  `If-None-Match: *` (a PUT or a completed multipart upload becomes visible all at once,
  and the condition refuses to overwrite); other filesystems write a temp object under
  `<root>/tmp/` and move it into place if the name is still free (a check, not a lock:
  two writers racing on one blob there may both move, and the second replaces the first
  with the same, verified bytes).
- Content is hashed while it streams in; a digest the caller claimed but the content does
  not match is refused (`DigestMismatch`) before anything becomes visible under that name.
- Every read is hashed while it streams; a blob whose bytes do not match its name raises
  `BlobCorrupt` and none of its bytes reach the caller (`get_file` writes a temp file next
  to the destination and renames it into place only after the check).
- Memory stays constant for files of any size (4 MiB chunks), except `get_bytes`.
- A remote store answers in bounded time or fails (`Limits`: a timeout per request and a
  number of retries), and a failed S3 upload is closed and aborted, never left for a
  finaliser to finish.

Local folders (`file://` and plain paths) are served with `os` directly; fsspec, whose
import would weigh on every command's start-up, is imported only for other URLs.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol, Union

from blake3 import blake3

from roargit.errors import BlobCorrupt, BlobMissing, DigestMismatch, RoarError
from roargit.hashing import hash_file
from roargit.structs import NamedTuple

StrPath = Union[str, "os.PathLike[str]"]

CHUNK = 4 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Object stores whose writes become visible only on commit (close), all at once.
_COMMIT_ON_CLOSE = frozenset({"s3", "s3a"})


def check_digest(digest: str) -> str:
    """`digest` if it is 64 lowercase hex, else ValueError (a bug in the caller, not data)."""
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError(f"not a BLAKE3-256 hex digest: {digest!r}")
    return digest


def _relpath(digest: str) -> str:
    return f"blake3/{digest[:2]}/{digest[2:4]}/{digest}"


def _read_chunks(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    def commit(self) -> bool: ...  # False if the blob was already there
    def abort(self) -> None: ...


class _Backend(Protocol):
    def exists(self, rel: str) -> bool: ...
    def open_read(self, rel: str) -> IO[bytes]: ...  # FileNotFoundError if missing
    def begin(self, rel: str) -> _Writer: ...
    def list_rel(self) -> Iterator[str]: ...


class StoreDenied(RoarError, PermissionError):
    """The store refused this process's credentials for a blob (an S3 key limited to other
    prefixes, a folder it may not read): the store decides who reads its bytes. Still a
    PermissionError, for the callers that sort store failures by kind (uploads.cause)."""

    def __init__(self, digest: str, where: str) -> None:
        super().__init__(f"{where} denied access to blob {digest[:16]} (your credentials for "
                         "that store do not cover it)")  # fmt: skip


class Limits(NamedTuple):
    """How long a remote store may take: every request gives up after `timeout` seconds
    (to connect, and between bytes read) and is tried `retries` more times, so a dead or
    unreachable endpoint fails in bounded time instead of hanging the command. `part_size`:
    files larger than this go up in a multipart upload of parts this size (S3)."""

    timeout: float = 10.0
    retries: int = 1
    part_size: int | None = None  # None: the filesystem's own default


class BlobStore:
    """A content-addressed store at `url` (see the module docstring).

    `options` are fsspec storage options (for s3: `endpoint_url`, `key`, `secret`, …);
    anything not given comes from the environment the way s3fs/botocore read it.
    `limits` bound each request to a remote store (see `Limits`); a local folder has none.
    """

    def __init__(
        self,
        url: str,
        options: Mapping[str, Any] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.url = url
        self._backend: _Backend
        local = _local_root(url)
        if local is not None:
            self._backend = _LocalBackend(local)
        else:
            self._backend = _FsspecBackend(url, dict(options or {}), limits or Limits())

    def __repr__(self) -> str:
        return f"BlobStore({self.url!r})"

    def has(self, digest: str) -> bool:
        try:
            return self._backend.exists(_relpath(check_digest(digest)))
        except PermissionError:
            raise StoreDenied(digest, self.url) from None

    def put_bytes(self, data: bytes) -> str:
        """Store `data`; return its digest."""
        digest = blake3(data).hexdigest()
        if not holds_intact(self, digest, len(data)):
            self._put(digest, [data], what="data")
        return digest

    def put_file(self, path: StrPath, digest: str | None = None) -> str:
        """Store the file at `path`; return its digest.

        If `digest` is given (e.g. from the hash cache) and the store already has that blob,
        the file is not read at all: the store holds what the name promises, whatever the
        file holds now. Otherwise the file is hashed while it streams in, and a content that
        does not match `digest` raises `DigestMismatch` with nothing stored.
        """
        if digest is None:
            # The name must be known before the upload starts; a file that changes between
            # this hash and the upload is caught by the streaming check below.
            digest = hash_file(path).digest
        check_digest(digest)
        try:
            size: int | None = os.stat(path).st_size
        except OSError:
            size = None
        if holds_intact(self, digest, size):
            return digest
        with open(path, "rb") as f:
            self._put(digest, _read_chunks(f), what=os.fspath(path))
        return digest

    def get_bytes(self, digest: str) -> bytes:
        """The blob's bytes, verified; `BlobMissing` / `BlobCorrupt` otherwise."""
        parts: list[bytes] = []
        self._stream(digest, parts.append)
        return b"".join(parts)

    def get_file(self, digest: str, dest: StrPath) -> None:
        """Write the blob to `dest` (replacing it), verified before it appears there.

        The folder of `dest` must exist. On any failure `dest` is untouched and no temp
        file is left.
        """
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.roar-tmp")
        # 0o666 and the umask, like any file the user creates (mkstemp would give 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                self._stream(digest, out.write)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def write_to(self, digest: str, sink: Callable[[bytes], object]) -> None:
        """Stream the blob into `sink`, then check it: `BlobCorrupt` after the last chunk if
        the bytes do not match their name, so `sink` must be able to take them back (a
        temporary file that is renamed into place only when this returns)."""
        self._stream(digest, sink)

    def verify(self, digest: str) -> bool:
        """True if the blob's bytes match its name, False if corrupt; `BlobMissing` if absent."""
        try:
            self._stream(digest, lambda _chunk: None)
        except BlobCorrupt:
            return False
        return True

    def iter_digests(self) -> Iterator[str]:
        """Every digest in the store (by name; use `verify` to check content)."""
        for rel in self._backend.list_rel():
            name = rel.rsplit("/", 1)[-1]
            if _HEX64.fullmatch(name) and rel.endswith(_relpath(name)):
                yield name

    def local_path(self, digest: str) -> Path | None:
        """Where the blob lies on this machine when the store is a local folder (the file may
        be absent); None for any other store."""
        if isinstance(self._backend, _LocalBackend):
            return self._backend.root / _relpath(check_digest(digest))
        return None

    # -- internals -----------------------------------------------------------------------

    def _stream(self, digest: str, sink: Any) -> None:
        rel = _relpath(check_digest(digest))
        hasher = blake3()
        try:
            f = self._backend.open_read(rel)
        except FileNotFoundError:
            raise BlobMissing(digest, self.url) from None
        except PermissionError:
            raise StoreDenied(digest, self.url) from None
        # The sink gets every chunk only when it can still be taken back: get_bytes keeps
        # them in a list it returns only after the check, get_file writes a temp file.
        with f:
            for chunk in _read_chunks(f):
                hasher.update(chunk)
                sink(chunk)
        actual = hasher.hexdigest()
        if actual != digest:
            raise BlobCorrupt(digest, self.url, actual)

    def _put(self, digest: str, chunks: Iterable[bytes], *, what: str) -> None:
        rel = _relpath(digest)
        writer = self._backend.begin(rel)
        try:
            hasher = blake3()
            for chunk in chunks:
                hasher.update(chunk)
                writer.write(chunk)
            actual = hasher.hexdigest()
            if actual != digest:
                raise DigestMismatch(what, digest, actual)
        except BaseException:
            # The first failure is the one to report; a failing clean-up (say the network
            # is gone) must not replace it.
            with contextlib.suppress(Exception):
                writer.abort()
            raise
        try:
            writer.commit()
        except PermissionError:
            raise StoreDenied(digest, self.url) from None


def _local_root(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" not in url and "::" not in url:
        return Path(url)
    return None


# -- local folders, with os directly ---------------------------------------------------


class _LocalWriter:
    def __init__(self, final: Path) -> None:
        self.final = final
        final.parent.mkdir(parents=True, exist_ok=True)
        # In the blob's own folder, so link() below stays on one filesystem.
        self.tmp = final.with_name(f".{final.name[:16]}.{uuid.uuid4().hex[:12]}.tmp")
        self.f = open(self.tmp, "xb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def commit(self) -> bool:
        try:
            self.f.flush()
            # The blob must be on disk before its name is: a crash must not leave a name
            # with missing bytes (the same order git uses for loose objects).
            os.fsync(self.f.fileno())
            self.f.close()
            os.chmod(self.tmp, 0o444)
            try:
                os.link(self.tmp, self.final)
            except FileExistsError:
                return False  # someone stored the same bytes first; theirs stay
            return True
        finally:
            self._cleanup()

    def abort(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        self.f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class _LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.root / rel)

    def open_read(self, rel: str) -> IO[bytes]:
        return open(self.root / rel, "rb")

    def begin(self, rel: str) -> _Writer:
        return _LocalWriter(self.root / rel)

    def list_rel(self) -> Iterator[str]:
        base = self.root / "blake3"
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                yield os.path.relpath(os.path.join(dirpath, name), self.root)


# -- anything else, through fsspec -----------------------------------------------------


class _CommitOnCloseWriter:
    """Writes straight to the final key; visible only when `close` commits it (S3).

    A failed write or commit leaves the file marked closed before anything else happens:
    s3fs's `__del__` closes an open file, which uploads and commits what is buffered through
    fsspec's event loop; run from the garbage collector or at interpreter exit (the loop
    thread gone) it could commit a partial blob or wait forever. A multipart upload left
    open is aborted best-effort, within `abort_timeout` seconds.
    """

    def __init__(self, fs: Any, path: str, abort_timeout: float) -> None:
        # "xb": s3fs sends If-None-Match: * so an existing blob is never replaced.
        self.f = fs.open(path, "xb")
        self.abort_timeout = abort_timeout

    def write(self, data: bytes) -> None:
        try:
            self.f.write(data)
        except BaseException:
            self._close_unsent()
            raise

    def commit(self) -> bool:
        try:
            self.f.close()  # marks the file closed whether or not the upload completes
        except FileExistsError:
            return False
        except BaseException:
            self._abort_upload()
            raise
        return True

    def abort(self) -> None:
        self._close_unsent()
        self._abort_upload()

    def _close_unsent(self) -> None:
        # Dropping the buffer and marking the file closed keeps close() from sending or
        # committing anything.
        self.f.buffer = None
        self.f.closed = True

    def _abort_upload(self) -> None:
        mpu, self.f.mpu = getattr(self.f, "mpu", None), None
        if not mpu:
            return
        # An upload that is never completed holds its parts in the bucket (until a lifecycle
        # rule removes them); a dead endpoint must not hold the command, hence the timeout
        # (fsspec's sync() raises FSTimeoutError when it passes).
        with contextlib.suppress(Exception):
            self.f.fs.abort_mpu(
                self.f.bucket, self.f.key, mpu["UploadId"], timeout=self.abort_timeout
            )


class _TempThenMoveWriter:
    """Writes a temp object under `<root>/tmp/`, then moves it to the free final name."""

    def __init__(self, fs: Any, root: str, path: str) -> None:
        self.fs = fs
        self.path = path
        self.tmp = f"{root}/tmp/{uuid.uuid4().hex}"
        self.f = fs.open(self.tmp, "wb")

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def commit(self) -> bool:
        self.f.close()
        if self.fs.exists(self.path):
            self._remove_tmp()
            return False
        self.fs.mv(self.tmp, self.path)
        return True

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.f.close()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.tmp)


def _s3_limits(options: dict[str, Any], limits: Limits) -> None:
    """botocore's own timeouts and retries (standard mode retries refused connections and
    timeouts with backoff); s3fs's retry loop around them is set to one try (see
    _FsspecBackend) so that the attempts do not multiply."""
    config = dict(options.get("config_kwargs") or {})
    # A connection is made in well under a second or not at all (a black-holed address):
    # waiting the whole timeout for each of several tries would only delay the verdict.
    config.setdefault("connect_timeout", min(limits.timeout, 5.0))
    config.setdefault("read_timeout", limits.timeout)
    config.setdefault("retries", {"total_max_attempts": limits.retries + 1, "mode": "standard"})
    options["config_kwargs"] = config
    if limits.part_size is not None:
        options.setdefault("default_block_size", limits.part_size)


class _FsspecBackend:
    def __init__(self, url: str, options: dict[str, Any], limits: Limits) -> None:
        from fsspec.core import url_to_fs  # lazy: only a store that is not a folder needs it

        # Blobs are immutable but other processes add them: a cached directory listing
        # would make `has` answer False for a blob stored since. Listings off, and a
        # filesystem instance of our own (fsspec caches instances by options).
        options.setdefault("use_listings_cache", False)
        options.setdefault("skip_instance_cache", True)
        s3 = url.split("://", 1)[0] in _COMMIT_ON_CLOSE
        if s3:
            _s3_limits(options, limits)
        self.fs, root = url_to_fs(url, **options)
        if s3:
            self.fs.retries = 1  # s3fs counts tries, not retries: one, botocore retries
        self.limits = limits
        self.root = root.rstrip("/")
        protocol = self.fs.protocol
        self.protocol = protocol if isinstance(protocol, str) else protocol[0]

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._path(rel)))

    def open_read(self, rel: str) -> IO[bytes]:
        f: IO[bytes] = self.fs.open(self._path(rel), "rb")
        return f

    def begin(self, rel: str) -> _Writer:
        if self.protocol in _COMMIT_ON_CLOSE:
            # The abort is best-effort (a bucket lifecycle rule clears what it leaves): it
            # gets the connect allowance, not a full request's.
            abort_timeout = min(self.limits.timeout, 5.0)
            return _CommitOnCloseWriter(self.fs, self._path(rel), abort_timeout)
        return _TempThenMoveWriter(self.fs, self.root, self._path(rel))

    def list_rel(self) -> Iterator[str]:
        base = self._path("blake3")
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        prefix = f"{self.root}/".lstrip("/")
        for path in found:
            path = path.lstrip("/")
            if path.startswith(prefix):
                yield path[len(prefix) :]


# -- a corrupt blob gives way to the right bytes ---------------------------------------


def _stored_size(backend: _Backend, rel: str) -> int | None:
    try:
        if isinstance(backend, _LocalBackend):
            return os.stat(backend.root / rel).st_size
        assert isinstance(backend, _FsspecBackend)
        return int(backend.fs.size(backend._path(rel)))
    except FileNotFoundError:
        return None


def holds_intact(store: BlobStore, digest: str, size: int | None) -> bool:
    """Whether a put of `size` bytes named `digest` may leave `store` as it is: the blob is
    there, of that size (one stat or HEAD, as `has`). A stored blob of another size is corrupt
    (truncated, say): it is removed so that the put stores the right bytes in its place. A
    corruption that keeps the size is caught by every read, and `roar fsck --repair`
    removes it."""
    if size is None:
        return store.has(digest)
    rel = _relpath(check_digest(digest))
    stored = _stored_size(store._backend, rel)
    if stored is None:
        return False
    if stored != size:
        remove_blob(store, digest)
        return False
    return True


def remove_blob(store: BlobStore, digest: str) -> bool:
    """Delete a blob (a corrupt one: blobs are otherwise never removed); False if absent."""
    rel = _relpath(check_digest(digest))
    backend = store._backend
    try:
        if isinstance(backend, _LocalBackend):
            os.unlink(backend.root / rel)
        else:
            assert isinstance(backend, _FsspecBackend)
            backend.fs.rm_file(backend._path(rel))
    except FileNotFoundError:
        return False
    return True
