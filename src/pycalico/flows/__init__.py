"""pycalico.flows: flow logs with policy attribution (docs/flowlogs.md).

Module order (no cycles): ``record`` <- ``aggregate`` <- ``store`` <- ``api`` <-
``collector``; ``format`` <- ``cli`` (the options and print loop calicoctl and calico-lab
share); ``whatif`` (``calicoctl policy diff``) over ``record`` and the policy model;
``metrics`` stands alone. Attribution prefixes are rendered by
:mod:`pycalico.felix.rules.nflog`; the netlink readers live in
:mod:`pycalico.system.nfnetlink` and :mod:`pycalico.system.ctnetlink`.

Public API: :class:`~pycalico.flows.collector.FlowCollector` (calico-node's ``flows``
component), :class:`~pycalico.flows.record.FlowRecord` (the documented JSON record),
:class:`~pycalico.flows.aggregate.PendingEvaluator` (the staged-policy hook),
:class:`~pycalico.flows.store.FlowFilter`, :func:`~pycalico.flows.api.fetch_flows`.
"""
