# Top-level driver. `make` builds build/msrnn (Release); `make test` runs the whole suite twice:
# a Release build and an ASan+UBSan build (which reuses the reference data the first run generated).
JOBS ?= 2

.PHONY: all test test-release test-asan clean format demo

all:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build -j $(JOBS)

test: test-release test-asan

test-release: all
	cd build && ctest --output-on-failure -j 1

test-asan:
	CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMSRNN_SANITIZE=ON -DMSRNN_FUZZ=ON \
		-DMSRNN_GEN_REF=OFF -DMSRNN_REF_DIR=$(CURDIR)/build/ref >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 1

# The newcomer's first run, until msrnn's own trained default model lands: build, write a small model
# with freshly initialised weights (the vocabulary of the shared reference model), generate from it.
SHARED ?= ../shared
demo: all
	build/msrnn init-model --vocab-from $(SHARED)/models/gutenberg-ref.gguf -o build/demo.gguf \
		--dim 256 --layers 4 --heads 4 --kv-heads 2 --ffn 704 --ctx 2048 --type f16 --seed 1
	build/msrnn generate -m build/demo.gguf -p "It was a dark and stormy night" -n 48 --seed 1

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan
