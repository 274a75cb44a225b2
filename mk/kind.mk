# kind dev loop (included by the Makefile). Names match skaffold.yaml and tests/e2e.
KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
SKAFFOLD ?= skaffold
# e.g. SKAFFOLD_FLAGS='-p offline' where no registry is reachable (debootstrap base, host network).
SKAFFOLD_FLAGS ?=
KIND_CLUSTER ?= ecommerce-etl
KUBE_CONTEXT ?= kind-$(KIND_CLUSTER)
NAMESPACE ?= ecommerce
RELEASE ?= etl
CHART ?= charts/ecommerce-etl
IMAGE_REPO ?= ecommerce-etl
IMAGE_TAG ?= dev
IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)
# Service names rendered by the chart for release $(RELEASE).
SERVER_SVC ?= $(RELEASE)-ecommerce-etl-prefect-server
PGADMIN_SVC ?= $(RELEASE)-ecommerce-etl-pgadmin

.PHONY: kind-up kind-down image kind-load deploy port-forward dev e2e

kind-up: ## create the kind cluster from kind-config.yaml (or reuse it) and the namespace
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
	  || $(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 180s
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -f k8s/namespace.yaml

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

image: ## build the flow image ecommerce-etl:dev (debootstrap base where no registry answers)
	scripts/build-image.sh $(IMAGE)

kind-load: image ## load the flow image into the kind node (no registry involved)
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy: ## helm upgrade --install the chart on kind with k8s/values-kind.yaml, --wait
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -f k8s/namespace.yaml
	$(HELM) --kube-context $(KUBE_CONTEXT) upgrade --install $(RELEASE) $(CHART) \
	  --namespace $(NAMESPACE) -f k8s/values-kind.yaml \
	  --set image.repository=$(IMAGE_REPO) --set image.tag=$(IMAGE_TAG) \
	  --wait --timeout 10m

port-forward: ## forward the Prefect UI to localhost:4200 and pgAdmin to localhost:8080
	$(KUBECTL) --context $(KUBE_CONTEXT) -n $(NAMESPACE) port-forward svc/$(SERVER_SVC) 4200:4200 & \
	$(KUBECTL) --context $(KUBE_CONTEXT) -n $(NAMESPACE) port-forward svc/$(PGADMIN_SVC) 8080:80 & \
	wait

dev: ## skaffold dev on kind: rebuild on changes (flows/ included), redeploy, port-forward
	$(SKAFFOLD) dev --kube-context $(KUBE_CONTEXT) --port-forward=user $(SKAFFOLD_FLAGS)

e2e: venv ## kind end-to-end test (skips when kind, kubectl, helm or docker is missing)
	$(PY) -m pytest -m e2e tests/e2e
