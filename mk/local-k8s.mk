# Local Kubernetes for T5 on machines without a container registry (included by the Makefile).
# Everything is built from the Go module proxy, Debian and PyPI by scripts/local-k8s/ and
# cached under /var/cache/ecommerce-etl/k8s; see k8s/README.md ("Local kind without a registry").
LOCAL_K8S := scripts/local-k8s
LK_TOOLS := $(CURDIR)/$(LOCAL_K8S)/bin

.PHONY: e2e-local local-k8s-build local-k8s-up local-k8s-down local-k8s-env skaffold skaffold-check

local-k8s-build: venv ## Build (or reuse) the kind node image and the chart's stand-in images, no registry
	$(LOCAL_K8S)/node-image.sh
	$(LOCAL_K8S)/standin-images.sh

local-k8s-up: venv ## Create (or reuse) the kind cluster on the locally built node image (tools: make local-k8s-env)
	$(LOCAL_K8S)/up.sh

local-k8s-down: ## Delete the local kind cluster
	$(LK_TOOLS)/kind delete cluster --name $(KIND_CLUSTER)

local-k8s-env: ## Print the PATH line for the built kind/kubectl/helm/skaffold: eval "$$(make -s local-k8s-env)"
	@printf 'export PATH=%q:"$$PATH"\n' '$(LK_TOOLS)'

skaffold: ## Build (or reuse) skaffold from the Go module proxy (pinned), cached outside the work tree
	$(LOCAL_K8S)/build-tools.sh skaffold

skaffold-check: venv ## On the local kind: skaffold run -p offline, one skaffold dev iteration, a flow run on the new tag
	$(LOCAL_K8S)/skaffold-check.sh

e2e-local: venv ## T5 here: build or reuse the local cluster, run tests/e2e (as CI does), tear down (KEEP=1 keeps it)
	PY=$(PY) $(LOCAL_K8S)/e2e.sh

.PHONY: chaos-local chaos-cluster chaos-cluster-down

chaos-cluster: venv ## Create (or reuse) the multi-node kind cluster (kind-config-multi.yaml) and check its networking
	$(LOCAL_K8S)/chaos.sh up

chaos-cluster-down: ## Delete the multi-node kind cluster
	$(LOCAL_K8S)/chaos.sh down

chaos-local: venv ## Chaos on the multi-node kind: each fault twice into a running load; last line faults=... lost=...
	PY=$(PY) $(LOCAL_K8S)/chaos.sh run
