PY ?= python

.PHONY: build lint types test bench bench-micro clean

build:
	FRAMEGATE_BUILD_EXT=yes $(PY) setup.py build_ext --inplace

lint:
	ruff check proxy tests benchmarks
	ruff format --check proxy tests benchmarks

types:
	mypy

test: build
	FRAMEGATE_REQUIRE_EXT=1 $(PY) -m pytest

bench-micro: build
	$(PY) -m pytest benchmarks/micro --benchmark-enable --benchmark-only -p no:randomly

bench: build
	$(PY) -m benchmarks.run

clean:
	rm -rf build proxy/*.so ext/*.c ext/*.html .pytest_cache .mypy_cache .benchmarks
