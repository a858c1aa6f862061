"""Who is writing a bank now: run leases, exclusive claims, and whose temporaries are whose.

Several processes may write one bank at once (two ``audistill extract`` runs, writer processes,
Dask workers), on a local disk or an object store, so exclusion rests on two primitives every
store has: a whole-object write and an exclusive create (local ``O_EXCL``; S3 ``If-None-Match``).

- **Leases.** A process that writes a bank holds ``leases/RUN.json`` (its run id, host, pid and a
  heartbeat time), rewritten by a daemon thread every ``LEASE_TTL_S / 4`` while the bank is in use
  (a claim held, or one taken or released within ``LEASE_TTL_S``) and removed when the process
  exits. A lease found gone while no claim is held (its bank deleted after its last use) is not
  written back: that would make the deleted bank's folder again. A lease is live while its
  process runs (same host: checked by pid and process start time, so a killed run's lease is dead
  at once) or, from another host, while its heartbeat is younger than ``LEASE_TTL_S``.
- **Temporaries carry their run.** Everything a writer stages has ``run<ID>`` in its ``.tmp-``
  name (:func:`temp_tag`). Cleaning removes a temporary only when no live lease owns it: its run's
  lease is dead, or it has none and the temporary is older than ``LEASE_TTL_S``. Temporaries
  without a run (from versions before leases) are removed as before.
- **Claims.** ``locks/KIND/NAME.GEN.json`` gives one live run a shard (its write, a field
  addition) or the catalog (its read-merge-write). A claim is made by an exclusive create; one
  whose run is dead is taken over by creating the next generation, exclusively too, so two
  runs never both hold it. Stores without an exclusive create (fsspec's default checks, then
  writes) get a re-read of the claim after the write.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from .errors import BusyError

if TYPE_CHECKING:
    from .fs import BankFS

log = logging.getLogger(__name__)

LEASES = "leases"
LOCKS = "locks"
LEASE_TTL_S = float(os.environ.get("AUDISTILL_LEASE_TTL_S", "120"))
CLAIM_POLL_S = 0.2
RELEASE_WAIT_S = 10.0  # at exit, removing this process's leases waits at most this long
CLAIM_WAIT_S = 3600.0  # a claim held longer than this by a live run is an error, not a wait

_RUN_RE = re.compile(r"(?:^|[.\-])run([0-9a-f]{16})(?=[.\-]|$)")
_run: tuple[int, str] | None = None  # (pid, run id): a forked child gets its own


def run_id() -> str:
    """This process's run id (16 hex digits), made on first use; a forked child makes its own."""
    global _run
    if _run is None or _run[0] != os.getpid():
        _run = (os.getpid(), uuid.uuid4().hex[:16])
    return _run[1]


def temp_tag() -> str:
    """A unique tag for a temporary name, holding this process's run id."""
    return f"run{run_id()}-{uuid.uuid4().hex[:8]}"


def temp_run(name: str) -> str | None:
    """The run id in a temporary's path component ``name`` (None: it names none)."""
    k = name.find(".tmp-")
    m = _RUN_RE.search(name[k + len(".tmp-") :]) if k >= 0 else None
    return m.group(1) if m else None


def lease_path(run: str) -> str:
    return f"{LEASES}/{run}.json"


# -- who a process is ------------------------------------------------------------------------------
def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def host_id() -> str:
    """This machine and pid namespace: pids are comparable only within one."""
    boot = (_read_text("/proc/sys/kernel/random/boot_id") or "").strip()
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = ""
    return f"{socket.gethostname()}/{boot}/{ns}"


