"""Where a bank's bytes live: a root on local disk or behind an fsspec URL.

Every path is relative to the bank root and checked, so nothing built from ids, keys or a
catalog can read or write outside the root. A local bank holds no symbolic links below its root
(the root itself may be one): reading through a link is refused, whatever its target, so a
crafted bank cannot make a reader or a conversion copy files from outside it. Whole-object writes
are atomic: local files are written to a temporary name and renamed; object stores replace an object
with a single PUT.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import BankError, StorageError, UnsafePathError
from .lease import temp_tag

_CHUNK = 4 << 20


def check_relpath(rel: str) -> str:
    """Normalize a bank-relative path; refuse absolute paths, '..', backslashes and empties."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise UnsafePathError(f"unsafe path in bank: {rel!r}")
    norm = posixpath.normpath(rel)
    if (
        norm.startswith("/")
        or norm == ".."
        or norm.startswith("../")
        or norm == "."
        or ":" in norm.split("/")[0]
    ):
        raise UnsafePathError(f"path {rel!r} would leave the bank root")
    return norm


_STORE_LIBRARIES = {
    "botocore",
    "aiobotocore",
    "aiohttp",
    "s3fs",
    "gcsfs",
    "google",
    "adlfs",
    "azure",
    "urllib3",
    "requests",
    "fsspec",
}


def is_store_failure(e: BaseException) -> bool:
    """An error of the store or its client library (connection, credentials, throttling), not a
    missing file and not a bug here."""
    if isinstance(e, (FileNotFoundError, FileExistsError, BankError)):
        return False
    if isinstance(e, (OSError, TimeoutError)):
        return True
    return any(c.__module__.split(".")[0] in _STORE_LIBRARIES for c in type(e).__mro__)


