"""Every metric the exporter serves: name -> (help, labels). All are gauges: each is read from a
source of truth at scrape time (a table, the Prefect API), so a figure can go down (a file
forgotten, runs deleted by retention). The README's "Monitoring with Prometheus" lists them."""

from __future__ import annotations

TABLE = ("schema", "table")
FILE = ("schema", "table", "file")

FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    # the data: each target's ledger and quarantine table
    "ecommerce_etl_rows_loaded": ("Rows in the table: the sum of rows_loaded over its ledger.", TABLE),
    "ecommerce_etl_rows_read": ("Rows read from the files whose rows are in the table.", TABLE),
    "ecommerce_etl_rows_quarantined": ("Rows in the quarantine table, from the ledger.", TABLE),
    "ecommerce_etl_quarantined_rows_by_reason": (
        "Quarantined rows by reason class (the reason without its value).",
        (*TABLE, "reason"),
    ),
    "ecommerce_etl_files_loaded": ("Files whose rows are in the table (ledger entries).", TABLE),
    "ecommerce_etl_last_load_timestamp_seconds": ("When the table last changed: the latest ledger load.", TABLE),
    "ecommerce_etl_last_success_timestamp_seconds": (
        "The last time a file of the table was loaded or found unchanged (from the ledger and the file events).",
        TABLE,
    ),
    "ecommerce_etl_file_rows_loaded": ("Rows of the file in the table.", FILE),
    "ecommerce_etl_file_rows_quarantined": ("Rows of the file in the quarantine table.", FILE),
    "ecommerce_etl_file_size_bytes": ("Size of the file as last loaded.", FILE),
    "ecommerce_etl_file_loaded_timestamp_seconds": ("When the file's last load was committed.", FILE),
    "ecommerce_etl_file_load_duration_seconds": ("Duration of the file's last load.", FILE),
    "ecommerce_etl_file_load_rows_per_second": ("Rows read per second in the file's last load.", FILE),
    "ecommerce_etl_file_load_bytes_per_second": ("Bytes read per second in the file's last load.", FILE),
    "ecommerce_etl_file_outcome": (
        "1 for each file, labelled with its latest outcome: loaded, skipped or failed.",
        (*FILE, "status"),
    ),
    "ecommerce_etl_file_outcome_timestamp_seconds": ("When the file's latest outcome happened.", (*FILE, "status")),
    "ecommerce_etl_database_size_bytes": ("Size of the data database (pg_database_size).", ()),
    # the runs: the Prefect API
    "ecommerce_etl_flow_runs": (
        "Flow runs by deployment and state: every run in a final state, the open ones by state name.",
        ("deployment", "state_type", "state"),
    ),
    "ecommerce_etl_flow_runs_waiting_oldest_seconds": (
        "How long the oldest waiting run has waited: Late and AwaitingConcurrencySlot since their expected start, "
        "Pending since it entered Pending; 0 when none waits.",
        ("deployment", "state"),
    ),
    "ecommerce_etl_flow_runs_running_oldest_seconds": (
        "How long the oldest Running run has been running; 0 when none runs.",
        ("deployment",),
    ),
    "ecommerce_etl_flow_run_last_duration_seconds": (
        "Time in Running of the latest run that ended (any final state).",
        ("deployment",),
    ),
    "ecommerce_etl_flow_run_last_success_timestamp_seconds": (
        "End time of the latest Completed run.",
        ("deployment",),
    ),
    "ecommerce_etl_work_pool_ready": ("1 when the work pool is READY (a worker polls it).", ("work_pool",)),
    "ecommerce_etl_work_pool_workers": (
        "Workers of the work pool by status (online, offline).",
        ("work_pool", "status"),
    ),
    "ecommerce_etl_work_pool_last_heartbeat_timestamp_seconds": (
        "The latest heartbeat of any worker of the work pool.",
        ("work_pool",),
    ),
    # the exporter itself
    "ecommerce_etl_exporter_source_up": (
        "1 when the last read of the source (database, prefect) succeeded.",
        ("source",),
    ),
    "ecommerce_etl_exporter_read_seconds": ("Duration of the last read of the source.", ("source",)),
}
