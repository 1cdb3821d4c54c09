# jmdc — top-level tasks. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
# ONNX Runtime 1.31 on Linux sends telemetry unless this is set (the binaries also set it for themselves).
export ORT_DISABLE_TELEMETRY := 1
CARGO ?= cargo
PYTHON ?= python3
TRAIN_VENV := models/.venv
VERIFY_VENV := .cache/verify-venv
# Prefer the training venv when it exists (it has everything); otherwise a light one without PyTorch.
MODELS_PY = $(if $(wildcard $(TRAIN_VENV)/bin/python),$(TRAIN_VENV)/bin/python,$(VERIFY_VENV)/bin/python)

.PHONY: demo test bench bench-vgg16 bench-ci soak soak-short bench-bins ort build lint fmt models-venv models-test models-verify verify-venv deploy-check cross-ci debs deny clean

## Run the bundled model on the bundled sample frames: cloud worker + edge on loopback, five plans compared,
## then the adaptive loop. MODEL=vgg16-cifar10 runs the VGG16 package instead of AlexNet.
MODEL ?= alexnet-cifar10
demo: ort
	$(CARGO) build --release -p jmdc-edge -p jmdc-cloud
	JMDC_DEMO_MODEL=$(MODEL) scripts/demo.sh

## Everything CI checks: formatting, lints, Rust tests (real ONNX Runtime + QUIC on loopback), model packages,
## the systemd units (systemd-analyze verify + exposure), the container/Kubernetes files (offline schema check).
test: ort lint models-verify
	$(CARGO) test --workspace --all-targets
	systemd/check.sh
	target/debug/jmdc-edge check-config --syntax-only --config systemd/debian/edge.toml >/dev/null
	target/debug/jmdc-cloud check-config --syntax-only --config systemd/debian/cloud.toml >/dev/null
	JMDC_CLOUD_BIN=target/debug/jmdc-cloud cloud/deploy/check.sh

## Benchmark matrix (about 35 minutes on 2 cores, then the VGG16 cells): the adaptive loop vs every fixed plan, edge-only, cloud-only
## and Neurosurgeon over emulated links (jmdc-linkemu) and emulated Pi-speed edges → docs/bench/, docs/benchmarks.md.
bench: ort bench-bins
	target/release/jmdc-bench run --cells full --out docs/bench --report docs/benchmarks.md
	$(MAKE) bench-vgg16

## VGG16 cells (about 30 minutes): pi4/pi3 edges at 1–50 Mbit/s, RTT 20 ms, floor 88 % (keep050 allowed)
## → docs/bench-vgg16/, docs/benchmarks-vgg16.md; then pi4 at 0.25–50 Mbit/s, RTT 5 ms, floor 91 % (keep100
## and keep075 only) → docs/bench-vgg16-floor91/, docs/benchmarks-vgg16-floor91.md.
bench-vgg16: ort bench-bins
	target/release/jmdc-bench run --model vgg16-cifar10 --floor-pct 88 --cells grid --profiles pi4,pi3 \
		--bandwidths 1,5,20,50 --rtts 20 --loads idle --no-dynamic --frames 64 --repeats 2 \
		--out docs/bench-vgg16 --report docs/benchmarks-vgg16.md
	target/release/jmdc-bench run --model vgg16-cifar10 --floor-pct 91 --cells grid --profiles pi4 \
		--bandwidths 0.25,1,5,50 --rtts 5 --loads idle --no-dynamic --frames 64 --repeats 2 \
		--out docs/bench-vgg16-floor91 --report docs/benchmarks-vgg16-floor91.md

## Quick benchmark check (3 cells, a few minutes): fails when adaptive ÷ oracle > 1.25 in any cell → target/bench-ci/.
bench-ci: ort bench-bins
	target/release/jmdc-bench run --cells ci --frames 64 --repeats 6 --no-dynamic --fail-above 1.25 \
		--out target/bench-ci --report target/bench-ci/benchmarks.md

## Soak and fault run (about 12 minutes): 64 simulated devices with certificates, 10 minutes through the
## link emulator with 5 % and 30 % loss, a 10 s blackout and a worker restart → docs/soak/ (docs/reliability.md).
soak: ort bench-bins
	target/release/jmdc-bench soak --devices 64 --duration-s 600 --out docs/soak

## The same in 100 s (CI): fails on a lost frame, a panic, an unclean exit or a recovery over 2 s → target/soak/.
soak-short: ort bench-bins
	target/release/jmdc-bench soak --devices 64 --duration-s 100 --out target/soak

bench-bins:
	$(CARGO) build --release -p jmdc-edge -p jmdc-cloud -p jmdc-bench

## Debian packages (amd64 + arm64) → target/debian/, checked; amd64 also installed in a throw-away overlay (root).
debs:
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	systemd/build-debs.sh --arch amd64 --run-check --install-check
	systemd/build-debs.sh --arch arm64 --run-check

## aarch64 (Raspberry Pi): cross build, glibc check, both binaries under qemu-aarch64 (docs/cross.md).
cross-ci:
	cross/ci.sh

## Offline checks of cloud/deploy (kubernetes-validate --strict, jmdc-cloud check-config, hadolint).
deploy-check:
	cloud/deploy/check.sh

## Fetch libonnxruntime 1.31.1 from the PyPI wheel into .cache/onnxruntime (idempotent).
ort:
	scripts/fetch-onnxruntime.sh

build:
	$(CARGO) build --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Training environment (PyTorch etc., several GB): needed only to rebuild model packages.
models-venv:
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -r models/requirements.txt

verify-venv:
	@if [ ! -x $(TRAIN_VENV)/bin/python ] && [ ! -x $(VERIFY_VENV)/bin/python ]; then \
		$(PYTHON) -m venv $(VERIFY_VENV) && \
		$(VERIFY_VENV)/bin/pip install -q -r models/requirements-verify.txt; \
	fi

## The models/ pytest suite (needs the training venv: `make models-venv`, PyTorch ≈ 7 GB; not part of `make test`).
models-test:
	cd models && OMP_NUM_THREADS=1 ../$(TRAIN_VENV)/bin/python -m pytest -q tests

## Re-check the shipped model packages with ONNX Runtime (hashes, shapes, chained == full, top-1).
models-verify: verify-venv
	cd models && ../$(MODELS_PY) -m jmdc_models.verify packages/*/

## Dependency policy (deny.toml, cargo-deny): licences, bans, sources; RustSec advisories when the database can be had.
deny:
	scripts/deny.sh

clean:
	$(CARGO) clean
	rm -rf .cache
