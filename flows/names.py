"""The names other systems know us by, defined once: Prefect flows, deployments and their entrypoints.

The chart (ETL_FILE_DEPLOYMENT), the alerts (the parent flow's name) and the tests read them from here.
"""

PIPELINE_FLOW = "ecommerce-etl"  # the run: its failures and waits are what the alerts watch
LOAD_FILE_FLOW = "load-file"  # one file of a run
LOAD_FILE_DEPLOYMENT_NAME = "load-file"
# what the chart puts in ETL_FILE_DEPLOYMENT: pipeline runs start one flow run of it per file
LOAD_FILE_DEPLOYMENT = f"{LOAD_FILE_FLOW}/{LOAD_FILE_DEPLOYMENT_NAME}"
# entrypoints, relative to the image's WORKDIR (the deploy hook registers them)
PIPELINE_ENTRYPOINT = "flows/etl.py:ecommerce_etl"
LOAD_FILE_ENTRYPOINT = "flows/etl.py:file_flow"
TAG = "ecommerce-etl"  # on every deployment and flow run we create


def file_run_name(file: str) -> str:
    """The name of a file's `load-file` run, in-process and as a deployment run alike."""
    return f"load-{file}"
