"""Where a study lives (Optuna's RDB storage: an SQLite file in the runs root by default, or a PostgreSQL or
MySQL server shared by several machines), opening it, and giving back the work of tuners that died.

A trial records which tuner runs it (``host``, the tuner's lock file). A trial left RUNNING by a tuner that is
gone is found two ways: on this machine at once (its tuner's lock file is free: ``kill -9`` included), and from
any machine by Optuna's heartbeat (no sign of life for ``GRACE`` seconds). The first process to mark such a
trial FAIL (one database update, which only one process can win) enqueues its retry: a new trial with the same
parameters, which resumes the interrupted run from its newest checkpoint where that run is on this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from mnist_kit.errors import UserError
from mnist_kit.util.files import locked_by_another

DB_FILE = "tune.db"  # in the runs root: every study of that root
HEARTBEAT = 20  # seconds between a running trial's signs of life in the storage
GRACE = 120  # seconds without one after which any tuner may take the trial's work back
SQLITE_WAIT = 120  # seconds an SQLite writer waits for another tuner's write to end (not 5: "database is locked")
DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("pymysql", "MySQLdb")}
EXTRA = {"postgresql": "mnist-kit[postgresql]", "mysql": "PyMySQL"}
HOST = socket.gethostname()


def optuna():
    """The optuna module, or one line saying how to install it (the ``tune`` extra)."""
    try:
        import optuna as mod
    except ImportError:
        raise UserError('tune needs Optuna, which is not installed: pip install "mnist-kit[tune]"') from None
    mod.logging.set_verbosity(mod.logging.WARNING)
    # the heartbeat is experimental in Optuna (since 2.9) and said to go with Study.optimize: used here with
    # ask-and-tell and a heartbeat thread of tune's own (``heartbeat``), which is what optimize does
    warnings.filterwarnings("ignore", category=mod.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return mod


def url_for(storage: str | None, root: Path) -> str:
    """The storage's SQLAlchemy URL: ``storage`` as given (a URL, or a path to an SQLite file), or the runs
    root's ``tune.db``."""
    if storage is None:  # absolute, but not resolved: a link stays a link, to be refused (_check_sqlite)
        return f"sqlite:///{os.path.abspath(root / DB_FILE)}"
    if "://" not in storage:
        return f"sqlite:///{os.path.abspath(Path(storage).expanduser())}"
    return storage


def shown(url: str) -> str:
    """A storage URL without its password, for messages and files."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


def check_url(url: str) -> None:
    """A URL of a database Optuna can use, with its driver installed; one line if not."""
    scheme = url.split("://", 1)[0].lower()
    family, _, driver = scheme.partition("+")
    if family not in DRIVERS and family != "sqlite":
        raise UserError(f"--storage {shown(url)}: use sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB or "
                        "mysql://...; see docs/tune.md")
    import importlib.util

    wanted = (driver,) if driver else DRIVERS.get(family, ())
    if wanted and not any(importlib.util.find_spec(d) for d in wanted):
        raise UserError(f"--storage {shown(url)}: its database driver ({' or '.join(wanted)}) is not installed; "
                        f'pip install "{EXTRA[family]}"')


def _with_default_driver(url: str) -> str:
    """A postgresql:// URL with the driver that is installed (SQLAlchemy's default is psycopg2)."""
    import importlib.util

    if url.startswith("postgresql://") and not importlib.util.find_spec("psycopg2") \
            and importlib.util.find_spec("psycopg"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def open_storage(url: str, heartbeat: bool = True):
    """Optuna's RDB storage at ``url`` (the tables made if new); one line when it cannot be opened."""
    mod = optuna()
    check_url(url)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        _check_sqlite(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {path.parent} for the study's database: {e.strerror}") from None
        kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_WAIT}}
    else:
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    for attempt in range(1, 6):
        try:
            return mod.storages.RDBStorage(
                _with_default_driver(url), engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT if heartbeat else None,
                grace_period=GRACE if heartbeat else None)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors: the server, the file, the schema
            # two tuners that make a new storage's tables at once: one wins, the other finds them made
            if attempt < 5 and any(w in str(e) for w in ("UNIQUE constraint", "already exists", "duplicate key")):
                time.sleep(0.5 * attempt)
                continue
            raise UserError(f"cannot open the study storage {shown(url)}: {_first_line(e)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _check_sqlite(path: Path) -> None:
    """An SQLite file to keep studies in: new, empty, or an Optuna database (never another program's database,
    into which Optuna would add its tables; never a link, which could lead anywhere)."""
    import sqlite3

    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link; give the database's own path with --storage")
    if not path.exists():
        return
    if not path.is_file():
        raise UserError(f"--storage {path} is not a file; give an SQLite file or a database URL")
    if path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_WAIT)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error as e:
        raise UserError(f"cannot open the study storage {path}: {e}") from None
    if "studies" not in tables:
        raise UserError(f"{path} is an SQLite database of something else (it has no Optuna studies); give tune "
                        "a new file with --storage")


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def storage_error(e: BaseException, url: str) -> UserError:
    """A database error met while tuning, as one line."""
    return UserError(f"the study storage {shown(url)} failed: {_first_line(e)}")


