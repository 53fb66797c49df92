"""A Ray cluster for vLLM's Ray executor, driven from the kernel: connect, check that the cluster can hold the
engine's ranks, reserve them in one placement group that vLLM's executor then runs in, and release it with the
engine.

vLLM makes such a group itself when it is given none, but it waits up to 30 minutes for room that may never
come, and nothing removes the group when the engine goes. swiftnb makes it in vLLM's shape instead
(one bundle of one device per rank, packed, the first on this machine), waits a bounded time, and removes it on
shutdown, on replace and on a failed start. vLLM's engine process joins the same cluster through RAY_ADDRESS.
With vLLM's mp executor (ray_address with distributed_executor_backend='mp') the group holds the devices of ranks
that run on this machine, so that the cluster schedules nothing else onto them.
"""
import contextlib
import logging
import os
import socket
from typing import Optional

from swiftnb import logs
from swiftnb.errors import EngineStartError, UsageError

PLACE_TIMEOUT_S = 60.0  # how long a start waits for the cluster to free room for every rank
_joined = {'address': None}  # the address this process joined by ('127.0.0.1:6379'; Ray names its own IP)


def device_key() -> str:
    """The Ray resource one rank takes on this vLLM's platform ('GPU' on CUDA); '' where vLLM's Ray executor
    does not run."""
    from vllm.platforms import current_platform
    return current_platform.ray_device_key


def _host_port(address: str) -> Optional[tuple[str, int]]:
    """('127.0.0.1', 6379) for '127.0.0.1:6379' or 'ray://127.0.0.1:10001'; None for 'auto'."""
    host, _, port = address.removeprefix('ray://').rpartition(':')
    return (host.strip('[]'), int(port)) if host and port.isdigit() else None


def connect(address: Optional[str]) -> str:
    """Connect this process to the Ray cluster at `address` and return the address vLLM's engine process should
    join. None: RAY_ADDRESS, else the cluster `ray start` last started on this machine, else a new local one
    (Ray's own order); 'auto': an existing one only; 'host:port' or 'ray://host:10001'."""
    import ray
    address = address or os.environ.get('RAY_ADDRESS') or None
    target = _host_port(address) if address else None
    if target is not None:  # Ray itself retries an address where nothing answers for minutes
        try:
            socket.create_connection(target, timeout=5).close()
        except OSError as error:
            raise UsageError(f'nothing answers at the Ray address {address} ({error.strerror or error}); start the '
                             'head there (ray start --head) or pass ray_address=None for a local cluster') from None
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address in (None, 'auto', current, _joined['address']):
            return current
        ray.shutdown()  # connected elsewhere: the engine goes where it was asked
    try:
        with logs.quiet_fds():
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as error:  # 'auto' with no cluster running, a refused token, ...
        raise UsageError(f'cannot join the Ray cluster at {address}: {str(error).splitlines()[0]}') from None
    _joined['address'] = address
    return address if address and address.startswith('ray://') else ray.get_runtime_context().gcs_address


def nodes() -> list[dict]:
    """The cluster's alive nodes: [{'id', 'ip', 'resources'}]."""
    import ray
    return [{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], 'resources': n['Resources']}
            for n in ray.nodes() if n['Alive']]


def describe() -> str:
    """'2 nodes: 192.0.2.2 (1 GPU), 192.0.2.3 (1 GPU)': what the cluster has, for errors."""
    alive = nodes()

    def devices(node: dict) -> str:
        return ', '.join(f'{node["resources"][name]:g} {name}' for name in ('GPU', 'CPU') if name in node['resources'])
    return f'{len(alive)} node{"s" * (len(alive) != 1)}: ' + ', '.join(f'{n["ip"]} ({devices(n)})' for n in alive)


def check_room(ranks: int, device: str) -> None:
    """A clear error, before anything is reserved, when the whole cluster has fewer `device`s than ranks."""
    import ray
    have = ray.cluster_resources().get(device, 0)
    if have < ranks:
        raise UsageError(f'the Ray cluster has {have:g} {device} in all ({describe()}); the engine needs {ranks} '
                         '(tensor_parallel_size x pipeline_parallel_size): add nodes or lower the sizes')


class Reservation:
    """One placement group holding a `device` for each of `ranks` ranks: in vLLM's shape (packed, the first rank on
    this machine), or with `here_only` all on this machine (ranks that vLLM's mp executor runs here)."""

    def __init__(self, ranks: int, device: str, timeout: float = PLACE_TIMEOUT_S, here_only: bool = False):
        import ray
        from ray.util.placement_group import placement_group
        from vllm.utils.network_utils import get_ip
        here = {f'node:{get_ip()}': 0.001}
        bundles = [{device: 1.0, **(here if here_only or rank == 0 else {})} for rank in range(ranks)]
        self.group = placement_group(bundles, strategy='STRICT_PACK' if here_only else 'PACK')
        ready, _ = ray.wait([self.group.ready()], timeout=timeout)
        if not ready:
            self.release()
            where = ' on this machine' if here_only else ''
            raise EngineStartError(f'the Ray cluster found no room{where} for {ranks} ranks with one {device} each '
                                   f'within {timeout:g} s ({describe()}); `ray status` shows what holds them: free '
                                   'them, or add a node')

    def node_ids(self) -> set[str]:
        """The nodes the ranks were placed on."""
        from ray.util.placement_group import placement_group_table
        return set(placement_group_table(self.group)['bundles_to_node_id'].values())

    def release(self) -> None:
        """Remove the group (its ranks' devices are free again); quiet if the cluster is gone already."""
        from ray.util.placement_group import remove_placement_group
        with contextlib.suppress(Exception):
            remove_placement_group(self.group)
