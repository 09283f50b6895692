"""Writing RGB frames as a video file with PyAV: the cameras of the stream tests and benchmark."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["write_frames"]


def write_frames(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int = 10,
    codec: Literal["h264", "mjpeg"] = "h264",
    crf: int = 20,
) -> Path:
    """Write RGB frames (all of one size) as a video at ``fps``; returns ``path``.

    ``h264`` is libx264 (yuv420p, constant quality ``crf``, a keyframe every second, no
    B-frames) and suits ``.mkv`` or ``.mp4``; ``mjpeg`` (yuvj420p) suits ``.mkv`` or ``.avi``.
    """
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        if codec == "h264":
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": str(crf)}
            stream.codec_context.gop_size = fps
            stream.codec_context.max_b_frames = 0
        else:
            stream = container.add_stream("mjpeg", rate=fps)
            stream.pix_fmt = "yuvj420p"
            stream.options = {"q:v": "3"}
            stream.codec_context.qmin = 2
            stream.codec_context.qmax = 4
        for n, frame in enumerate(frames):
            if n == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = n
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
