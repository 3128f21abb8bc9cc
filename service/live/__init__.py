"""The live service: ``serve``'s configuration and start-up, the per-volume pipeline, trials, neurofeedback, the
ONNX decoder, the ZeroMQ publisher, CurveZMQ authentication and the run records.

The names below are the room's entry points, what a caller outside ``service/live`` needs: run the service
(``Service``, ``ServeConfig``, the start-up checks and logging), embed or time its parts (``Pipeline``,
``LatentDecoder``, ``Publisher``, the ONNX session), read what a run left (``RunLog``, ``read_volumes``,
``read_records``, ``run_report``), replay a run as sham feedback and make CurveZMQ keys. The pieces the pipeline
is built from (history, trials, feedback, the appendable ``.npy``, the authenticator, the run id and resume
rules) stay importable from their modules. All are imported on first use (``lazy_loader``), so that
``service.live.runlog`` and ``service.live.onnx_session``, which ``offline`` uses, load nothing else.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "serve": ["Service"],
        "config": ["ServeConfig"],
        "startup": ["StartupError", "startup_checks", "setup_logging"],
        "pipeline": ["Pipeline"],
        "decoder": ["LatentDecoder"],
        "publisher": ["Publisher", "PortInUseError"],
        "onnx_session": ["make_session", "decode_fn", "OnnxSessionError"],
        "runlog": ["RunLog", "read_volumes", "read_records", "RecordError"],
        "report": ["run_report", "format_reports", "ReportError"],
        "sham": ["ShamFeedback", "SourceRun", "read_allocation", "ShamError"],
        "security": ["create_keypair", "load_public_key"],
    },
)
