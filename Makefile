# PAKE: two commands matter. `make run` starts the server, `make test` runs everything.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= ./data

.PHONY: all deps build build-asan run test test-release test-asan unit fuzz bench format format-check clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

$(ASAN_BUILD)/build.ninja:
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPAKE_SANITIZE=ON -DPAKE_FAULT_INJECTION=ON

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

run: build
	./$(BUILD)/pake serve --listen $(LISTEN) --data-dir $(DATA_DIR)

# The whole suite: format check, unit + integration tests on the optimised build and on the
# ASan/UBSan build (which also carries the fault-injection hooks).
test: build build-asan
	scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

fuzz: deps
	cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DPAKE_SANITIZE=ON -DPAKE_FUZZ=ON
	ninja -C build-fuzz
	scripts/run-fuzz.sh build-fuzz 60

bench: build
	bench/run-all.sh

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'fuzz/*.c' 'bench/*.c')

format-check:
	clang-format --dry-run --Werror $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'fuzz/*.c' 'bench/*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
