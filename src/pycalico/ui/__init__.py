"""The pycalico web console (``calicoctl ui``, ``calico-lab ui``): a program.

Pages: Cluster (nodes, BGP graph, pools and blocks, pods), Reachability (the policy matrix
as a heat map, explain per cell, live matrix in a lab), Policy (tiers and policies in
evaluation order, what-if) and Flows (live flow records, when flow logs are available).
:mod:`.app` is the ASGI application, :mod:`.views`/:mod:`.flows` the pure view models,
:mod:`.sources` the live inputs, :mod:`.cli` the command. See ``docs/console.md``.
"""
