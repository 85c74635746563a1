"""pycalico.api: the v3 resource API (plus the Kubernetes kinds pycalico consumes).

Importing this package registers every kind, so :func:`decode` and the kind registry see
them all. Public surface: the codec (``load_documents``, ``decode``, ``decode_all``,
``encode``, ``to_yaml``, ``to_json``), the registry (``KINDS``, ``lookup``, ``resolve_kind``),
problem reporting (``Problem``, ``ValidationFailed``) and the kind classes.
"""

from __future__ import annotations

from pycalico.api.base import (
    BY_GVK,
    KINDS,
    V3,
    KindInfo,
    Model,
    ObjectMeta,
    Problem,
    Problems,
    Resource,
    ValidationFailed,
    lookup,
    register,
    resolve_kind,
)
from pycalico.api.codec import decode, decode_all, encode, load_documents, to_json, to_yaml
from pycalico.api.kinds_bfd import BFDConfiguration
from pycalico.api.kinds_bgp import BGPConfiguration, BGPFilter, BGPPeer
from pycalico.api.kinds_cluster import (
    BlockAffinity,
    CalicoNodeStatus,
    ClusterInformation,
    IPAMConfiguration,
    KubeControllersConfiguration,
)
from pycalico.api.kinds_cnp import ClusterNetworkPolicy
from pycalico.api.kinds_endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    WorkloadEndpoint,
)
from pycalico.api.kinds_felix import FelixConfiguration
from pycalico.api.kinds_ippool import IPPool, IPReservation
from pycalico.api.kinds_k8s import (
    K8sNetworkPolicy,
    Namespace,
    ServiceAccount,
    StagedKubernetesNetworkPolicy,
)
from pycalico.api.kinds_node import Node
from pycalico.api.kinds_policy import (
    GlobalNetworkPolicy,
    NetworkPolicy,
    Profile,
    StagedGlobalNetworkPolicy,
    StagedNetworkPolicy,
    Tier,
)
from pycalico.api.policy import Rule

__all__ = [
    "BY_GVK",
    "KINDS",
    "V3",
    "BFDConfiguration",
    "BGPConfiguration",
    "BGPFilter",
    "BGPPeer",
    "BlockAffinity",
    "CalicoNodeStatus",
    "ClusterInformation",
    "ClusterNetworkPolicy",
    "FelixConfiguration",
    "GlobalNetworkPolicy",
    "GlobalNetworkSet",
    "HostEndpoint",
    "IPAMConfiguration",
    "IPPool",
    "IPReservation",
    "K8sNetworkPolicy",
    "KindInfo",
    "KubeControllersConfiguration",
    "Model",
    "Namespace",
    "NetworkPolicy",
    "NetworkSet",
    "Node",
    "ObjectMeta",
    "Problem",
    "Problems",
    "Profile",
    "Resource",
    "Rule",
    "ServiceAccount",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
    "StagedNetworkPolicy",
    "Tier",
    "ValidationFailed",
    "WorkloadEndpoint",
    "decode",
    "decode_all",
    "encode",
    "load_documents",
    "lookup",
    "register",
    "resolve_kind",
    "to_json",
    "to_yaml",
]
