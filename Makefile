# Two entry points: `make demo` (set up, make the toy dataset, train and test on it, write
# OUTPUT_DIR/report/report.html)
# and `make test` (the whole test suite). Both create .venv on first use. After `make demo`,
# `make demo-video` labels the toy classes played back to back with the trained model
# (tools/demo_net.py): output/toy/demo_labelled.mp4 and its predictions, demo_labelled.jsonl.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOY_DIR ?= data/toy
OUT_DIR ?= output/toy

.PHONY: setup demo demo-x3d demo-video test clean

$(STAMP): setup.py requirements.txt requirements-test.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) tools/make_toy_dataset.py --out $(TOY_DIR) --demo-video $(TOY_DIR)/demo.mp4
	$(PY) tools/run_net.py --cfg configs/Toy/vov3d_M_toy.yaml \
		DATA.PATH_TO_DATA_DIR $(TOY_DIR) DATA.PATH_PREFIX $(TOY_DIR) OUTPUT_DIR $(OUT_DIR)/vov3d_M
	$(PY) tools/visualize.py --results $(OUT_DIR)/vov3d_M

demo-x3d: setup
	$(PY) tools/make_toy_dataset.py --out $(TOY_DIR)
	$(PY) tools/run_net.py --cfg configs/Toy/x3d_M_toy.yaml \
		DATA.PATH_TO_DATA_DIR $(TOY_DIR) DATA.PATH_PREFIX $(TOY_DIR) OUTPUT_DIR $(OUT_DIR)/x3d_M
	$(PY) tools/visualize.py --results $(OUT_DIR)/x3d_M

demo-video: setup
	$(PY) tools/demo_net.py --cfg configs/Toy/vov3d_M_toy.yaml OUTPUT_DIR $(OUT_DIR)/vov3d_M \
		DEMO.INPUT_VIDEO $(TOY_DIR)/demo.mp4 DEMO.LABEL_FILE_PATH $(TOY_DIR)/classes.json \
		DEMO.OUTPUT_FILE $(OUT_DIR)/demo_labelled.mp4 DEMO.BUFFER_SIZE 24 TENSORBOARD.MODEL_VIS.TOPK_PREDS 3

test: setup
	$(PY) -m pytest -q -n 2 tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

clean:
	rm -rf $(OUT_DIR) $(TOY_DIR)
