# Prometheus monitoring (included by the Makefile): promtool for the rule tests, and the local kind check.
.PHONY: promtool

promtool: ## promtool for the alert-rule tests (Debian's prometheus package; installs it as root when missing)
	@scripts/prometheus-tools.sh promtool >/dev/null

.PHONY: metrics-local
metrics-local: venv ## On the local kind: metrics + HA server + a real Prometheus (rows = count(*), alerts, dashboard, API pod deleted mid-run)
	PY=$(PY) $(LOCAL_K8S)/metrics.sh