def _proc_started(pid: int) -> str | None:
    """A process's start time (Linux clock ticks since boot), None if it is gone or a zombie."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return None if fields[0] == "Z" else fields[19]


def _pid_alive(pid: int, started: str | None) -> bool:
    if os.path.isdir("/proc/self"):
        now = _proc_started(pid)
        return now is not None and (started is None or now == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_record() -> dict:
    """What a lease or claim says about the process that holds it."""
    pid = os.getpid()
    return {
        "run": run_id(),
        "host": host_id(),
        "pid": pid,
        "pid_started": _proc_started(pid),
        "heartbeat": time.time(),
        "ttl_s": LEASE_TTL_S,
    }


def is_live(rec: dict, now: float | None = None) -> bool:
    """Whether the process a lease (or claim) record names still runs."""
    if rec.get("run") == run_id() and rec.get("host") == host_id():
        return True
    if rec.get("host") == host_id() and isinstance(rec.get("pid"), int):
        return _pid_alive(rec["pid"], rec.get("pid_started"))
    now = time.time() if now is None else now
    try:
        return now - float(rec["heartbeat"]) < float(rec.get("ttl_s", LEASE_TTL_S))
    except (KeyError, TypeError, ValueError):
        return False


def _parse(data: bytes) -> dict | None:
    try:
        rec = json.loads(data)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def read_lease(fs: BankFS, run: str) -> dict | None:
    """Run ``run``'s lease record; None: it has none (or an unreadable one)."""
    try:
        return _parse(fs.read_bytes(lease_path(run)))
    except FileNotFoundError:
        return None


# -- holding leases --------------------------------------------------------------------------------
# A lease is refreshed while its bank is in use: a claim of this run on it is held, or one was
# taken or released within the last ``LEASE_TTL_S``. A bank idle longer than that *rests*: its
# lease file stays (on this host the pid keeps it live, as before) but is no longer rewritten, so
# a long-lived process (a notebook, a Dask worker) that wrote many banks does not keep writing to
# all of them - nor warn every beat about a store that went away. A lease found gone while no claim
# is held (the bank deleted, or the lease cleaned, after the bank's last use) rests at once rather
# than making the deleted bank's folder again. The next claim writes it afresh; at exit every
# lease, beaten or resting, is removed.
# (run, bank url) -> the bank whose lease is refreshed
_held: dict[tuple[str, str], BankFS] = {}
# (run, bank url) -> the bank whose lease rests (written, not refreshed)
_resting: dict[tuple[str, str], BankFS] = {}
# (run, bank url) -> [claims held now, time.monotonic() of the last claim taken or released]
_use: dict[tuple[str, str], list] = {}
_held_lock = threading.Lock()
_beater: tuple[int, threading.Thread] | None = None


def hold_lease(fs: BankFS) -> str:
    """Hold this process's lease on the bank at ``fs`` (written now, refreshed while the bank is
    in use, removed when the process exits); returns the run id. Idempotent."""
    global _beater
    key = (run_id(), fs.url)
    with _held_lock:
        _use.setdefault(key, [0, 0.0])[1] = time.monotonic()
        if key in _held:
            return key[0]
        fs.write_bytes_atomic(lease_path(key[0]), json.dumps(owner_record()).encode())
        _resting.pop(key, None)
        _held[key] = fs
        if _beater is None or _beater[0] != os.getpid() or not _beater[1].is_alive():
            t = threading.Thread(target=_heartbeat, name="audistill-lease", daemon=True)
            t.start()
            _beater = (os.getpid(), t)
            atexit.register(release_leases)
    return key[0]


def _claims(fs: BankFS, delta: int) -> None:
    """A claim of this run on ``fs``'s bank was taken (+1) or released (-1)."""
    with _held_lock:
        use = _use.setdefault((run_id(), fs.url), [0, 0.0])
        use[0], use[1] = max(0, use[0] + delta), time.monotonic()


def _to_beat(now: float) -> list[tuple[str, BankFS, int]]:
    """The leases to refresh now, with the claims held on each bank; those idle longer than
    ``LEASE_TTL_S`` are set to rest."""
    out = []
    with _held_lock:
        for key, fs in list(_held.items()):
            if key[0] != run_id():
                continue
            claims, last = _use[key]  # hold_lease set it
            if claims == 0 and now - last > LEASE_TTL_S:
                _resting[key] = _held.pop(key)
            else:
                out.append((key[0], fs, claims))
    return out


