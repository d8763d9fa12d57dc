# Two commands: `make demo` runs the whole loop, `make test` runs the checks and the tests.
# Both create .venv on first use; later runs only check it (the stamp file).
# `make test` = `make lint` (ruff check, ruff format --check, mypy) then pytest; with CI=true a missing
# optional extra, transformers or shared fixture fails its tests instead of skipping them.
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.lmpipe-installed
WORKDIR ?= demo_out
TEST_WORKERS ?= 2

.PHONY: setup demo lint test bench books-shards clean

setup: $(STAMP)

# Without an NVIDIA GPU, pin the CPU torch wheel first so no dependency pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: torch comes from pyproject's range (CUDA build)"; \
	else \
		$(PYTHON) -m pip install --quiet torch==2.13.0; \
	fi
	$(PYTHON) -m pip install --quiet -e '.[dev,extras,eval]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/lmpipe demo --workdir $(WORKDIR)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

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
