# Two commands do everything: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
# On our machines this pin resolves to the local CPU wheel; elsewhere pip picks your platform's build.
TORCH_SPEC ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ansm-installed
# the test extras (pytest, onnxruntime, selenium, the web server) come on top: `make demo` does not wait for them
TEST_STAMP := $(VENV)/.ansm-test-installed

.PHONY: demo test setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[test]"
	touch $(TEST_STAMP)

setup: $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/ansm demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs

# Optional environment for IMDLBenCo zoo models (README, "IMDLBenCo models"). Separate from .venv because
# imdlbenco pulls torchvision, and PyPI's torchvision does not import beside the CPU torch 2.13.0 wheel;
# torch 2.14.1 + torchvision 0.29.1 from PyPI (a CUDA build, ~5.5 GB, runs on a CPU too) do.
BENCO_VENV       ?= .venv-benco
BENCO_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BENCO_STAMP      := $(BENCO_VENV)/.ansm-benco-installed

.PHONY: benco-env

$(BENCO_STAMP): pyproject.toml
	test -x $(BENCO_VENV)/bin/python || $(PYTHON) -m venv $(BENCO_VENV)
	$(BENCO_VENV)/bin/pip install -q $(BENCO_TORCH_SPEC)
	$(BENCO_VENV)/bin/pip install -q -e ".[test,benco]"
	$(BENCO_VENV)/bin/python -W ignore -c "import torchvision, IMDLBenCo.model_zoo"
	touch $(BENCO_STAMP)

benco-env: $(BENCO_STAMP)
