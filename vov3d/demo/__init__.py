"""The demo: a video file or a webcam in, the same frames out with the model's top-k classes
drawn on them, plus a per-prediction JSON-lines file (tools/demo_net.py, or run_net with
DEMO.ENABLE True).

sources.py   frames in (the project's PyAV decoder for files, OpenCV for a webcam)
inputs.py    a frame or a clip of frames -> the model's input tensor
predictors.py  when the model runs: a sliding clip window (clip models) or every sampled
             frame (CoX3D's per-frame step)
drawing.py   the labels on a frame (OpenCV)
outputs.py   frames out (a video file or a window) and the predictions file
run.py       the checks made before any decoding, and the loop
"""
