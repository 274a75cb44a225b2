# Reliability figures (included by the Makefile): faults, bad inputs, security scan.
# checkov pins packaging<24 while pytest 9 needs >=24, so it gets its own venv.
CHECKOV_VENV ?= .cache/checkov
CHECKOV_VERSION ?= 3.3.30

$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m uv venv -q --allow-existing -p $(PYTHON) $(CHECKOV_VENV)
	$(PYTHON) -m uv pip install -q -p $(CHECKOV_VENV)/bin/python checkov==$(CHECKOV_VERSION)

checkov: $(CHECKOV_VENV)/bin/checkov ## install checkov into its own venv under .cache (it cannot share the test venv)

reliability: venv checkov ## kill/restart/concurrency/bad-input/security tests and their figures (last line: kills=... checkov_failed=...)
	$(PY) -m benchmarks.reliability $(RELIABILITY_ARGS)

.PHONY: checkov reliability