def db_errors() -> tuple[type[BaseException], ...]:
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - optuna depends on it
        return ()
    return (SQLAlchemyError,)


# ---------------------------------------------------------------- the tuner's own lock, and dead tuners' trials

@contextlib.contextmanager
def tuner_lock(study_dir: Path):
    """This tuner process's lock file in ``study_dir/.tuners/``: held while it runs; a trial whose tuner's lock
    is free was left by a tuner that died."""
    from mnist_kit.util.files import try_lock

    folder = study_dir / ".tuners"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{HOST}-{os.getpid()}.lock"
    held = try_lock(path)
    if held is None:  # pragma: no cover - our own pid
        raise UserError(f"{path} is held by another process")
    try:
        yield path
    finally:
        held.close()
        with contextlib.suppress(OSError):
            path.unlink()


def _dead_here(trial) -> bool:
    """Whether ``trial`` (RUNNING) was started by a tuner on this machine that is no longer running."""
    attrs = trial.user_attrs
    lock = attrs.get("tuner_lock")
    if attrs.get("host") != HOST or not isinstance(lock, str):
        return False
    path = Path(lock)  # from the storage, which anyone with its URL can write: only a tuner's lock file is looked at
    if path.parent.name != ".tuners" or not re.fullmatch(rf"{re.escape(HOST)}-\d+\.lock", path.name):
        return False
    if not path.is_file():
        return True
    try:
        return not locked_by_another(path)
    except OSError:
        return False


def take_back(study, trial, why: str, say) -> None:
    """Mark ``trial`` FAIL if it is still RUNNING (one process wins that) and enqueue its retry."""
    mod = optuna()
    try:  # the note first: a finished trial takes none (and another process may be taking it back too)
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", why)
        won = study._storage.set_trial_state_values(trial._trial_id, state=mod.trial.TrialState.FAIL)
    except mod.exceptions.UpdateFinishedTrialError:
        return
    if won:
        enqueue_retry(study, study._storage.get_trial(trial._trial_id))
        say(f"trial {trial.number} was {why}; it is retried as a new trial with the same parameters")


def enqueue_retry(study, trial) -> None:
    """A new trial with ``trial``'s parameters, told which run to resume."""
    attrs = {"retry_of": trial.number}
    if "run" in trial.user_attrs:  # and the machine it is on (the retry's own "host" is whoever runs it)
        attrs.update(run=trial.user_attrs["run"], run_host=trial.user_attrs.get("host"))
    study.enqueue_trial(trial.params, user_attrs=attrs)


def take_back_dead(study, say) -> None:
    """Give back the trials of tuners that died: on this machine at once, elsewhere after the heartbeat's
    grace period."""
    mod = optuna()
    for trial in study.get_trials(deepcopy=False, states=(mod.trial.TrialState.RUNNING,)):
        if _dead_here(trial):
            take_back(study, trial, "left running by a tuner that died on this machine", say)
    stale = study._storage._get_stale_trial_ids(study._study_id) if study._storage.get_heartbeat_interval() else []
    for trial_id in stale:
        trial = study._storage.get_trial(trial_id)
        if trial.user_attrs.get("host") == HOST and not _dead_here(trial):
            continue  # its tuner runs on this machine (a heartbeat can be late: a suspended machine, a busy disk)
        take_back(study, trial, f"left running by a tuner on {trial.user_attrs.get('host', 'another machine')} that "
                                f"has not been heard from for {GRACE} s", say)


@contextlib.contextmanager
def heartbeat(storage, trial_id: int):
    """Record ``trial_id``'s signs of life every ``HEARTBEAT`` seconds while the block runs."""
    if not storage.get_heartbeat_interval():
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a lost connection: the next beat tries again
                storage.record_heartbeat(trial_id)
            stop.wait(HEARTBEAT)

    thread = threading.Thread(target=beat, name="tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