def _named(op: str):
    """Run a BankFS operation so that a store failure is a StorageError naming the bank URL, the
    operation and the path, and a missing object a FileNotFoundError naming its path (object
    stores say only "The specified key does not exist.")."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(self, *args, **kw):
            try:
                return fn(self, *args, **kw)
            except FileNotFoundError as e:
                what = args[0] if args and isinstance(args[0], str) else ""
                if what and what in str(e):
                    raise
                raise FileNotFoundError(f"{self.url}: {what} does not exist ({e})") from e
            except Exception as e:
                if not is_store_failure(e):
                    raise
                what = args[0] if args and isinstance(args[0], str) else ""
                raise StorageError(
                    f"{self.url}: {op} {what} failed: {type(e).__name__}: {e}".replace("  ", " ")
                ) from e

        return run

    return wrap


class BankFS:
    """A bank root plus the few file operations the bank needs. Store failures are StorageError
    (:func:`_named`)."""

    def __init__(self, root: str, storage_options: dict | None = None):
        self.url = str(root)
        self.storage_options = dict(storage_options or {})
        opts = dict(self.storage_options)
        protocol = fsspec.core.split_protocol(self.url)[0]
        # stores of objects, without folders: nothing to make before a write
        self.is_object_store = protocol in (
            "s3",
            "s3a",
            "gs",
            "gcs",
            "az",
            "abfs",
            "abfss",
            "memory",
        )
        if protocol in ("s3", "s3a"):
            # s3fs asks an object's size (a HEAD) before every whole-object read, to fetch objects
            # over 50 MB in parallel parts; a bank reads small objects whole (metadata, commit
            # records, the catalog) and large ones by range, so that HEAD doubled its requests
            opts.setdefault("max_concurrency", 1)
        self.open_options = (
            opts  # what this bank's filesystem was made with (Zarr's stores make their own)
        )
        self.fs, path = fsspec.core.url_to_fs(self.url, **opts)
        self.root = path.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"BankFS({self.url!r})"

    def path(self, rel: str) -> str:
        return f"{self.root}/{check_relpath(rel)}"

    def url_of(self, rel: str) -> str:
        """A URL (or local path) for ``rel`` that fsspec / zarr can open on their own."""
        rel = check_relpath(rel)
        if self.is_local:
            return os.path.join(self.root, rel)
        return f"{self.url.rstrip('/')}/{rel}"

    # -- whole objects -----------------------------------------------------------------------
    @_named("looking up")
    def exists(self, rel: str) -> bool:
        self._fresh()
        return self.fs.exists(self.path(rel))

    def _fresh(self) -> None:
        """Other writers (Zarr's own store, other processes) change the tree: drop listing
        caches."""
        if not self.is_local:
            self.fs.invalidate_cache()

    def refuse_link(self, rel: str) -> None:
        """UnsafePathError if ``rel`` or a folder it lies in is a symbolic link (local banks)."""
        if not self.is_local:
            return
        p = self.root
        for part in check_relpath(rel).split("/"):
            p = f"{p}/{part}"
            if os.path.islink(p):
                raise UnsafePathError(
                    f"{self.url}: {posixpath.relpath(p, self.root)} is a symbolic link; a bank "
                    "holds none (reading through it could copy files from outside the bank)"
                )

    def refuse_links_under(self, rel: str) -> None:
        """:meth:`refuse_link` for ``rel`` and everything under it (one walk of a local folder)."""
        if not self.is_local:
            return
        self.refuse_link(rel)
        for folder, dirs, files in os.walk(self.path(rel)):
            for name in dirs + files:
                if os.path.islink(os.path.join(folder, name)):
                    self.refuse_link(posixpath.relpath(os.path.join(folder, name), self.root))

    @_named("reading")
    def read_bytes(self, rel: str) -> bytes:
        self.refuse_link(rel)
        return self.fs.cat_file(self.path(rel))

    def read_many(self, rels: list[str], batch: int = 1000) -> Iterator[tuple[str, bytes]]:
        """``(rel, bytes)`` of every ``rel``, in order, fetched ``batch`` at a time: one request
        after another on a local disk, concurrently on an object store (fsspec's ``cat`` of many
        paths), where one GET after another costs ~20-50 ms each."""
        for i in range(0, len(rels), batch):
            part = rels[i : i + batch]
            if self.is_local or len(part) == 1:
                yield from ((r, self.read_bytes(r)) for r in part)
                continue
            got = self._cat(part)
            by_path = {_strip_proto(k): v for k, v in got.items()}
            for r in part:
                data = by_path[_strip_proto(self.path(r))]
                if isinstance(data, FileNotFoundError):
                    raise FileNotFoundError(f"{self.url}: {r} does not exist ({data})")
                if isinstance(data, BaseException):
                    raise StorageError(
                        f"{self.url}: reading {r} failed: {type(data).__name__}: {data}"
                    ) from data
                yield r, data

    @_named("reading")
    def _cat(self, rels: list[str]) -> dict:
        """fsspec's ``cat`` of ``rels``: each path's bytes, or the exception reading it raised."""
        return self.fs.cat([self.path(r) for r in rels], on_error="return")

    @_named("looking up")
    def enclosing(self, name: str) -> str | None:
        """The nearest folder above the root holding a file ``name`` (a local path or a URL), or
        None; up to the filesystem root or the bucket."""
        if self.is_local:
            for parent in Path(self.root).resolve().parents:
                if (parent / name).is_file():
                    return str(parent)
            return None
        protocol = fsspec.core.split_protocol(self.url)[0]
        parts = self.root.split("/")
        for k in range(len(parts) - 1, 0, -1):
            folder = "/".join(parts[:k])
            if self.fs.exists(f"{folder}/{name}"):
                return f"{protocol}://{folder}" if protocol else folder
        return None

    @_named("writing")
    def write_bytes_atomic(self, rel: str, data: bytes, make_folders: bool = True) -> None:
        """Replace ``rel`` whole. Without ``make_folders`` a missing folder is a
        ``FileNotFoundError`` (a lease's heartbeat must not make a deleted bank's folder again)."""
        target = self.path(rel)
        if make_folders:
            self._make_folder(posixpath.dirname(target))
        if self.is_local:
            tmp = f"{target}.tmp-{temp_tag()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:  # one PUT replaces the object atomically on S3-like stores
            self.fs.pipe_file(target, data)

    @property
    def has_exclusive_create(self) -> bool:
        """Whether :meth:`create_exclusive` is atomic here (local files; S3's conditional PUT)."""
        return self.is_local or type(self.fs).__name__ == "S3FileSystem"

    @_named("creating")
    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist; False if it does. Atomic on a local disk
        (``O_EXCL``) and on S3 (``If-None-Match: *``); elsewhere fsspec checks, then writes."""
        target = self.path(rel)
        self._make_folder(posixpath.dirname(target))
        if self.is_local:
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        try:
            self.fs.pipe_file(target, data, mode="create")
        except FileExistsError:
            return False
        except OSError as e:
            if "PreconditionFailed" in repr(e) or "412" in str(e):
                return False
            raise
        return True

    @_named("writing")
    def put_many(self, objs: dict[str, bytes]) -> None:
        """Write files (not atomically: a writer's temporary folder), concurrently on an object
        store (one batch of PUTs)."""
        if not objs:
            return
        for folder in {posixpath.dirname(self.path(rel)) for rel in objs}:
            self._make_folder(folder)
        if self.is_local:
            for rel, data in objs.items():
                with open(self.path(rel), "wb") as f:
                    f.write(data)
            return
        self.fs.pipe({self.path(rel): data for rel, data in objs.items()})

    def _make_folder(self, folder: str) -> None:
        """Make a folder (absolute, as :meth:`path` gives) - not on an object store, where there are
        none and making one asks whether the bucket exists, every write."""
        if self.is_local:
            os.makedirs(folder, exist_ok=True)
        elif not self.is_object_store:
            self.fs.makedirs(folder, exist_ok=True)

    @_named("opening")
    def open(self, rel: str, mode: str = "rb", **kw):
        if "w" in mode:
            self._make_folder(posixpath.dirname(self.path(rel)))
        else:
            self.refuse_link(rel)
        return self.fs.open(self.path(rel), mode, **kw)

    @_named("sizing")
    def size(self, rel: str) -> int:
        self.refuse_link(rel)
        return int(self.fs.size(self.path(rel)))

    @_named("hashing")
    def sha256(self, rel: str) -> str:
        self.refuse_link(rel)
        h = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        return h.hexdigest()

    # -- trees -------------------------------------------------------------------------------
    def walk_files(self, rel: str) -> Iterator[str]:
        """Bank-relative paths of every file under ``rel`` (a folder or a single file)."""
        base = self.path(rel)
        self._fresh()
        # find() alone: nothing for a missing path, the file itself for a file (an existence
        # check first is two more requests on an object store)
        for p in sorted(self.fs.find(base)):
            yield check_relpath(posixpath.relpath(_strip_proto(p), self.root))

    @_named("listing")
    def sizes_under(self, rel: str) -> dict[str, int]:
        """Bank-relative path -> size of every file under folder ``rel``, from one listing (one
        paginated LIST on an object store, instead of a HEAD per file). Locally, refuses links."""
        base = self.path(rel)
        self._fresh()
        if self.is_local and os.path.lexists(base):
            self.refuse_links_under(rel)
        out = {}
        for p, info in self.fs.find(base, detail=True).items():
            if info.get("type", "file") == "file":
                out[check_relpath(posixpath.relpath(_strip_proto(p), self.root))] = int(
                    info.get("size") or 0
                )
        return out

    @_named("listing")
    def sizes_with_prefix(self, rel: str, prefix: str) -> dict[str, int] | None:
        """Bank-relative path -> size of every file under folder ``rel`` (at any depth) whose
        path there starts with ``prefix``, from one listing of that prefix - on object stores
        that list by prefix (S3); else None: a folder of 100 000 shards' files is no listing to
        make for a few names."""
        if self.is_local:
            return None
        self._fresh()
        try:
            found = self.fs.find(self.path(rel), prefix=prefix, detail=True)
        except TypeError:  # this store's find() takes no prefix
            return None
        return {
            check_relpath(posixpath.relpath(_strip_proto(p), self.root)): int(info.get("size") or 0)
            for p, info in found.items()
            if info.get("type", "file") == "file"
        }

    def sizes_named(self, rel: str, prefix: str) -> dict[str, int] | None:
        """:meth:`sizes_with_prefix`, files directly in ``rel`` only."""
        found = self.sizes_with_prefix(rel, prefix)
        if found is None:
            return None
        return {r: n for r, n in found.items() if posixpath.dirname(r) == rel.rstrip("/")}

    @_named("listing")
    def _ls(self, rel: str, detail: bool) -> list:
        """One listing of folder ``rel``; [] when there is none (no existence check first: on an
        object store that is a HEAD and a LIST more)."""
        self._fresh()
        try:
            return self.fs.ls(self.path(rel), detail=detail)
        except FileNotFoundError:
            return []

    @_named("listing")
    def listdir_root(self) -> list[str]:
        """Names directly under the bank root."""
        self._fresh()
        try:
            found = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(_strip_proto(p).rstrip("/")) for p in found)

    def listdir(self, rel: str) -> list[str]:
        return sorted(
            posixpath.basename(_strip_proto(p).rstrip("/")) for p in self._ls(rel, detail=False)
        )

    def list_details(self, rel: str) -> dict[str, tuple[int, float | None]]:
        """Names in folder ``rel`` with their size and modification time (seconds since the
        epoch; None where the store does not say), from one listing - no object is read."""
        out = {}
        for info in self._ls(rel, detail=True):
            name = posixpath.basename(_strip_proto(info["name"]).rstrip("/"))
            out[name] = (int(info.get("size") or 0), _mtime(info))
        return out

    @_named("removing")
    def remove_file(self, rel: str) -> None:
        """Delete one file with one request (FileNotFoundError if it is not there, locally)."""
        self.fs.rm_file(self.path(rel))

    @_named("listing")
    def newest_mtime(self, rel: str) -> float | None:
        """The latest modification time of the file ``rel`` or of any file under it (one
        listing)."""
        self._fresh()
        times = [_mtime(i) for i in self.fs.find(self.path(rel), detail=True).values()]
        times = [t for t in times if t is not None]
        return max(times) if times else None

    @_named("removing")
    def remove(self, rel: str) -> None:
        p = self.path(rel)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=True)

    @_named("moving")
    def move(self, src: str, dst: str) -> None:
        """Rename a file or folder. Atomic on local disk; copy-then-delete on object stores."""
        s, d = self.path(src), self.path(dst)
        self._fresh()
        if self.fs.exists(d):
            self.fs.rm(d, recursive=True)
        if self.is_local:
            os.makedirs(os.path.dirname(d), exist_ok=True)
            os.replace(s, d)
        elif self.fs.isfile(s):
            self.fs.copy(s, d)
            self.fs.rm(s)
        # object stores have no folders: copy every object (concurrently), then delete the sources
        else:
            srcs = [_strip_proto(p) for p in self.fs.find(s)]
            if srcs:
                self.fs.copy(srcs, [d + p[len(s) :] for p in srcs])
            self.fs.rm(s, recursive=True)
        self._fresh()

    @_named("moving")
    def move_file(self, src: str, dst: str) -> None:
        """Rename one file, replacing ``dst``: :meth:`move` without its checks of what the paths
        are (on an object store, three requests more per file)."""
        s, d = self.path(src), self.path(dst)
        self._make_folder(posixpath.dirname(d))
        if self.is_local:
            os.replace(s, d)
        else:
            self.fs.copy(s, d)
            self.fs.rm_file(s)
        self._fresh()

    @_named("making")
    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)


def _strip_proto(p: str) -> str:
    return p.split("://", 1)[1] if "://" in p else p


def _mtime(info: dict) -> float | None:
    """A listing entry's modification time: local ``mtime``, S3 ``LastModified`` (a datetime)."""
    for key in ("mtime", "LastModified", "last_modified"):
        v = info.get(key)
        if isinstance(v, (int, float)):
            return float(v)
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
    return None
