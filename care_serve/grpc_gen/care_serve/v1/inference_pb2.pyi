from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Timings(_message.Message):
    __slots__ = ("decode_ms", "preprocess_ms", "queue_ms", "compute_ms", "postprocess_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    preprocess_ms: float
    queue_ms: float
    compute_ms: float
    postprocess_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "version", "image", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    image: bytes
    top_k: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "class_id", "probability")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    label: str
    class_id: int
    probability: float
    def __init__(self, label: _Optional[str] = ..., class_id: _Optional[int] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model", "version", "predictions", "timings", "batch_size", "image_width", "image_height", "uncertain")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    UNCERTAIN_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    predictions: _containers.RepeatedCompositeFieldContainer[Classification]
    timings: Timings
    batch_size: int
    image_width: int
    image_height: int
    uncertain: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., batch_size: _Optional[int] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., uncertain: _Optional[bool] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("model", "version", "image", "score_threshold", "max_detections", "return_overlay", "class_agnostic_nms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    RETURN_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    CLASS_AGNOSTIC_NMS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    image: bytes
    score_threshold: float
    max_detections: int
    return_overlay: bool
    class_agnostic_nms: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., image: _Optional[bytes] = ..., score_threshold: _Optional[float] = ..., max_detections: _Optional[int] = ..., return_overlay: _Optional[bool] = ..., class_agnostic_nms: _Optional[bool] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("label", "class_id", "score", "box")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    label: str
    class_id: int
    score: float
    box: Box
    def __init__(self, label: _Optional[str] = ..., class_id: _Optional[int] = ..., score: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("model", "version", "image_width", "image_height", "detections", "timings", "batch_size", "overlay_png")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    image_width: int
    image_height: int
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    timings: Timings
    batch_size: int
    overlay_png: bytes
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., batch_size: _Optional[int] = ..., overlay_png: _Optional[bytes] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("model", "version", "image", "return_overlay")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RETURN_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    image: bytes
    return_overlay: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., image: _Optional[bytes] = ..., return_overlay: _Optional[bool] = ...) -> None: ...

class ClassShare(_message.Message):
    __slots__ = ("label", "class_id", "share")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    label: str
    class_id: int
    share: float
    def __init__(self, label: _Optional[str] = ..., class_id: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("model", "version", "image_width", "image_height", "class_names", "mask_png", "class_shares", "overlay_png", "timings", "batch_size", "mask_width", "mask_height")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    MASK_PNG_FIELD_NUMBER: _ClassVar[int]
    CLASS_SHARES_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MASK_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MASK_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    image_width: int
    image_height: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    mask_png: bytes
    class_shares: _containers.RepeatedCompositeFieldContainer[ClassShare]
    overlay_png: bytes
    timings: Timings
    batch_size: int
    mask_width: int
    mask_height: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., mask_png: _Optional[bytes] = ..., class_shares: _Optional[_Iterable[_Union[ClassShare, _Mapping]]] = ..., overlay_png: _Optional[bytes] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., batch_size: _Optional[int] = ..., mask_width: _Optional[int] = ..., mask_height: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "version", "image", "normalize")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    image: bytes
    normalize: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., image: _Optional[bytes] = ..., normalize: _Optional[bool] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "version", "embedding", "dim", "normalized", "timings", "batch_size", "image_width", "image_height")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    embedding: _containers.RepeatedScalarFieldContainer[float]
    dim: int
    normalized: bool
    timings: Timings
    batch_size: int
    image_width: int
    image_height: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., embedding: _Optional[_Iterable[float]] = ..., dim: _Optional[int] = ..., normalized: _Optional[bool] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., batch_size: _Optional[int] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionPolicy(_message.Message):
    __slots__ = ("latest", "specific", "all")
    class Versions(_message.Message):
        __slots__ = ("versions",)
        VERSIONS_FIELD_NUMBER: _ClassVar[int]
        versions: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, versions: _Optional[_Iterable[int]] = ...) -> None: ...
    LATEST_FIELD_NUMBER: _ClassVar[int]
    SPECIFIC_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    latest: int
    specific: VersionPolicy.Versions
    all: bool
    def __init__(self, latest: _Optional[int] = ..., specific: _Optional[_Union[VersionPolicy.Versions, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "is_default", "in_policy", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    IN_POLICY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    is_default: bool
    in_policy: bool
    error: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., is_default: _Optional[bool] = ..., in_policy: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "state", "loaded_version", "versions", "task", "architecture", "format", "input_height", "input_width", "num_classes", "backend", "error", "description", "loaded_versions", "default_for", "version_policy", "version_status", "error_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    loaded_version: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    task: str
    architecture: str
    format: str
    input_height: int
    input_width: int
    num_classes: int
    backend: str
    error: str
    description: str
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    default_for: _containers.RepeatedScalarFieldContainer[str]
    version_policy: VersionPolicy
    version_status: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    error_version: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., loaded_version: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., task: _Optional[str] = ..., architecture: _Optional[str] = ..., format: _Optional[str] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., num_classes: _Optional[int] = ..., backend: _Optional[str] = ..., error: _Optional[str] = ..., description: _Optional[str] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., default_for: _Optional[_Iterable[str]] = ..., version_policy: _Optional[_Union[VersionPolicy, _Mapping]] = ..., version_status: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., error_version: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "defaults")
    class DefaultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    defaults: _containers.ScalarMap[str, str]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., defaults: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RunPipelineRequest(_message.Message):
    __slots__ = ("pipeline", "image")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    image: bytes
    def __init__(self, pipeline: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class CropPrediction(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class CropClassification(_message.Message):
    __slots__ = ("model", "version", "predictions", "uncertain")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAIN_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    predictions: _containers.RepeatedCompositeFieldContainer[CropPrediction]
    uncertain: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[CropPrediction, _Mapping]]] = ..., uncertain: _Optional[bool] = ...) -> None: ...

class PipelineDetection(_message.Message):
    __slots__ = ("label", "score", "box", "classification")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    box: Box
    classification: CropClassification
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., classification: _Optional[_Union[CropClassification, _Mapping]] = ...) -> None: ...

class RunPipelineResponse(_message.Message):
    __slots__ = ("pipeline", "image_width", "image_height", "detections", "timings_ms")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    image_width: int
    image_height: int
    detections: _containers.RepeatedCompositeFieldContainer[PipelineDetection]
    timings_ms: _containers.ScalarMap[str, float]
    def __init__(self, pipeline: _Optional[str] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., detections: _Optional[_Iterable[_Union[PipelineDetection, _Mapping]]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ListPipelinesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PipelineStep(_message.Message):
    __slots__ = ("name", "model", "task", "serving")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    task: str
    serving: bool
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., task: _Optional[str] = ..., serving: _Optional[bool] = ...) -> None: ...

class PipelineInfo(_message.Message):
    __slots__ = ("name", "description", "ready", "steps", "problem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    ready: bool
    steps: _containers.RepeatedCompositeFieldContainer[PipelineStep]
    problem: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., ready: _Optional[bool] = ..., steps: _Optional[_Iterable[_Union[PipelineStep, _Mapping]]] = ..., problem: _Optional[str] = ...) -> None: ...

class ListPipelinesResponse(_message.Message):
    __slots__ = ("pipelines",)
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    pipelines: _containers.RepeatedCompositeFieldContainer[PipelineInfo]
    def __init__(self, pipelines: _Optional[_Iterable[_Union[PipelineInfo, _Mapping]]] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStreamRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class AddStreamRequest(_message.Message):
    __slots__ = ("spec_json",)
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    def __init__(self, spec_json: _Optional[str] = ...) -> None: ...

class RemoveStreamRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchStreamRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StreamSink(_message.Message):
    __slots__ = ("type", "url", "connected", "delivered", "failed", "last_error")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    type: str
    url: str
    connected: bool
    delivered: int
    failed: int
    last_error: str
    def __init__(self, type: _Optional[str] = ..., url: _Optional[str] = ..., connected: _Optional[bool] = ..., delivered: _Optional[int] = ..., failed: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("name", "source", "pipeline", "model", "state", "error", "max_fps", "fps_in", "fps_out", "frames_decoded", "frames_processed", "frames_dropped", "frames_skipped", "frames_failed", "lag_ms", "reconnects", "width", "height", "sinks", "spec_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_FPS_FIELD_NUMBER: _ClassVar[int]
    FPS_IN_FIELD_NUMBER: _ClassVar[int]
    FPS_OUT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DECODED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FAILED_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    pipeline: str
    model: str
    state: str
    error: str
    max_fps: float
    fps_in: float
    fps_out: float
    frames_decoded: int
    frames_processed: int
    frames_dropped: int
    frames_skipped: int
    frames_failed: int
    lag_ms: float
    reconnects: int
    width: int
    height: int
    sinks: _containers.RepeatedCompositeFieldContainer[StreamSink]
    spec_json: str
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., pipeline: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., max_fps: _Optional[float] = ..., fps_in: _Optional[float] = ..., fps_out: _Optional[float] = ..., frames_decoded: _Optional[int] = ..., frames_processed: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., frames_skipped: _Optional[int] = ..., frames_failed: _Optional[int] = ..., lag_ms: _Optional[float] = ..., reconnects: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., sinks: _Optional[_Iterable[_Union[StreamSink, _Mapping]]] = ..., spec_json: _Optional[str] = ...) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("stream", "frame", "source_time", "captured_at", "latency_ms", "result_json")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TIME_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    stream: str
    frame: int
    source_time: float
    captured_at: float
    latency_ms: float
    result_json: str
    def __init__(self, stream: _Optional[str] = ..., frame: _Optional[int] = ..., source_time: _Optional[float] = ..., captured_at: _Optional[float] = ..., latency_ms: _Optional[float] = ..., result_json: _Optional[str] = ...) -> None: ...
