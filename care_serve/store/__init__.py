"""The model store: package manifests, the package writer and the store reader."""

from care_serve.store.config import STORE_FILE, ModelConfig, StoreConfig, VersionPolicy
from care_serve.store.manifest import (
    LABELS_FILE,
    MANIFEST_FILE,
    BatchingConfig,
    InputSpec,
    Manifest,
    ModelCard,
    Preprocessing,
)
from care_serve.store.package import package_path, read_labels, read_manifest, write_package
from care_serve.store.repository import ModelRepository, PackageInfo

__all__ = [
    "LABELS_FILE",
    "MANIFEST_FILE",
    "STORE_FILE",
    "BatchingConfig",
    "InputSpec",
    "Manifest",
    "ModelCard",
    "ModelConfig",
    "ModelRepository",
    "PackageInfo",
    "Preprocessing",
    "StoreConfig",
    "VersionPolicy",
    "package_path",
    "read_labels",
    "read_manifest",
    "write_package",
]
