# Two entry points for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of PyTorch; on a GPU machine install the torch you need first, then `make install`.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-models benchmark clean

$(BIN)/.installed: pyproject.toml viewer/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]" -e ./viewer
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/entropylens demo

test: $(BIN)/.installed
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

# Every model of the zoo (fetches the Qwen models once: about 9 GB of disk, 9 GB of memory while converting).
test-models: $(BIN)/.installed
	ENTROPYLENS_TEST_MODELS=all QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest tests/test_zoo.py

benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) build *.egg-info viewer/build viewer/*.egg-info
