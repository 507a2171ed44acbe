# Two entry points (see README): `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PRESET ?= release
BUILD := build/$(PRESET)

.PHONY: run test deps build build-asan unit integration e2e asan-unit format-check bench clean

run: deps build
	./scripts/run-demo.sh $(BUILD)

test: deps
	./scripts/test.sh

deps:
	./scripts/deps.sh

build:
	cmake --preset $(PRESET) >/dev/null
	cmake --build --preset $(PRESET)

build-asan:
	cmake --preset asan >/dev/null
	cmake --build --preset asan

unit: build
	ctest --preset $(PRESET) -L unit

integration: build
	ctest --preset $(PRESET) -L integration

e2e: build
	./scripts/e2e.sh $(BUILD)

asan-unit: build-asan
	ctest --preset asan -L unit

format-check:
	./scripts/format-check.sh

bench: build
	./bench/run.sh

clean:
	rm -rf build