def _heartbeat() -> None:
    me = os.getpid()
    while True:
        time.sleep(LEASE_TTL_S / 4)
        if os.getpid() != me:
            return
        for run, fs, claims in _to_beat(time.monotonic()):
            path = lease_path(run)
            try:
                # unused now and its lease gone: the bank was deleted (or the lease cleaned) after
                # its last use; writing the lease back would make the deleted bank's folder again
                if not claims and not fs.exists(path):
                    _rest_if_unused(run, fs)
                    continue
                # a claim held: its lease must be there, whatever removed it
                fs.write_bytes_atomic(
                    path, json.dumps(owner_record()).encode(), make_folders=bool(claims)
                )
            except FileNotFoundError:  # its folder went between the look and the write
                _rest_if_unused(run, fs)
            # noqa: BLE001 - a missed beat is retried; the lease expires only after 4
            except Exception as e:
                log.warning("could not refresh the lease %s of %s: %s", path, fs.url, e)


def _rest_if_unused(run: str, fs: BankFS) -> None:
    """Set a lease to rest unless a claim was taken on its bank meanwhile."""
    with _held_lock:
        key = (run, fs.url)
        if key in _held and _use[key][0] == 0:
            _resting[key] = _held.pop(key)


def release_leases() -> None:
    """Remove this process's leases (at exit; a killed process's lease is dead by its pid)."""
    with _held_lock:
        mine = [
            (run, fs)
            for held in (_held, _resting)
            for (run, _url), fs in held.items()
            if run == run_id()
        ]
        for run, fs in mine:
            _held.pop((run, fs.url), None)
            _resting.pop((run, fs.url), None)
    if not mine:
        return
    # in a daemon thread, waited for a bounded time: a store that stopped answering (its server
    # gone, the network down) must not hold the process's exit for a client's retries; a lease
    # left behind dies with its process (same host) or its heartbeat's TTL (elsewhere)
    t = threading.Thread(
        target=_remove_leases, args=(mine,), name="audistill-lease-release", daemon=True
    )
    t.start()
    t.join(RELEASE_WAIT_S)


def _remove_leases(mine: list[tuple[str, BankFS]]) -> None:
    for run, fs in mine:
        try:
            fs.remove_file(lease_path(run))
        except Exception as e:  # noqa: BLE001 - the lease dies with the process anyway
            log.debug("could not remove the lease of %s: %s", fs.url, e)


class Leases:
    """The leases of one bank, read when first asked (one listing, a read per lease)."""

    def __init__(self, fs: BankFS):
        self.fs = fs
        self._recs: dict[str, dict] | None = None

    def records(self) -> dict[str, dict]:
        if self._recs is None:
            self._recs = {}
            for name in self.fs.listdir(LEASES):
                if name.endswith(".json") and ".tmp-" not in name:
                    rec = read_lease(self.fs, name[: -len(".json")])
                    if rec is not None:
                        self._recs[name[: -len(".json")]] = rec
        return self._recs

    def live(self, run: str) -> bool | None:
        """Whether run ``run`` holds a live lease; None: it holds none at all."""
        if run == run_id():
            return True
        rec = self.records().get(run)
        return None if rec is None else is_live(rec)

    def dead(self) -> list[str]:
        """Runs whose lease is dead (their files may go)."""
        return sorted(run for run, rec in self.records().items() if not is_live(rec))


def temporary_is_orphan(leases: Leases, name: str, mtime: float | None) -> bool:
    """Whether a temporary (path component ``name``, newest modification ``mtime``) belongs to no
    live writer: its run's lease is dead, or its run holds none and it is older than the TTL."""
    run = temp_run(name)
    if run is None:
        return True  # written before leases existed
    live = leases.live(run)
    if live is None:
        return mtime is not None and time.time() - mtime > LEASE_TTL_S
    return not live


