# A release's later life on the local kind (included by the Makefile): tests/e2e/test_lifecycle.py
# through scripts/local-k8s/e2e.sh (the cluster made or reused, CLUSTER picks another, and deleted
# again if this run made it; KEEP=1 keeps it).
.PHONY: lifecycle-local

lifecycle-local: venv ## On the local kind: upgrade from the last release, backup/restore, the major guard, kubectl apply twice
	PY=$(PY) LK_NETPOL=0 ETL_E2E_LIFECYCLE=1 E2E_TESTS=tests/e2e/test_lifecycle.py PYTEST_ARGS="-s $(PYTEST_ARGS)" $(LOCAL_K8S)/e2e.sh
