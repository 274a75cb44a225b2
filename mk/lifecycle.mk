# A release's later life on the local kind (included by the Makefile): see scripts/local-k8s/lifecycle.sh.
.PHONY: lifecycle-local

lifecycle-local: venv ## On the local kind: upgrade from the last release, backup/restore, the major guard, kubectl apply twice
	PY=$(PY) $(LOCAL_K8S)/lifecycle.sh
