"""AdapterGate: requests of different adapters never overlap; same-adapter requests do."""
import asyncio

from swiftnb.engine.adapter_gate import AdapterGate


def run_requests(keys, gap=0.001, work=0.02):
    gate = AdapterGate()
    active, log = [], []

    async def request(i, key):
        await asyncio.sleep(i * gap)  # staggered arrivals, as in a server
        async with gate.hold(key):
            active.append(key)
            log.append(set(active))
            await asyncio.sleep(work)
            active.remove(key)
        return i

    async def main():
        return await asyncio.gather(*(request(i, k) for i, k in enumerate(keys)))
    done = asyncio.run(main())
    return done, log


def test_different_adapters_never_run_together():
    done, log = run_requests([None, 'a', None, 'b', 'a', None, 'b'])
    assert sorted(done) == list(range(7))
    assert all(len(keys) == 1 for keys in log), log


def test_same_adapter_requests_share_the_engine():
    gate = AdapterGate()
    active, peak = [0], [0]

    async def request():
        async with gate.hold('a'):
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            await asyncio.sleep(0.02)
            active[0] -= 1

    async def main():
        await asyncio.gather(*(request() for _ in range(5)))
    asyncio.run(main())
    assert peak[0] == 5


def test_cancelled_waiter_does_not_block_others():
    gate = AdapterGate()

    async def main():
        order = []

        async def hold(key, seconds):
            async with gate.hold(key):
                order.append(key)
                await asyncio.sleep(seconds)

        first = asyncio.ensure_future(hold('a', 0.05))
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(hold('b', 0))
        await asyncio.sleep(0.01)
        waiter.cancel()
        third = asyncio.ensure_future(hold('c', 0))
        await asyncio.wait_for(asyncio.gather(first, third), 1)
        return order
    assert asyncio.run(main()) == ['a', 'c']
