# Thin wrapper over CMake. `make` builds every tool into build/bin/; `make test` runs
# every test (CTest: doctest units, bats suites, crash and fuzz runs).
BUILD    ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=
JOBS     ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure test install bench demo clean lint

all: configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/install-deps.sh

configure: deps
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

install: all
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

bench: all
	if [ -z "$$FLK_BENCH_ONLY" ] || { [ "$$FLK_BENCH_ONLY" != ship ] && [ "$$FLK_BENCH_ONLY" != read ]; }; then bench/run.sh $(BUILD); fi
	if [ -z "$$FLK_BENCH_ONLY" ] || [ "$$FLK_BENCH_ONLY" = ship ]; then bench/ship.sh $(BUILD); fi
	if [ -z "$$FLK_BENCH_ONLY" ] || [ "$$FLK_BENCH_ONLY" = read ]; then bench/read.sh $(BUILD); fi

demo: all
	scripts/demo.sh $(BUILD)/bin

lint:
	mandoc -Tlint -Wwarning man/*.[157]
	shellcheck -x scripts/*.sh scripts/lib/*.sh bench/*.sh tests/cli/*.bash .ci/run

clean:
	rm -rf $(BUILD)
