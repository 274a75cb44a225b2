"""The typed contract from the command line to the Job: what a run is asked to do, and each file of it.

    RunRequest   a run: the source, its arguments, the files to load, the table (the pipeline flow's
                 parameters, built and validated once: by the CLI, or by the flow from a deployment's)
    FileRequest  one planned file: its name, where it comes from, the table, the run it belongs to (the
                 `load-file` flow's one parameter, in-process and as a deployment run's parameters)

The result of a file is flows.load.FileResult; a run's is flows.report.RunReport.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows.errors import ConfigError

SourceName = Literal["sample", "local", "url", "kaggle"]


class RunRequest(BaseModel):
    """One run of the pipeline, source-neutral; each source reads the arguments it takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: SourceName = "sample"
    path: str | None = Field(None, description="local: the folder of .csv files")
    url: tuple[str, ...] = Field((), description="url: one http(s) URL per file")
    files: tuple[str, ...] | None = Field(None, description="only these file names, in this order")
    table: str | None = Field(None, description="the target table (default ETL_TABLE)")
    rows_per_file: int | None = Field(None, ge=1, description="sample: rows per monthly file")

    @field_validator("url", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else value

    @classmethod
    def of(cls, where: str, **values: Any) -> RunRequest:
        """The request from `values`; an invalid one is a ConfigError naming each value and `where` it came from."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid {where}: {problems}") from None

    def flow_parameters(self) -> dict[str, Any]:
        """The pipeline flow's parameters for this request (what a deployment run would be given)."""
        return self.model_dump(mode="json", exclude_defaults=True)  # JSON's types: the tuples are lists


class FileRequest(BaseModel):
    """One file of a run, known before anything is fetched; everything a process needs to fetch and load it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the file's name as loaded: the ledger's key, e.g. 2019-Oct.csv")
    source: SourceName
    location: str | None = Field(None, description="where it comes from: its path (local) or its URL (url)")
    rows_per_file: int | None = Field(None, ge=1, description="sample: rows of the month")
    table: str | None = Field(None, description="the target table (default ETL_TABLE)")
    run_id: str = Field("", description="the pipeline run it belongs to (default: its own flow run)")
