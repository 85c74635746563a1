"""pycalico.cni: the CNI plugins ``calico`` and ``calico-ipam`` (CNI 0.3.0 - 1.1.0).

Deliberately imports nothing: the exec'd plugin's start-up time depends on it. Modules:

- :mod:`~pycalico.cni.main`: exec entry points ``calico_main`` / ``ipam_main`` (forward to the
  node's cni-server when there is one, else run in-process).
- :mod:`~pycalico.cni.runner`: ``run(plugin, environ, stdin, deps) -> (exit status, stdout)``.
- :mod:`~pycalico.cni.types`: env/netconf parsing and validation, result rendering.
- :mod:`~pycalico.cni.errors`: :class:`CniError` and the spec's error codes.
- :mod:`~pycalico.cni.plugin` / :mod:`~pycalico.cni.ipam_plugin`: the commands.
- :mod:`~pycalico.cni.workload`: names (veth, WorkloadEndpoint, handle) and the WEP dict.
- :mod:`~pycalico.cni.dataplane`: veth/addresses/routes/sysctls (Linux + fake).
- :mod:`~pycalico.cni.context`: injected dependencies (:class:`Deps`) and the invocation.
- :mod:`~pycalico.cni.delegate`: exec another plugin from ``CNI_PATH``.
- :mod:`~pycalico.cni.server` / :mod:`~pycalico.cni.client` / ``shim.c``: the fast path.
"""
