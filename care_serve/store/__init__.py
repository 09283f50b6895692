"""The model store: package manifests, the package writer and the store reader.

The sha256 of package files, signatures and the load-time check are in
``care_serve.store.integrity``, ``.signing`` and ``.trust``.
"""

from care_serve.store.config import STORE_FILE, ModelConfig, StoreConfig, VersionPolicy
from care_serve.store.manifest import (
    LABELS_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    BatchingConfig,
    HubSource,
    InputSpec,
    Manifest,
    ModelCard,
    Preprocessing,
)
from care_serve.store.package import (
    add_digests,
    package_path,
    read_labels,
    read_manifest,
    write_package,
)
from care_serve.store.repository import ModelRepository, PackageInfo

__all__ = [
    "LABELS_FILE",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "STORE_FILE",
    "BatchingConfig",
    "HubSource",
    "InputSpec",
    "Manifest",
    "ModelCard",
    "ModelConfig",
    "ModelRepository",
    "PackageInfo",
    "Preprocessing",
    "StoreConfig",
    "VersionPolicy",
    "add_digests",
    "package_path",
    "read_labels",
    "read_manifest",
    "write_package",
]
