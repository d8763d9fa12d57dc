# Two commands: `make demo` runs the whole loop, `make test` runs the checks and the tests.
# Both create .venv on first use; later runs only check it (the stamp file).
# `make test` = `make lint` (ruff check, ruff format --check, mypy) then pytest; with CI=true a missing
# optional extra, transformers or shared fixture fails its tests instead of skipping them.
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.lmpipe-installed
WORKDIR ?= demo_out
TEST_WORKERS ?= 2

.PHONY: setup demo lint test bench books-shards wheelhouse clean

setup: $(STAMP)

# Without an NVIDIA GPU, pin the CPU torch wheel first so no dependency pulls a multi-GB CUDA build.
# With WHEELS=dir (a `make wheelhouse`), install offline over the machine's own torch instead: the venv
# sees the system's packages (a GPU image's CUDA torch, numpy, pyarrow, tokenizers), pip reads only dir.
$(STAMP): pyproject.toml
ifdef WHEELS
	@test -x $(PYTHON) || python3 -m venv --system-site-packages $(VENV)
	$(PYTHON) -m pip install --quiet --no-index --find-links $(WHEELS) $(WHEELHOUSE_BINARY) deepspeed
	$(PYTHON) -m pip install --quiet --no-index --find-links $(WHEELS) --no-deps -e .
	$(PYTHON) -c "import torch, deepspeed, pipeline.cli.train; print('offline set-up: torch', torch.__version__)"
else
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: torch comes from pyproject's range (CUDA build)"; \
	else \
		$(PYTHON) -m pip install --quiet torch==2.13.0; \
	fi
	$(PYTHON) -m pip install --quiet -e '.[dev,extras,eval]'
endif
	@touch $(STAMP)

# The wheels a GPU machine without network lacks to train (its image has torch, numpy, pyarrow, tokenizers,
# safetensors, transformers): `make wheelhouse WHEELS=dir [PY_VERSION=3.12]` on any machine with the index,
# then carry dir over and `make setup WHEELS=dir` there. DeepSpeed is built as pure Python (DS_BUILD_OPS=0):
# ZeRO then runs with torch's AdamW and compiles nothing. setuptools and wheel build lmpipe's editable install.
PY_VERSION ?= 3.12
WHEELHOUSE_BINARY := omegaconf rich pyyaml hjson msgpack psutil py-cpuinfo pydantic einops nvidia-ml-py ninja \
	packaging tqdm setuptools wheel
WHEELHOUSE_PLATFORMS := --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux_2_28_x86_64 --platform any
# Its own venv comes from the index (WHEELS= unset for that step): with WHEELS=dir, a stale .venv stamp
# (pyproject.toml edited since) would install offline from the wheelhouse it has yet to fill.
wheelhouse:
	@test -n "$(WHEELS)" || { echo "usage: make wheelhouse WHEELS=dir [PY_VERSION=3.12]" >&2; exit 2; }
	$(MAKE) setup WHEELS=
	$(PYTHON) -m pip download --quiet --only-binary=:all: --python-version $(PY_VERSION) \
		$(WHEELHOUSE_PLATFORMS) -d $(WHEELS) $(WHEELHOUSE_BINARY)
	DS_BUILD_OPS=0 $(PYTHON) -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEELS) \
		deepspeed==$$($(PYTHON) -m pip show deepspeed | sed -n 's/^Version: //p')
	@ls $(WHEELS)

demo: setup
	$(VENV)/bin/lmpipe demo --workdir $(WORKDIR)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# --durations: CI's log names the slowest tests, where its time budget goes.
test: lint
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=25

# The natural-text shards of configs/sweep/cpu-books.yaml (configs/data/books.yaml): ../shared/corpora's
# books with the Wikipedia and Common Crawl fixtures -> data/books/{docs,tokenizer,shards}, ~3 min on 2 cores.
SHARED ?= ../shared
BOOKS  ?= data/books
books-shards: setup
	$(VENV)/bin/lmpipe data prep --config configs/data/books.yaml --output $(BOOKS)/docs \
		--input $(SHARED)/corpora/gutenberg-books.jsonl.gz '$(SHARED)/fixtures/wiki/enwiki-*' \
		'$(SHARED)/fixtures/warc/*.warc.gz'
	$(VENV)/bin/lmpipe data train-tokenizer --config configs/data/tokenizer.yaml --input $(BOOKS)/docs \
		--output $(BOOKS)/tokenizer
	$(VENV)/bin/lmpipe data tokenize --config configs/data/tokenize.yaml --input $(BOOKS)/docs \
		--tokenizer $(BOOKS)/tokenizer --output $(BOOKS)/shards

bench: setup
	@for script in bench/bench_*.py; do echo "== $$script"; $(PYTHON) $$script || exit 1; done

clean:
	rm -rf $(WORKDIR) .pytest_cache .mypy_cache .ruff_cache
