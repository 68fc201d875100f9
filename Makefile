# Top-level driver. `make` builds build/msrnn (Release); `make test` runs the whole suite twice:
# a Release build and an ASan+UBSan build (which reuses the reference data the first run generated).
JOBS ?= 2

.PHONY: all test test-release test-asan fuzz clean format bench

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

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan
