"""The live service: ``serve``'s configuration and start-up, the per-volume pipeline, trials, neurofeedback, the
ONNX decoder, the ZeroMQ publisher, CurveZMQ authentication and the run records.
"""

from service.live.config import ServeConfig
from service.live.decoder import LatentDecoder
from service.live.feedback import Feedback
from service.live.history import VolumeHistory
from service.live.npy import AppendNpy
from service.live.onnx_session import OnnxSessionError, decode_fn, encode_fn, make_session, to_uint8_hwc, warm_up
from service.live.pipeline import Pipeline, StagedVolume
from service.live.policy import VolumeError, raise_errors
from service.live.publisher import PortInUseError, Publisher, check_bindable
from service.live.runlog import EVENT_FIELDS, TRIAL_COLUMNS, ResumeState, RunLog, read_volumes
from service.live.security import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    Authenticator,
    client_keys,
    create_keypair,
    load_allowed_keys,
    load_public_key,
    load_secret_keypair,
    server_keys,
)
from service.live.serve import Service
from service.live.startup import (
    StartupError,
    check_bundle_estimator,
    choose_run_id,
    config_record,
    default_run_id,
    limit_blas,
    read_target_image,
    setup_logging,
    startup_checks,
    versions,
)
from service.live.trials import TrialBook, read_events_tsv

__all__ = [
    "ServeConfig",
    "LatentDecoder",
    "Feedback",
    "VolumeHistory",
    "AppendNpy",
    "OnnxSessionError",
    "make_session",
    "decode_fn",
    "encode_fn",
    "warm_up",
    "to_uint8_hwc",
    "Pipeline",
    "StagedVolume",
    "VolumeError",
    "raise_errors",
    "Publisher",
    "PortInUseError",
    "check_bindable",
    "RunLog",
    "ResumeState",
    "TRIAL_COLUMNS",
    "EVENT_FIELDS",
    "read_volumes",
    "Authenticator",
    "create_keypair",
    "load_public_key",
    "load_secret_keypair",
    "load_allowed_keys",
    "server_keys",
    "client_keys",
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
    "Service",
    "StartupError",
    "default_run_id",
    "choose_run_id",
    "setup_logging",
    "startup_checks",
    "check_bundle_estimator",
    "read_target_image",
    "limit_blas",
    "versions",
    "config_record",
    "TrialBook",
    "read_events_tsv",
]
