# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml setup.py dqcodec/_native.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the local CPU build of torch first, so the dependency range does not pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m dqcodec.demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# about two and a half hours on 2 cores (dqc compare on Kodak about 35 minutes, on 40 BSDS500 test images 25, the settings
# table 20, against dqc 0.2 25); results land in benchmarks/results/
bench: $(STAMP)
	$(PY) -m benchmarks.kodak_rd
	$(PY) -m benchmarks.bsds500_rd
	$(PY) -m benchmarks.settings
	$(PY) -m benchmarks.colour
	$(PY) -m benchmarks.compare_release --commit 8e36ee8 --current-qualities 20,25,30,35,40,45,50,55,60,65,70 \
		--stem compare_release_0.2 --jobs 2
	$(PY) -m benchmarks.compare_release --commit 8e36ee8 --current-qualities 20,30,40,50,60,70 --current-effort 5 \
		--reuse benchmarks/results/compare_release_0.2.json --against avif --stem compare_release_0.2 --jobs 2
	$(PY) -m benchmarks.prior_bits
	$(PY) -m benchmarks.speed
	$(PY) -m benchmarks.large_image

clean:
	rm -rf $(VENV) out build *.egg-info dqcodec/*.so
