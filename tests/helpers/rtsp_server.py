"""A GStreamer RTSP server looping raw RGB frames, live-paced (run by ``tests.helpers.rtsp``).

Run with the system Python that has ``gi`` (python3-gi, gir1.2-gst-rtsp-server-1.0)::

    /usr/bin/python3 rtsp_server.py --port 0 --path /scenes --fps 10 --hold 10 \\
        --width 640 --height 480 --codec h264 frame0.rgb frame1.rgb ...

Each file is one frame of raw RGB bytes (``width * height * 3``), shown ``hold`` times in a
row; the list loops forever. Every client gets its own pipeline (not shared), so it starts at
the first frame with a keyframe. Listens on 127.0.0.1 only; prints ``READY <port>`` once
listening; quits on SIGTERM / SIGINT or when its stdin closes (the parent went away).
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def _encoder(codec: str, fps: int) -> str:
    """The encoding part of the launch line for ``codec``."""
    if codec == "mjpeg":  # RTP/JPEG carries no range: full-range 4:2:0, as JPEG decoders assume
        return (
            "videoconvert ! video/x-raw,format=I420,colorimetry=1:4:0:0 ! jpegenc quality=90 "
            "! rtpjpegpay name=pay0 pt=26"
        )
    if Gst.ElementFactory.find("x264enc") is not None:
        # One slice per frame: PyAV's RTSP input decodes x264's sliced frames as half frames.
        enc = (
            "x264enc tune=zerolatency speed-preset=ultrafast threads=1 "
            f"key-int-max={fps} bframes=0 ! video/x-h264,profile=baseline"
        )
    else:
        enc = f"openh264enc gop-size={fps} ! video/x-h264,profile=constrained-baseline"
    return (
        f"videoconvert ! video/x-raw,format=I420 ! {enc} ! h264parse "
        "! rtph264pay name=pay0 pt=96 config-interval=-1"
    )


class Factory(GstRtspServer.RTSPMediaFactory):
    """Builds one pipeline per client: appsrc (raw RGB, live) then the encoder."""

    def __init__(self, frames: list[bytes], args: argparse.Namespace) -> None:
        super().__init__()
        self.frames = frames
        self.hold = args.hold
        self.duration = Gst.SECOND // args.fps
        caps = (
            f"video/x-raw,format=RGB,width={args.width},height={args.height},framerate={args.fps}/1"
        )
        self.launch = (
            f"( appsrc name=src is-live=true format=time caps={caps} "
            f"! {_encoder(args.codec, args.fps)} )"
        )
        self.set_shared(False)
        # RTP/RTCP over UDP from 127.0.0.1 too (without a pool the server binds them to any).
        pool = GstRtspServer.RTSPAddressPool()
        pool.add_range("127.0.0.1", "127.0.0.1", 20000, 60000, 0)
        self.set_address_pool(pool)
        if args.tcp_only:
            self.set_protocols(GstRtsp.RTSPLowerTrans.TCP)

    def do_create_element(self, url: GstRtsp.RTSPUrl) -> Gst.Element:
        return Gst.parse_launch(self.launch)

    def do_configure(self, media: GstRtspServer.RTSPMedia) -> None:
        GstRtspServer.RTSPMediaFactory.do_configure(self, media)  # pool, protocols, ...
        source = media.get_element().get_child_by_name("src")
        state = {"n": 0}

        def need_data(src: Gst.Element, _length: int) -> None:
            n = state["n"]
            data = self.frames[(n // self.hold) % len(self.frames)]
            buffer = Gst.Buffer.new_wrapped(data)
            buffer.pts = n * self.duration
            buffer.duration = self.duration
            state["n"] = n + 1
            src.emit("push-buffer", buffer)

        source.connect("need-data", need_data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/scenes")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--hold", type=int, default=10)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--codec", choices=("h264", "mjpeg"), default="h264")
    parser.add_argument("--tcp-only", action="store_true")
    parser.add_argument("frames", nargs="+")
    args = parser.parse_args()
    size = args.width * args.height * 3
    frames = []
    for name in args.frames:
        with open(name, "rb") as f:
            data = f.read()
        if len(data) != size:
            parser.error(f"{name}: {len(data)} bytes, expected {size}")
        frames.append(data)

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, Factory(frames, args))
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_HUP | GLib.IO_ERR, lambda *_: loop.quit())
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
