#!/usr/bin/env python3
"""Generate the toy video dataset used by the quick start and the data tests.

Every class is the exact time reversal of another class, and the random parameters of a
pair are drawn from distributions that are symmetric under that reversal:

    0 moving up        <->  1 moving down
    2 growing          <->  3 shrinking
    4 appearing        <->  5 disappearing

So the set of frames of a video is equally likely to come from either class of its pair:
a model that ignores frame order (per-frame features averaged over time) stays at chance
inside each pair, while a model that sees motion separates all six. All classes are
invariant to a horizontal flip, so the default `DATA.RANDOM_FLIP True` is safe.

Geometry (defaults): 40x32 (W x H) RGB frames, 32 frames at 30 fps (1.07 s), h264 in
`.mp4`, keyframe every 12 frames; 6 classes x (40 train + 10 val + 10 test) videos,
about 1.5 MB. A bright object of random tint and shape on a dark background. With DATA.NUM_FRAMES 8 and SAMPLING_RATE 4 (or 16 x 2) one clip spans the
whole video.

Formats:
  kinetics  DIR/{train,val,test}.csv ("videos/<name>.mp4 <label>"), DIR/videos/*.mp4
  ssv1      DIR/something-something-v1-{labels,train,validation}.csv, frame lists
            DIR/{train,val}.csv, JPEG frames DIR/frames/<id>/%05d.jpg
  ssv2      DIR/something-something-v2-{labels,train,validation}.json, frame lists
            DIR/{train,val}.csv, JPEG frames DIR/frames/<id>/<id>_%06d.jpg and the
            videos DIR/videos/<id>.webm (vp9)
All formats also write DIR/classes.json (class names in label order). --demo-video PATH also
writes PATH: the first evaluation video of every class back to back (h264), an input for
tools/demo_net.py (`make demo-video`).
The same --seed gives the same decoded frames (and, with the pinned encoder, the same bytes).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Sequence, Tuple

import av
import cv2
import numpy as np

CLASSES = ("moving up", "moving down", "growing", "shrinking", "appearing", "disappearing")
# Something-Something style templates ("[something]" is removed to get the label key).
TEMPLATES = tuple(f"[Something] {name}" for name in CLASSES)
SPLITS = ("train", "val", "test")
FPS = 30


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def sample_params(label: int, num_frames: int, height: int, width: int,
                  rng: np.random.Generator) -> Dict:
    """Random appearance and motion for one video of class `label`.

    The motion parameters are drawn for the *pair* and then ordered by the class, so the
    two classes of a pair see identical parameter distributions with time reversed.
    """
    # Appearance varies only mildly (a dark background, a bright object of random tint and
    # shape): strong colour nuisance made a from-scratch network spend most of its short
    # training budget on appearance instead of on the motion that defines the classes.
    params = {
        "background": rng.integers(0, 60, size=3),
        "gradient": rng.uniform(-15, 15, size=2),  # brightness slope along y and x
        "colour": rng.integers(170, 256, size=3),
        "shape": int(rng.integers(0, 2)),  # 0 disc, 1 square
    }
    pair, reverse = divmod(label, 2)
    if pair == 0:  # vertical motion of a fixed-size object
        size = rng.uniform(0.2, 0.3) * height
        lo, hi = size / 2, height - size / 2
        while True:
            a, b = sorted(rng.uniform(lo, hi, size=2))
            if b - a >= 0.35 * height:
                break
        # Up = decreasing y (image rows grow downwards).
        ys = np.linspace(b, a, num_frames) if not reverse else np.linspace(a, b, num_frames)
        xs = np.full(num_frames, rng.uniform(size / 2, width - size / 2))
        sizes = np.full(num_frames, size)
        visible = np.ones(num_frames, dtype=bool)
    elif pair == 1:  # growing / shrinking in place
        small = rng.uniform(0.1, 0.18) * height
        big = rng.uniform(0.55, 0.8) * height
        sizes = np.linspace(small, big, num_frames)
        if reverse:
            sizes = sizes[::-1]
        ys = np.full(num_frames, rng.uniform(big / 2, height - big / 2))
        xs = np.full(num_frames, rng.uniform(big / 2, width - big / 2))
        visible = np.ones(num_frames, dtype=bool)
    else:  # appearing / disappearing: shown for the last (first) `shown` frames
        size = rng.uniform(0.3, 0.45) * height
        shown = int(rng.integers(num_frames // 4, num_frames - num_frames // 4 + 1))
        visible = np.arange(num_frames) >= num_frames - shown
        if reverse:
            visible = visible[::-1].copy()
        ys = np.full(num_frames, rng.uniform(size / 2, height - size / 2))
        xs = np.full(num_frames, rng.uniform(size / 2, width - size / 2))
        sizes = np.full(num_frames, size)
    params.update(ys=ys, xs=xs, sizes=sizes, visible=visible)
    return params


def render_video(params: Dict, height: int, width: int) -> np.ndarray:
    """Frames `[F, H, W, 3]` uint8 RGB for the parameters of `sample_params`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gy, gx = params["gradient"]
    shade = gy * (yy / height - 0.5) + gx * (xx / width - 0.5)
    background = np.clip(params["background"][None, None, :] + shade[..., None], 0, 255)
    frames = np.empty((len(params["ys"]), height, width, 3), dtype=np.uint8)
    for t, (y, x, size, shown) in enumerate(zip(params["ys"], params["xs"], params["sizes"],
                                                 params["visible"])):
        frame = background.copy()
        if shown:
            if params["shape"] == 0:
                # Soft edge (1 px) so sub-pixel motion is visible after compression.
                dist = np.sqrt((yy - y) ** 2 + (xx - x) ** 2) - size / 2
            else:
                dist = np.maximum(np.abs(yy - y), np.abs(xx - x)) - size / 2
            alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
            frame = frame * (1 - alpha) + params["colour"][None, None, :] * alpha
        frames[t] = np.round(frame).astype(np.uint8)
    return frames


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------
def write_video(path: str, frames: np.ndarray, codec: str = "h264", gop: int = 12) -> None:
    """Encode RGB frames with PyAV (h264 in .mp4, or vp9 in .webm) at FPS frames/s."""
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec in ("h264", "libx264"):
            # With its own threads (FFmpeg's generic "threads" option does not reach them) or its
            # lookahead rate control, x264 gave other bytes for the same frames in the second of
            # two datasets built in one process; one thread and no lookahead make it repeatable.
            stream.options = {"crf": "16", "preset": "veryfast",
                              "x264-params": "threads=1:lookahead-threads=1:sync-lookahead=0:"
                                             "rc-lookahead=0:mbtree=0:weightp=0"}
        else:
            stream.options = {"deadline": "realtime", "crf": "10", "b": "0", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_jpegs(folder: str, frames: np.ndarray, name_pattern: str) -> List[str]:
    """Write frames as JPEG (quality 95); returns the file names in frame order."""
    os.makedirs(folder, exist_ok=True)
    names = []
    for i, frame in enumerate(frames):
        name = name_pattern % (i + 1)
        cv2.imwrite(os.path.join(folder, name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        names.append(name)
    return names


def write_frame_list(path: str, videos: Sequence[Tuple[str, List[str]]]) -> None:
    """PySlowFast frame list: header, then `original_vido_id video_id frame_id path labels`."""
    with open(path, "w") as f:
        f.write("original_vido_id video_id frame_id path labels\n")
        for number, (video_id, paths) in enumerate(videos):
            for frame_id, frame_path in enumerate(paths):
                f.write(f'{video_id} {number} {frame_id} {frame_path} ""\n')


def make_split_plan(num_classes: int, per_split: Dict[str, int],
                    seed: int) -> List[Tuple[str, int, int]]:
    """(split, label, seed) for every video: balanced classes, one seed per video."""
    seeds = np.random.SeedSequence(seed)
    plan = []
    for split in SPLITS:
        for label in range(num_classes):
            for _ in range(per_split[split]):
                plan.append((split, label, int(seeds.spawn(1)[0].generate_state(1)[0])))
    return plan


def generate(out: str, num_classes: int = 6, videos_per_class: int = 40, eval_per_class: int = 10,
             num_frames: int = 32, width: int = 80, height: int = 64, seed: int = 0,
             fmt: str = "kinetics", gop: int = 12, demo_video: str = "") -> Dict[str, int]:
    """Write the dataset (and `demo_video`, if given); returns the number of videos per split."""
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"--classes must be in [2, {len(CLASSES)}], got {num_classes}.")
    if width % 2 or height % 2:
        raise ValueError(f"--size must be even for yuv420p video, got {width}x{height}.")
    if num_frames < 4:
        raise ValueError(f"--frames must be >= 4, got {num_frames}.")
    if fmt not in ("kinetics", "ssv1", "ssv2"):
        raise ValueError(f"unknown --format {fmt!r}; expected kinetics, ssv1 or ssv2.")
    os.makedirs(out, exist_ok=True)
    per_split = {"train": videos_per_class, "val": eval_per_class, "test": eval_per_class}
    if fmt != "kinetics":
        # Something-Something evaluates on its validation list (val and test modes).
        per_split["test"] = 0
    plan = make_split_plan(num_classes, per_split, seed)
    rows: Dict[str, List[Tuple[str, int, List[str]]]] = {s: [] for s in SPLITS}
    demo_split = "test" if per_split["test"] else "val"
    demo_parts: Dict[int, np.ndarray] = {}
    for number, (split, label, video_seed) in enumerate(plan):
        params = sample_params(label, num_frames, height, width, np.random.default_rng(video_seed))
        frames = render_video(params, height, width)
        video_id = f"{number + 1:05d}" if fmt != "kinetics" else f"{split}_{number:05d}"
        rows[split].append((video_id, label, write_sample(out, fmt, video_id, frames, gop)))
        if split == demo_split:
            demo_parts.setdefault(label, frames)
    write_lists(out, fmt, list(CLASSES[:num_classes]), rows)
    if demo_video:
        write_video(demo_video, np.concatenate([demo_parts[label] for label in sorted(demo_parts)]), "h264", gop)
    return {split: len(rows[split]) for split in SPLITS}


def write_sample(out: str, fmt: str, video_id: str, frames: np.ndarray, gop: int) -> List[str]:
    """Write one video in the dataset's layout; returns its frame paths (frame datasets)."""
    if fmt == "kinetics":
        os.makedirs(os.path.join(out, "videos"), exist_ok=True)
        write_video(os.path.join(out, "videos", video_id + ".mp4"), frames, "h264", gop)
        return []
    pattern = "%05d.jpg" if fmt == "ssv1" else video_id + "_%06d.jpg"
    names = write_jpegs(os.path.join(out, "frames", video_id), frames, pattern)
    if fmt == "ssv2":
        os.makedirs(os.path.join(out, "videos"), exist_ok=True)
        write_video(os.path.join(out, "videos", video_id + ".webm"), frames, "libvpx-vp9", gop)
    return [f"{video_id}/{name}" for name in names]


def write_lists(out: str, fmt: str, names: List[str], rows: Dict[str, List[Tuple[str, int, List[str]]]]) -> None:
    """classes.json and the split lists in the dataset's own format."""
    with open(os.path.join(out, "classes.json"), "w") as f:
        json.dump(names, f, indent=1)
    if fmt == "kinetics":
        for split in SPLITS:
            with open(os.path.join(out, f"{split}.csv"), "w") as f:
                for video_id, label, _ in rows[split]:
                    f.write(f"videos/{video_id}.mp4 {label}\n")
        return
    if fmt == "ssv1":
        with open(os.path.join(out, "something-something-v1-labels.csv"), "w") as f:
            f.writelines(name + "\n" for name in names)
    else:
        labels = {TEMPLATES[i].replace("[", "").replace("]", ""): str(i) for i in range(len(names))}
        with open(os.path.join(out, "something-something-v2-labels.json"), "w") as f:
            json.dump(labels, f, indent=1)
    for split, official in (("train", "train"), ("val", "validation")):
        if fmt == "ssv1":
            with open(os.path.join(out, f"something-something-v1-{official}.csv"), "w") as f:
                f.writelines(f"{vid};{names[label]}\n" for vid, label, _ in rows[split])
        else:
            entries = [{"id": vid, "label": TEMPLATES[label].replace("[Something]", "a box"),
                        "template": TEMPLATES[label], "placeholders": ["a box"]}
                       for vid, label, _ in rows[split]]
            with open(os.path.join(out, f"something-something-v2-{official}.json"), "w") as f:
                json.dump(entries, f, indent=1)
        write_frame_list(os.path.join(out, f"{split}.csv"), [(vid, paths) for vid, _, paths in rows[split]])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--classes", type=int, default=6, help="number of classes (2-6)")
    parser.add_argument("--videos-per-class", type=int, default=40, help="train videos per class")
    parser.add_argument("--eval-per-class", type=int, default=10,
                        help="val (and, for kinetics, test) videos per class")
    parser.add_argument("--frames", type=int, default=32, help="frames per video (30 fps)")
    parser.add_argument("--size", default="40x32", help="frame size WxH (even numbers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gop", type=int, default=12, help="keyframe interval in frames")
    parser.add_argument("--format", default="kinetics", choices=("kinetics", "ssv1", "ssv2"))
    parser.add_argument("--demo-video", default="",
                        help="also write this video: one evaluation video of every class, back to back")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        sys.exit(f"--size must look like 40x32 (W x H), got {args.size!r}.")
    counts = generate(args.out, args.classes, args.videos_per_class, args.eval_per_class,
                      args.frames, width, height, args.seed, args.format, args.gop, args.demo_video)
    print(f"wrote {args.format} toy dataset to {args.out}: "
          + ", ".join(f"{split} {n}" for split, n in counts.items() if n)
          + f" videos; {args.classes} classes; {args.frames} frames of {width}x{height} at {FPS} fps")


if __name__ == "__main__":
    main()