# -- claims ----------------------------------------------------------------------------------------
class Claim:
    """An exclusive claim on ``NAME`` of ``KIND`` (a shard, the catalog) for this run: a context
    manager that waits (up to ``wait_s``) while a live run holds it."""

    def __init__(self, fs: BankFS, kind: str, name: str, wait_s: float | None = None):
        self.fs, self.kind, self.name = fs, kind, name
        self.wait_s = CLAIM_WAIT_S if wait_s is None else wait_s
        self.folder = f"{LOCKS}/{kind}"
        self.mine: str | None = None
        self.stale: list[str] = []

    def __enter__(self) -> Claim:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _generations(self) -> dict[int, str]:
        out = {}
        found = self.fs.sizes_with_prefix(
            self.folder, f"{self.name}."
        )  # one LIST of the prefix on S3
        names = (
            self.fs.listdir(self.folder) if found is None else [r.rsplit("/", 1)[-1] for r in found]
        )
        for f in names:
            stem, _, ext = f.rpartition(".")
            base, _, gen = stem.rpartition(".")
            if ext == "json" and base == self.name and gen.isdigit():
                out[int(gen)] = f"{self.folder}/{f}"
        return out

    def try_acquire(self) -> str | None:
        """Take the claim if no live run holds it; None when taken, else the holder's run id."""
        hold_lease(self.fs)
        gens = self._generations()
        top = max(gens, default=-1)
        if top >= 0:
            try:
                rec = _parse(self.fs.read_bytes(gens[top])) or {}
            except FileNotFoundError:
                return "?"  # released just now: look again
            run = str(rec.get("run", "?"))
            lease = read_lease(self.fs, run) if run != run_id() else None
            if run == run_id() or is_live(lease if lease is not None else rec):
                return run
        rel = f"{self.folder}/{self.name}.{top + 1}.json"
        me = owner_record()
        if not self.fs.create_exclusive(rel, json.dumps(me).encode()):
            return "?"  # another run took this generation first
        got = _parse(self.fs.read_bytes(rel)) if not self.fs.has_exclusive_create else me
        if (got or {}).get("run") != me["run"]:
            return str((got or {}).get("run", "?"))
        self.mine, self.stale = rel, [gens[g] for g in sorted(gens)]
        _claims(self.fs, +1)
        hold_lease(self.fs)  # no I/O unless the heartbeat let the lease rest meanwhile
        return None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            holder = self.try_acquire()
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise BusyError(
                    f"{self.kind} {self.name!r} of {self.fs.url} is claimed by run {holder}, still "
                    "live "
                    f"after {self.wait_s:.0f} s ({self.folder}/{self.name}.*.json)"
                )
            time.sleep(CLAIM_POLL_S)

    def release(self) -> None:
        """Remove the claim (the dead generations it took over first)."""
        if self.mine is None:
            return
        try:
            for rel in [*self.stale, self.mine]:
                try:
                    self.fs.remove_file(rel)
                except FileNotFoundError:
                    pass
        finally:
            self.mine, self.stale = None, []
            _claims(self.fs, -1)


def stale_files(fs: BankFS) -> list[str]:
    """Lease and claim files of runs that are gone (``shards clean`` removes them)."""
    leases = Leases(fs)
    out = [lease_path(run) for run in leases.dead()]
    for kind in fs.listdir(LOCKS):
        for f in fs.listdir(f"{LOCKS}/{kind}"):
            rel = f"{LOCKS}/{kind}/{f}"
            try:
                rec = _parse(fs.read_bytes(rel)) or {}
            except FileNotFoundError:
                continue
            run = str(rec.get("run", ""))
            live = leases.live(run)
            if not (live if live is not None else is_live(rec)):
                out.append(rel)
    return out
