"""The Kaggle dataset through the kaggle client (the one opendatasets calls): the run lists the dataset's
files (ListDatasetFiles), and each file's unit of work downloads only that file (DownloadDataset with a
file name; Kaggle wraps large files in <file>.zip)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from flows.contract import FileRequest, RunRequest
from flows.errors import ConfigError, FileRejected
from flows.settings import Settings
from flows.sources.archives import unpack
from flows.sources.base import Source, chronological


class KaggleSource(Source):
    name = "kaggle"

    def check(self, request: RunRequest) -> None:
        kaggle_login(self.settings)  # before anything starts: the client would prompt for them
        kaggle_dataset_id(self.settings)

    def files(self, request: RunRequest) -> list[FileRequest]:
        return [self.file(request, name) for name in kaggle_file_names(self.settings)]

    def fetch(self, file: FileRequest) -> Path:
        return download_kaggle_file(self.settings, file.name)


def kaggle_login(settings: Settings) -> tuple[str, str]:
    username = settings.kaggle_username.get_secret_value() if settings.kaggle_username else ""
    key = settings.kaggle_key.get_secret_value() if settings.kaggle_key else ""
    if not username or not key:
        missing = [n for n, v in (("KAGGLE_USERNAME", username), ("KAGGLE_KEY", key)) if not v]
        raise ConfigError(
            f"the kaggle source needs {' and '.join(missing)}: set them in the environment or .env "
            "(in Kubernetes: the Secret named by kaggle.existingSecret)"
        )
    return username, key


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def kaggle_credentials(settings: Settings):
    """A kaggle.json (mode 0600) in a private temporary folder, only for the download, and the
    kaggle client's own variables (KAGGLE_USERNAME/KAGGLE_KEY) for as long, restored afterwards.

    opendatasets reads ./kaggle.json from the current directory and otherwise *prompts*, which
    would hang a Job, so missing credentials fail here, before it is called.
    """
    username, key = kaggle_login(settings)
    previous_cwd = Path.cwd()
    previous_config = os.environ.get("KAGGLE_CONFIG_DIR")
    with (
        tempfile.TemporaryDirectory(prefix="kaggle-") as private,
        _environment({"KAGGLE_USERNAME": username, "KAGGLE_KEY": key}),
    ):
        os.chmod(private, 0o700)
        creds = Path(private) / "kaggle.json"
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"username": username, "key": key}, f)
        os.environ["KAGGLE_CONFIG_DIR"] = private
        os.chdir(private)
        try:
            yield
        finally:
            os.chdir(previous_cwd)
            if previous_config is None:
                os.environ.pop("KAGGLE_CONFIG_DIR", None)
            else:
                os.environ["KAGGLE_CONFIG_DIR"] = previous_config


def kaggle_dataset_id(settings: Settings) -> str:
    """owner/slug of ETL_KAGGLE_DATASET (a dataset URL or id), resolved as opendatasets does."""
    from opendatasets.utils.kaggle_direct import get_kaggle_dataset_id

    try:
        return get_kaggle_dataset_id(settings.kaggle_dataset)
    except AssertionError:
        raise ConfigError(
            f"ETL_KAGGLE_DATASET {settings.kaggle_dataset!r} is not a Kaggle dataset URL or owner/dataset id"
        ) from None


def _kaggle_api():
    """The kaggle client opendatasets calls, authenticated from KAGGLE_USERNAME/KAGGLE_KEY."""
    from kaggle import api

    api.authenticate()
    return api


def kaggle_file_names(settings: Settings) -> list[str]:
    """The dataset's CSV files, listed by the kaggle client (ListDatasetFiles), page by page."""
    dataset = kaggle_dataset_id(settings)
    names: list[str] = []
    token = None
    with kaggle_credentials(settings):
        api = _kaggle_api()
        while True:
            page = api.dataset_list_files(dataset, page_token=token, page_size=200)
            if page.error_message:
                raise FileRejected(f"listing the files of the Kaggle dataset {dataset}: {page.error_message}")
            names += [f.name for f in page.dataset_files or [] if f and f.name]
            token = page.next_page_token
            if not token:
                break
    csvs = sorted((n for n in names if n.endswith(".csv")), key=chronological)
    if not csvs:
        raise FileRejected(f"the Kaggle dataset {dataset} lists no .csv file (files: {', '.join(names) or 'none'})")
    return csvs


def download_kaggle_file(settings: Settings, file_name: str) -> Path:
    """One file of the dataset through the kaggle client: the DownloadDataset call with a file
    name. Kaggle wraps large files in <file>.zip; the CSV lands in <data dir>/kaggle/<slug>/."""
    dataset = kaggle_dataset_id(settings)
    root = (settings.data_dir / "kaggle").resolve()
    final = root / dataset.split("/")[1] / file_name
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        with kaggle_credentials(settings):
            _kaggle_api().dataset_download_file(dataset, file_name, path=str(staging), force=True, quiet=True)
        for path in [p for p in staging.iterdir() if p.is_file() and not p.name.endswith(".csv")]:
            unpack(path, staging)
            path.unlink()
        got = staging / file_name
        if not got.is_file():
            found = ", ".join(sorted(p.name for p in staging.iterdir())) or "nothing"
            raise FileRejected(f"the Kaggle download of {file_name} from {dataset} holds {found}, not {file_name}")
        final.parent.mkdir(parents=True, exist_ok=True)
        got.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
