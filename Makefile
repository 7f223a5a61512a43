# Two entry points for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of PyTorch; on a GPU machine install the torch you need first, then `make install`.
TORCH  ?= torch==2.13.0

.PHONY: install browser demo test test-models benchmark clean

$(BIN)/.installed: pyproject.toml viewer/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]" -e ./viewer
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/entropylens demo

# Debian's Chromium and ChromeDriver for the browser tests, where apt-get may install them (else they are skipped).
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null 2>&1 || \
	  ([ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1))) || \
	  echo "chromium and chromedriver not installed: the browser tests will be skipped"

test: $(BIN)/.installed browser
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

# Every model of the zoo (fetches the Qwen models once: about 9 GB of disk, 9 GB of memory while converting).
test-models: $(BIN)/.installed
	ENTROPYLENS_TEST_MODELS=all QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest tests/test_zoo.py

benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) build *.egg-info viewer/build viewer/*.egg-info
