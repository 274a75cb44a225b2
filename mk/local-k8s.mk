# Local Kubernetes for T5 on machines without a container registry (included by the Makefile).
# Everything is built from the Go module proxy, Debian and PyPI by scripts/local-k8s/ and
# cached under /var/cache/ecommerce-etl/k8s; see k8s/README.md ("Local kind without a registry").
LOCAL_K8S := scripts/local-k8s

.PHONY: e2e-local local-k8s-build local-k8s-up local-k8s-down

local-k8s-build: ## Build (or reuse) the kind node image and the chart's stand-in images, no registry
	$(LOCAL_K8S)/node-image.sh
	$(LOCAL_K8S)/standin-images.sh

local-k8s-up: ## Create (or reuse) the kind cluster on the locally built node image; `. scripts/local-k8s/env.sh` for kind/kubectl/helm
	$(LOCAL_K8S)/up.sh

local-k8s-down: ## Delete the local kind cluster
	. $(LOCAL_K8S)/env.sh && kind delete cluster --name $(KIND_CLUSTER)

e2e-local: venv ## T5 here: build or reuse the local cluster, run tests/e2e (as CI does), tear down (KEEP=1 keeps it)
	PY=$(PY) $(LOCAL_K8S)/e2e.sh
