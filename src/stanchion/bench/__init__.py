"""Load benchmarks, one module each; import what you need from them::

    from stanchion.bench.loadgen import LoadConfig, run_load        # the load generator
    from stanchion.bench.upstream import UpstreamServer             # a fake upstream built for load
    from stanchion.bench.gateway import run_gateway_bench           # what the gateway adds

Nothing is imported here, so ``python -m stanchion.bench.upstream`` runs that module only once.
"""
