"""`fmriface lsl`: the service's stream republished as Lab Streaming Layer outlets (its own process; pylsl).

:class:`LslBridge` subscribes to the service's PUB socket like the dashboard (CurveZMQ where configured) and
pushes four LSL streams, each sample stamped with the time its volume's file was ready, mapped onto LSL's clock
(:class:`ClockMap`); the streams and their metadata are in :mod:`fmriface.lsl.streams`.
"""

from fmriface.lsl.bridge import BridgeConfig, ClockMap, LslBridge
from fmriface.lsl.streams import MOTION_CHANNELS, STREAM_NAMES, RunStreams, lsl_config

__all__ = ["BridgeConfig", "ClockMap", "LslBridge", "RunStreams", "MOTION_CHANNELS", "STREAM_NAMES", "lsl_config"]
