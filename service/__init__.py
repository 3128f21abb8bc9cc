"""The real-time service: everything that runs during the scan.

Watching the scanner's export folder, reading volumes, motion correction, online preprocessing, decoding with
onnxruntime, publishing over ZeroMQ, run logs and the scanner emulator for replay. It never imports torch,
``offline``, ``stimulus`` or psychopy (enforced by import-linter), so it installs light and starts fast.

Submodules are imported on use (``from service.motion import RigidRegistration``); importing ``service``
itself loads nothing, so the stimulus programs can import ``service.protocol`` alone.
"""
