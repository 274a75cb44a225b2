"""The bundled deterministic sample: the dataset's five months, each generated where it is loaded."""

from __future__ import annotations

from pathlib import Path

from flows.contract import FileRequest, RunRequest
from flows.csv_spec import MONTH_FILES
from flows.errors import FileRejected
from flows.sources.base import Source


class SampleSource(Source):
    name = "sample"

    def files(self, request: RunRequest) -> list[FileRequest]:
        return [self.file(request, month) for month in MONTH_FILES]

    def fetch(self, file: FileRequest) -> Path:
        """That month alone: the same bytes as in the five-file sample (flows/sample.py)."""
        from flows.sample import write_sample

        if file.name not in MONTH_FILES:
            raise FileRejected(f"the sample has no file {file.name!r}; its files: {', '.join(MONTH_FILES)}")
        rows = file.rows_per_file or self.settings.sample_rows_per_file
        (written,) = write_sample(self.settings.data_dir / "sample", rows, files=(file.name,))
        return written
