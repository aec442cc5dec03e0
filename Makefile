# The two commands a fresh machine needs: `make demo` and `make test`. Everything else is set up by them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IMG2IMG := $(VENV)/bin/img2img
STATE ?= $(HOME)/.local/state/img2img-operator/local
DEMO_OUT ?= out/demo
DEMO_JOB := seed-demo-$(shell date +%s)

.PHONY: venv binaries test test-unit demo down bench crd lint clean lock pin-images images

venv:
	@$(PYTHON) scripts/make_venv.py

# Builds etcd, kube-apiserver, kube-controller-manager and MinIO once per machine (cached by version under ~/.cache).
binaries: venv
	@$(PY) -c 'import time,subprocess,sys; t=time.monotonic(); subprocess.run([sys.executable,"-m","img2img.local.binaries"],check=True,stdout=subprocess.DEVNULL); print(f"[binaries] ready in {time.monotonic()-t:.0f} s")'

test: binaries
	$(PY) -m pytest -ra

test-unit: venv
	$(PY) -m pytest -ra tests/unit

# The seed's request end to end on the embedded stack: local up, submit --wait, print the status, fetch the images.
demo: binaries
	@mkdir -p $(STATE)
	@$(IMG2IMG) local up --state-dir $(STATE) > $(STATE).env || { echo "local up failed; logs in $(STATE)/logs"; exit 1; }
	@. $(STATE).env && $(IMG2IMG) submit examples/seed-request.json --name $(DEMO_JOB) --wait
	@. $(STATE).env && $(IMG2IMG) fetch $(DEMO_JOB) -o $(DEMO_OUT)
	@echo "images in $(DEMO_OUT); the stack keeps running: eval \"\$$($(IMG2IMG) local env --state-dir $(STATE))\"; stop it with: make down"

down:
	@$(IMG2IMG) local down --state-dir $(STATE)

bench: binaries
	$(PY) bench/run_all.py

# Every CRD (Img2ImgJob, RunnerPool), generated from img2img/api, into crds/ and the chart's copy.
crd: venv
	$(PY) -m img2img.api.crd crds helm/img2img-operator/crds

# The images' supply chain (docs/security.md, "Supply chain"): `lock` writes requirements/*.lock (every Python
# package of each image, pinned, with hashes) from pyproject.toml and the versions .venv tested; `pin-images` asks the
# registry for the base images' digests (docker buildx) into base-images.lock; `images` builds both images with them
# and refuses a base without a digest.
IMAGE_TAG ?= 0.1.0
lock: venv
	$(PY) scripts/lock_requirements.py

pin-images:
	$(PYTHON) scripts/base_images.py pin

images:
	for image in operator runner; do \
	  arg=$$($(PYTHON) scripts/base_images.py build-arg Dockerfile.$$image) || exit 1; \
	  docker build -f Dockerfile.$$image --build-arg "$$arg" -t ghcr.io/img2img-operator/$$image:$(IMAGE_TAG) . || exit 1; \
	done

clean: down
	rm -rf $(VENV) out
