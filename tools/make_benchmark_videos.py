#!/usr/bin/env python3
"""Write the synthetic videos that tools/benchmark_data.py is measured on, one dataset folder
per kind of video:

    python tools/make_benchmark_videos.py --out /tmp/bench [--videos 3]
    python tools/benchmark_data.py --cfg configs/Kinetics/vov3d/vov3d_M.yaml NUM_GPUS 0 TRAIN.BATCH_SIZE 3 \
        DATA.PATH_TO_DATA_DIR /tmp/bench/h264_340x256_gop250 \
        DATA.PATH_PREFIX /tmp/bench/h264_340x256_gop250

Kinds (10 s at 30 fps, h264 in .mp4, x264 preset medium, CRF 23, B-frames on, fixed GOP):
  h264_340x256_gop30    Kinetics-sized, a keyframe every second
  h264_340x256_gop250   Kinetics-sized, x264's default GOP: two keyframes in 300 frames
  h264_640x272_gop250   a wide 2.35:1 clip, x264's default GOP

The content stands in for camera footage, since decoding cost depends on it: a multi-scale
noise texture (fine detail to large blobs) seen by a slowly panning and zooming camera,
three textured ellipses crossing the frame, a slow change of light and per-frame sensor
grain. Every folder gets train/val/test.csv listing its videos (labels 0, 1, ...).
"""
import argparse
import os
from typing import Dict, Tuple

import av
import cv2
import numpy as np

FPS = 30
SECONDS = 10
KINDS: Dict[str, Tuple[int, int, int]] = {  # name: (width, height, GOP)
    "h264_340x256_gop30": (340, 256, 30),
    "h264_340x256_gop250": (340, 256, 250),
    "h264_640x272_gop250": (640, 272, 250),
}


def noise_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] float32 in [0, 255]: octaves of smoothly upsampled noise (fine grain to
    large blobs, the coarse ones stronger, like the falling spectrum of natural images)
    plus hard-edged regions (posterised coarse noise), as object outlines give."""
    out = np.zeros((height, width, 3), np.float32)
    for octave in range(0, 7):
        cell = 2 ** octave
        small = rng.normal(size=(height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        out += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) * cell ** 0.5
    regions = cv2.resize(rng.normal(size=(height // 24 + 2, width // 24 + 2)).astype(np.float32),
                         (width, height), interpolation=cv2.INTER_CUBIC)
    out += 12.0 * np.floor(regions * 2.0)[..., None]
    out -= out.min()
    return out * (255.0 / out.max())


def render(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """[F, H, W, 3] uint8 RGB frames of one video."""
    frames = FPS * SECONDS
    pad = max(width, height) // 2
    scene = noise_texture(height + 2 * pad, width + 2 * pad, rng)
    objects = [(noise_texture(height, width, rng), rng.uniform(0.1, 0.25, 2) * (width, height),
                rng.uniform(0, 1, 2) * (width, height), rng.uniform(-3, 3, 2)) for _ in range(3)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        phase = 2 * np.pi * t / frames
        zoom = 1.0 + 0.08 * np.sin(phase)
        shift_x, shift_y = pad + 0.6 * pad * np.sin(phase), pad + 0.3 * pad * np.sin(2 * phase)
        camera = np.float32([[zoom, 0, shift_x], [0, zoom, shift_y]])
        frame = cv2.warpAffine(scene, camera, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        for texture, (rx, ry), (cx, cy), (vx, vy) in objects:
            x, y = (cx + vx * t) % width, (cy + vy * t) % height
            inside = (((xx - x) / rx) ** 2 + ((yy - y) / ry) ** 2 < 1.0)[..., None]
            frame = np.where(inside, texture, frame)
        frame = frame * (0.85 + 0.15 * np.cos(phase)) + rng.normal(0, 3.0, frame.shape)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def write_h264(path: str, frames: np.ndarray, gop: int) -> None:
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread: the same bitstream on every machine.
        stream.options = {"crf": "23", "preset": "medium", "threads": "1",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (one sub-folder per kind)")
    parser.add_argument("--videos", type=int, default=3, help="videos per kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.videos < 1:
        parser.error(f"--videos must be >= 1, got {args.videos}")
    for number, (kind, (width, height, gop)) in enumerate(KINDS.items()):
        folder = os.path.join(args.out, kind)
        os.makedirs(os.path.join(folder, "videos"), exist_ok=True)
        names = []
        for i in range(args.videos):
            rng = np.random.default_rng([args.seed, number, i])
            names.append(f"videos/{kind}_{i}.mp4")
            write_h264(os.path.join(folder, names[-1]), render(width, height, rng), gop)
        for split in ("train", "val", "test"):
            with open(os.path.join(folder, f"{split}.csv"), "w") as f:
                f.writelines(f"{name} {label}\n" for label, name in enumerate(names))
        print(f"{folder}: {args.videos} videos of {width}x{height}, keyframe every {gop} frames")


if __name__ == "__main__":
    main()
